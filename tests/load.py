#!/usr/bin/env python3
"""A load client that behaves like curl or a browser, for the supervisor tests.

Keep-alive connections, each used by one thread in turn; a request that finds its idle
keep-alive connection closed before any byte of the response is retried once on a new
connection (RFC 9112 section 9.3.1), as clients do; everything else that does not end in
a whole 200 response counts as a failure. Prints one JSON object:
{"ok": N, "failed": N, "retried": N, "refused": N, "statuses": {...}, "bodies": {...},
 "errors": [first few], "conns": N}
`bodies` counts the distinct response bodies (e.g. the pids of /pid), at most 64.

usage: load.py --addr HOST:PORT [--path /pid] [--conns 8] [--duration 2 | --requests N]
               [--timeout 10] [--new-conn-every K]
"""
import argparse
import json
import socket
import sys
import threading
import time


class Closed(Exception):
    """The connection ended before any byte of the response."""


def read_response(sock, buf):
    """Reads one response: (status, headers dict, body, rest of buf). Raises Closed when the
    connection ends before any byte, OSError/ValueError on a cut or malformed response."""
    got_any = bool(buf)
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            if not got_any:
                raise Closed()
            raise ValueError("connection closed inside the response head")
        got_any = True
        buf += chunk
    head, buf = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    status = int(parts[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    if "content-length" in headers:
        n = int(headers["content-length"])
        while len(buf) < n:
            chunk = sock.recv(65536)
            if not chunk:
                raise ValueError("connection closed inside the body")
            buf += chunk
        body, buf = buf[:n], buf[n:]
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while True:
            while b"\r\n" not in buf:
                chunk = sock.recv(65536)
                if not chunk:
                    raise ValueError("connection closed inside a chunk size")
                buf += chunk
            size_line, buf = buf.split(b"\r\n", 1)
            size = int(size_line.split(b";")[0], 16)
            while len(buf) < size + 2:
                chunk = sock.recv(65536)
                if not chunk:
                    raise ValueError("connection closed inside a chunk")
                buf += chunk
            body += buf[:size]
            buf = buf[size + 2:]
            if size == 0:
                break
    else:
        body = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
        headers["connection"] = "close"
    return status, headers, body, buf


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.ok = self.failed = self.retried = self.refused = self.conns = 0
        self.statuses = {}
        self.bodies = {}
        self.errors = []

    def error(self, what):
        with self.lock:
            self.failed += 1
            if len(self.errors) < 10:
                self.errors.append("%.3f %s" % (time.time(), what))


def worker(args, host, port, deadline, counter, stats):
    sock = None
    buf = b""
    used = 0
    while True:
        if time.time() >= deadline:
            break
        if args.requests:
            with stats.lock:
                if counter[0] >= args.requests:
                    break
                counter[0] += 1
        req = ("GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: myriad-load\r\n\r\n"
               % (args.path, host)).encode()
        for attempt in (0, 1):
            fresh = sock is None
            try:
                if sock is None:
                    try:
                        sock = socket.create_connection((host, port), timeout=args.timeout)
                    except ConnectionRefusedError:
                        with stats.lock:
                            stats.refused += 1
                        stats.error("connection refused")
                        time.sleep(0.01)
                        break
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    buf = b""
                    used = 0
                    with stats.lock:
                        stats.conns += 1
                sock.sendall(req)
                status, headers, body, buf = read_response(sock, buf)
                used += 1
                with stats.lock:
                    stats.statuses[status] = stats.statuses.get(status, 0) + 1
                    key = body[:40].decode("latin-1")
                    if key in stats.bodies or len(stats.bodies) < 64:
                        stats.bodies[key] = stats.bodies.get(key, 0) + 1
                    if status == 200:
                        stats.ok += 1
                if status != 200:
                    stats.error("status %d" % status)
                if headers.get("connection", "").lower() == "close" or (
                        args.new_conn_every and used >= args.new_conn_every):
                    sock.close()
                    sock = None
                break
            except (Closed, ConnectionResetError, BrokenPipeError) as e:
                if sock is not None:
                    sock.close()
                sock = None
                # Only a reused connection closed before any response byte may be retried.
                if attempt == 0 and not fresh and (isinstance(e, Closed) or not buf):
                    with stats.lock:
                        stats.retried += 1
                    continue
                stats.error("%s on a %s connection" % (type(e).__name__, "new" if fresh else "reused"))
                break
            except (OSError, ValueError) as e:
                if sock is not None:
                    sock.close()
                sock = None
                stats.error("%s: %s" % (type(e).__name__, e))
                break
    if sock is not None:
        sock.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--addr", required=True)
    ap.add_argument("--path", default="/")
    ap.add_argument("--conns", type=int, default=8)
    ap.add_argument("--duration", type=float, default=2.0)
    ap.add_argument("--requests", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=10.0)
    ap.add_argument("--new-conn-every", type=int, default=0)
    args = ap.parse_args()
    host, _, port = args.addr.rpartition(":")
    host = host.strip("[]")
    # A bound on the time in every mode.
    deadline = time.time() + (args.duration if not args.requests else max(args.duration, 60))
    stats = Stats()
    counter = [0]
    threads = [threading.Thread(target=worker, args=(args, host, int(port), deadline, counter, stats))
               for _ in range(args.conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    json.dump({"ok": stats.ok, "failed": stats.failed, "retried": stats.retried,
               "refused": stats.refused, "conns": stats.conns,
               "statuses": {str(k): v for k, v in stats.statuses.items()},
               "bodies": stats.bodies, "errors": stats.errors}, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
