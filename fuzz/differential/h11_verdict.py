#!/usr/bin/env python3
"""What h11 (a strict HTTP/1.1 implementation, pip install h11) makes of requests, for the
differential test (fuzz/tests/differential.rs). One request per input line, in hex; one JSON
object per output line:
  {"v": "ok", "method", "target", "version", "headers": [[name, value_hex]...],
   "framing": ["chunked"] | ["length", n], "body": hex, "body_end": "end"|"incomplete"|"error"}
  {"v": "reject", "status": n, "why": text}
  {"v": "incomplete"}
"""
import json
import sys

import h11
from h11._connection import _body_framing


def verdict(data):
    c = h11.Connection(h11.SERVER)
    # No EOF after it: an unfinished head or body is NEED_DATA ("incomplete"), as it is
    # for myriad, not an error.
    c.receive_data(data)
    try:
        ev = c.next_event()
    except h11.RemoteProtocolError as e:
        return {"v": "reject", "status": e.error_status_hint, "why": str(e)}
    if ev is h11.NEED_DATA or isinstance(ev, h11.ConnectionClosed):
        return {"v": "incomplete"}
    if not isinstance(ev, h11.Request):
        return {"v": "reject", "status": 400, "why": "event %r" % (ev,)}
    kind, args = _body_framing(ev.method, ev)
    framing = ["chunked"] if kind == "chunked" else ["length", args[0]]
    body = b""
    end = "incomplete"
    while True:
        try:
            b = c.next_event()
        except h11.RemoteProtocolError:
            end = "error"
            break
        if isinstance(b, h11.Data):
            body += bytes(b.data)
        elif isinstance(b, h11.EndOfMessage):
            end = "end"
            break
        else:
            break
    return {
        "v": "ok",
        "method": ev.method.decode("latin-1"),
        "target": ev.target.decode("latin-1"),
        "version": ev.http_version.decode("latin-1"),
        "headers": [[n.decode("latin-1"), bytes(v).hex()] for n, v in ev.headers.raw_items()],
        "framing": framing,
        "body": body.hex(),
        "body_end": end,
    }


def main():
    out = sys.stdout
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            r = verdict(bytes.fromhex(line))
        except Exception as e:  # noqa: BLE001 - any h11 failure is a verdict to report
            r = {"v": "reject", "status": 0, "why": "h11 raised %s: %s" % (type(e).__name__, e)}
        out.write(json.dumps(r) + "\n")
    out.flush()


if __name__ == "__main__":
    main()
