#!/usr/bin/env python3
"""myriad's own loop counters per request, from the demo's GET /stats (myriad_stats_t as JSON).

  counters.py delta BEFORE.json AFTER.json REQUESTS   -> one line of per-request figures
  counters.py table < rows                            -> a markdown table of their medians

`delta` prints `f1|f2|...` (FIELDS, each (after - before) / requests); the AFTER snapshot's
own connection is not counted in `accepted`. `table` reads lines `scenario|server|f1|f2|...`
(one per round) and prints one row per scenario and server with each field's median.
"""
import json
import statistics
import sys

FIELDS = ["iterations", "wait", "ctl", "read", "received", "write", "accept", "other", "accepted"]


def delta(before, after, requests):
    with open(before) as f:
        a = json.load(f)
    with open(after) as f:
        b = json.load(f)
    n = max(int(requests), 1)
    d = {k: b[k] - a[k] for k in FIELDS}
    d["accepted"] = max(d["accepted"] - 1, 0)  # the connection that fetched AFTER
    print("|".join("%.3f" % (d[k] / n) for k in FIELDS))


def table():
    groups = {}
    for line in sys.stdin:
        parts = line.rstrip("\n").split("|")
        if len(parts) != 2 + len(FIELDS):
            continue
        groups.setdefault((parts[0], parts[1]), []).append([float(v) for v in parts[2:]])
    print("| scenario | server | " + " | ".join(FIELDS) + " |")
    print("|---|---|" + "---:|" * len(FIELDS))
    for (scen, name), rows in groups.items():
        med = [statistics.median(col) for col in zip(*rows)]
        print(f"| {scen} | {name} | " + " | ".join("%.3f" % v for v in med) + " |")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "delta":
        delta(*sys.argv[2:])
    elif len(sys.argv) == 2 and sys.argv[1] == "table":
        table()
    else:
        sys.exit(__doc__)
