#!/usr/bin/env python3
"""The scale-out tests' load client: keep-alive HTTP/1.1 connections to a front end
(nginx, HAProxy), bounded in time and in requests, counting every request that does not
end in a whole 200 response as a failure (no client-side retry: the front end's retries
are what is tested). Stops at --duration seconds, at --requests, or when --stop-file
appears. Prints one JSON object:
  {"requests": N, "ok": N, "failures": N, "statuses": {...}, "bodies": {...}, "errors": [...]}
`bodies` counts the distinct response bodies (at most 64), e.g. the pids of GET /pid.

usage: load.py --addr HOST:PORT [--path /] [--conns 8] [--duration 5] [--requests N]
               [--stop-file PATH] [--timeout 10]
"""
import argparse
import json
import os
import socket
import threading
import time


def read_response(sock, buf):
    """One response: (status, close?, body, rest). Raises on EOF or a malformed one."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before a whole response head")
        buf += chunk
    head, buf = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    hdrs = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        hdrs[k.strip().lower()] = v.strip().lower()
    body = b""
    if "content-length" in hdrs:
        n = int(hdrs["content-length"])
        while len(buf) < n:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed inside the body")
            buf += chunk
        body, buf = buf[:n], buf[n:]
    elif hdrs.get("transfer-encoding") == "chunked":
        while True:
            while b"\r\n" not in buf:
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError("closed inside a chunk size")
                buf += chunk
            line, buf = buf.split(b"\r\n", 1)
            size = int(line.split(b";")[0], 16)
            while len(buf) < size + 2:
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError("closed inside a chunk")
                buf += chunk
            body += buf[:size]
            buf = buf[size + 2:]
            if size == 0:
                break
    else:
        raise ValueError("response without a length")
    return status, hdrs.get("connection") == "close", body, buf


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--addr", required=True)
    ap.add_argument("--path", default="/")
    ap.add_argument("--conns", type=int, default=8)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--requests", type=int, default=0)
    ap.add_argument("--stop-file")
    ap.add_argument("--timeout", type=float, default=10.0)
    args = ap.parse_args()
    host, port = args.addr.rsplit(":", 1)
    port = int(port)
    deadline = time.time() + args.duration
    lock = threading.Lock()
    st = {"requests": 0, "ok": 0, "failures": 0, "statuses": {}, "bodies": {}, "errors": []}
    req = ("GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: myriad-scaleout\r\n\r\n"
           % (args.path, args.addr)).encode()

    def done():
        if time.time() >= deadline:
            return True
        if args.stop_file and os.path.exists(args.stop_file):
            return True
        return bool(args.requests) and st["requests"] >= args.requests

    def fail(what):
        st["failures"] += 1
        if len(st["errors"]) < 10:
            st["errors"].append("%.3f %s" % (time.time(), what))

    def worker():
        sock, buf = None, b""
        while True:
            with lock:
                if done():
                    break
                st["requests"] += 1
            try:
                if sock is None:
                    sock = socket.create_connection((host, port), timeout=args.timeout)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    buf = b""
                sock.sendall(req)
                status, close, body, buf = read_response(sock, buf)
                with lock:
                    s = str(status)
                    st["statuses"][s] = st["statuses"].get(s, 0) + 1
                    key = body[:40].decode("latin-1").strip()
                    if key in st["bodies"] or len(st["bodies"]) < 64:
                        st["bodies"][key] = st["bodies"].get(key, 0) + 1
                    if status == 200:
                        st["ok"] += 1
                    else:
                        fail("status %d" % status)
                if close:
                    sock.close()
                    sock = None
            except (OSError, ValueError) as e:
                with lock:
                    fail("%s: %s" % (type(e).__name__, e))
                if sock is not None:
                    sock.close()
                sock = None
                time.sleep(0.01)
        if sock is not None:
            sock.close()

    threads = [threading.Thread(target=worker) for _ in range(args.conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps(st))


if __name__ == "__main__":
    main()
