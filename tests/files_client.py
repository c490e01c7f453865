#!/usr/bin/env python3
"""Raw-socket checks of the demos' /static/ route (tests/files_e2e.sh): prints one line.

  files_client.py raw ADDR TARGET            GET TARGET sent byte for byte (Python escapes
                                             such as \\x5c are decoded first): the status
  files_client.py pipeline ADDR ROOT         a pipelined mix of file and generated responses
                                             in one write, read in order: "N in order"
  files_client.py slow ADDR PID ROOT NAME    downloads ROOT/NAME reading slowly; the demo's
                                             (PID) RSS growth and CPU time meanwhile:
                                             "bounded" or what went wrong
  files_client.py leave ADDR PATH            ten clients that reset mid-file, then GET /:
                                             "still serving"
Every socket has a 20 s timeout.
"""
import codecs
import hashlib
import socket
import sys
import time


def connect(addr):
    host, port = addr.rsplit(":", 1)
    s = socket.create_connection((host.strip("[]"), int(port)), timeout=20)
    return s


class Reader:
    def __init__(self, s):
        self.s, self.buf = s, b""

    def fill(self):
        b = self.s.recv(1 << 16)
        if not b:
            raise EOFError("closed")
        self.buf += b

    def head(self):
        while b"\r\n\r\n" not in self.buf:
            self.fill()
        h, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = h.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        hdrs = {}
        for line in lines[1:]:
            k, v = line.split(":", 1)
            hdrs[k.strip().lower()] = v.strip()
        return status, hdrs

    def body(self, n):
        while len(self.buf) < n:
            self.fill()
        b, self.buf = self.buf[:n], self.buf[n:]
        return b

    def response(self, head_only=False):
        status, hdrs = self.head()
        if head_only or status in (204, 304):
            return status, hdrs, b""
        if "content-length" in hdrs:
            return status, hdrs, self.body(int(hdrs["content-length"]))
        assert hdrs.get("transfer-encoding") == "chunked", hdrs
        out = b""
        while True:
            while b"\r\n" not in self.buf:
                self.fill()
            line, self.buf = self.buf.split(b"\r\n", 1)
            n = int(line, 16)
            out += self.body(n)
            self.body(2)
            if n == 0:
                return status, hdrs, out


def raw(addr, target):
    t = codecs.decode(target, "unicode_escape").encode("latin-1")
    s = connect(addr)
    s.sendall(b"GET " + t + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    r = Reader(s)
    try:
        status, _ = r.head()
    except (EOFError, ConnectionResetError):
        print("closed")
        return
    print(status)


def pipeline(addr, root):
    def f(name):
        with open(f"{root}/{name}", "rb") as fh:
            return fh.read()

    reqs = [
        ("GET", "/static/k64.bin", "", f("k64.bin")),
        ("GET", "/", "", b"Hello, World!"),
        ("HEAD", "/static/big.bin", "", None),
        ("GET", "/static/one.bin", "", f("one.bin")),
        ("GET", "/static/empty.bin", "", b""),
        ("GET", "/static/k64.bin", "Range: bytes=10-19\r\n", f("k64.bin")[10:20]),
        ("GET", "/static/missing", "", None),
        ("GET", "/static/big.bin", "", f("big.bin")),
        ("GET", "/", "", b"Hello, World!"),
    ]
    s = connect(addr)
    s.sendall(b"".join(f"{m} {p} HTTP/1.1\r\nHost: t\r\n{h}\r\n".encode() for m, p, h, _ in reqs))
    r = Reader(s)
    n = 0
    for m, p, h, want in reqs:
        status, hdrs, body = r.response(head_only=(m == "HEAD"))
        if p == "/static/missing":
            ok = status == 404
        elif m == "HEAD":
            ok = status == 200 and int(hdrs["content-length"]) == len(f("big.bin")) and body == b""
        else:
            ok = status in (200, 206) and body == want
        if not ok:
            print(f"response {n} to {m} {p} {h.strip()}: {status} {hdrs} {len(body)} bytes")
            return
        n += 1
    print(f"{n} in order")


def leave(addr, path):
    # Reads a little of a large file, then resets the connection (SO_LINGER 0), ten times:
    # the demo's sendfile meets EPIPE/ECONNRESET (SIGPIPE must not end it).
    import struct
    for _ in range(10):
        s = connect(addr)
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        s.recv(1000)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
    time.sleep(0.3)
    s = connect(addr)
    s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    status, _ = Reader(s).head()
    print("still serving" if status == 200 else f"status {status}")


def proc_stat(pid):
    with open(f"/proc/{pid}/status") as fh:
        rss = next(int(l.split()[1]) for l in fh if l.startswith("VmRSS:"))
    with open(f"/proc/{pid}/stat") as fh:
        f = fh.read().rsplit(")", 1)[1].split()
    # utime and stime (fields 14, 15 counting from 1; 12, 13 after the comm field).
    return rss, (int(f[11]) + int(f[12])) / 100.0


def slow(addr, pid, root, name):
    with open(f"{root}/{name}", "rb") as fh:
        want = hashlib.sha256(fh.read()).hexdigest()
    s = connect(addr)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    rss0, cpu0 = proc_stat(pid)
    s.sendall(f"GET /static/{name} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    r = Reader(s)
    status, hdrs = r.head()
    n = int(hdrs["content-length"])
    h = hashlib.sha256()
    h.update(r.buf)
    got = len(r.buf)
    peak = rss0
    t0 = time.time()
    while got < n:
        b = s.recv(min(64 * 1024, n - got))
        if not b:
            print(f"closed after {got} of {n}")
            return
        h.update(b)
        got += len(b)
        time.sleep(0.004)
        peak = max(peak, proc_stat(pid)[0])
    secs = time.time() - t0
    rss1, cpu1 = proc_stat(pid)
    grew = peak - rss0
    cpu = cpu1 - cpu0
    if status != 200 or h.hexdigest() != want:
        print(f"status {status}, body differs")
    elif grew > 8 * 1024:
        print(f"RSS grew by {grew} KiB while serving {n >> 20} MiB slowly")
    elif cpu > 0.2 * secs + 0.1:
        print(f"the demo used {cpu:.2f} s of CPU in {secs:.1f} s of a slow read (busy loop?)")
    else:
        print("bounded")


def main():
    mode, args = sys.argv[1], sys.argv[2:]
    try:
        {"raw": raw, "pipeline": pipeline, "slow": slow, "leave": leave}[mode](*args)
    except (ConnectionError, EOFError) as e:
        print(f"connection failed: {e}")
    except socket.timeout:
        print("timeout")


if __name__ == "__main__":
    main()
