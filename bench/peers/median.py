#!/usr/bin/env python3
"""Collapses bench rows measured over several rounds into one row per scenario and server.

Reads lines `scenario|server|req/s|p50|p99|cpu|errors` on stdin (cpu may be `X (nginx Y)` for
the FastCGI rows; p50/p99 may be `-`), writes the same format with each figure replaced by its
median over the rounds, in the order the rows first appeared. Errors of every round are kept.
With a file argument, also writes there a markdown table of each row's CPU per round.
"""
import re
import statistics
import sys


def median(values, fmt):
    nums = []
    for v in values:
        try:
            nums.append(float(v))
        except ValueError:
            pass
    return fmt % statistics.median(nums) if nums else (values[0] if values else "")


def main():
    groups = {}
    for line in sys.stdin:
        line = line.rstrip("\n")
        if not line:
            continue
        parts = line.split("|")
        parts += [""] * (7 - len(parts))
        groups.setdefault((parts[0], parts[1]), []).append(parts[2:7])
    spread = open(sys.argv[1], "w") if len(sys.argv) > 1 else None
    if spread:
        spread.write("| scenario | server | CPU µs/req in each round |\n|---|---|---|\n")
    for (scen, name), rows in groups.items():
        rps = median([r[0] for r in rows], "%.2f")
        p50 = median([r[1] for r in rows], "%.0f")
        p99 = median([r[2] for r in rows], "%.0f")
        cpus = [r[3] for r in rows]
        pair = [re.match(r"^\s*([\d.]+) \(nginx ([\d.]+)\)", c) for c in cpus]
        if all(pair):
            cpu = "%s (nginx %s)" % (
                median([m.group(1) for m in pair], "%.2f"),
                median([m.group(2) for m in pair], "%.2f"),
            )
        else:
            cpu = median(cpus, "%.2f")
        errs = " ".join(dict.fromkeys(r[4].strip() for r in rows if r[4].strip()))
        if spread:
            spread.write(f"| {scen} | {name} | {', '.join(c.split(' ')[0] for c in cpus)} |\n")
        print("|".join([scen, name, rps, p50, p99, cpu, errs]))


if __name__ == "__main__":
    main()
