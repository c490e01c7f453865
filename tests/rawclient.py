#!/usr/bin/env python3
"""A strict raw-socket client for the demo checks (tests/demo_e2e.sh): sends exact bytes
over HTTP or FastCGI and prints one line saying what came back.

  rawclient.py http-status ADDR HEX          status code of the answer to those bytes
  rawclient.py http-chunks ADDR N            POST /echo as N one-byte chunks: "N equal"
  rawclient.py fcgi-hex ADDR HEX             "STATUS END" of a FastCGI answer (END_REQUEST's
                                             protocolStatus) or "none" if the server closed
  rawclient.py fcgi-stdin ADDR N [CL]        POST /echo with N one-byte STDIN records (and
                                             CONTENT_LENGTH=CL, "-" for none): "N equal"
  rawclient.py fcgi-big ADDR MB              POST /echo (KEEP_CONN, no CONTENT_LENGTH) with MB
                                             MiB of STDIN: "STATUS END" of the answer
  rawclient.py fcgi-leave ADDR URI           sends a GET for URI and closes without reading
  rawclient.py http-halfclose ADDR           a 70 KB head, then shutdown(SHUT_WR), then reads:
                                             "STATUS clean" or "STATUS reset"
  rawclient.py http-slow-413 ADDR            POST /echo with a 100 MB Content-Length, 1 KB sent
                                             every 100 ms for 2.5 s, then reads: the status
  rawclient.py http-after ADDR HEX           sends the bytes, reads to EOF: "STATUS N", N the
                                             bytes after the head (0 for an answer to HEAD)
Every socket has a 15 s timeout; a timeout prints "timeout".
"""
import socket
import struct
import sys


def connect(addr):
    host, port = addr.rsplit(":", 1)
    s = socket.create_connection((host.strip("[]"), int(port)), timeout=15)
    return s


def read_all(s):
    out = b""
    while True:
        try:
            b = s.recv(65536)
        except ConnectionResetError:
            break
        if not b:
            break
        out += b
    return out


def http_response(s):
    """Reads one response with a Content-Length or chunked body; returns (status, body)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        b = s.recv(65536)
        if not b:
            return None, buf
        buf += b
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    hdrs = {}
    for l in lines[1:]:
        k, _, v = l.partition(b":")
        hdrs[k.strip().lower()] = v.strip()
    if b"content-length" in hdrs:
        n = int(hdrs[b"content-length"])
        while len(rest) < n:
            b = s.recv(65536)
            if not b:
                break
            rest += b
        return status, rest[:n]
    if hdrs.get(b"transfer-encoding") == b"chunked":
        body = b""
        while True:
            while b"\r\n" not in rest:
                rest += s.recv(65536)
            line, _, rest = rest.partition(b"\r\n")
            size = int(line.split(b";")[0], 16)
            while len(rest) < size + 2:
                rest += s.recv(65536)
            body += rest[:size]
            rest = rest[size + 2:]
            if size == 0:
                return status, body
    return status, rest + read_all(s)


def record(kind, rid, content):
    return struct.pack(">BBHHBB", 1, kind, rid, len(content), 0, 0) + content


def pair(n, v):
    def ln(x):
        return bytes([len(x)]) if len(x) < 128 else struct.pack(">I", len(x) | 0x80000000)
    return ln(n) + ln(v) + n + v


def fcgi_read(s):
    """Reads records until END_REQUEST: returns (stdout bytes, protocolStatus) or None."""
    buf = b""
    out = b""
    while True:
        while len(buf) >= 8:
            _, kind, _, clen, pad, _ = struct.unpack(">BBHHBB", buf[:8])
            if len(buf) < 8 + clen + pad:
                break
            content = buf[8:8 + clen]
            buf = buf[8 + clen + pad:]
            if kind == 6:
                out += content
            elif kind == 3:
                return out, content[4]
        b = s.recv(65536)
        if not b:
            return None
        buf += b


def cgi_status(out):
    head = out.split(b"\r\n\r\n", 1)[0]
    for l in head.split(b"\r\n"):
        if l.lower().startswith(b"status:"):
            return int(l.split()[1])
    return 200


def main():
    cmd, addr = sys.argv[1], sys.argv[2]
    try:
        s = connect(addr)
        if cmd == "http-status":
            s.sendall(bytes.fromhex(sys.argv[3]))
            status, _ = http_response(s)
            print(status if status else "none")
        elif cmd == "http-after":
            s.sendall(bytes.fromhex(sys.argv[3]))
            out = read_all(s)
            head, _, rest = out.partition(b"\r\n\r\n")
            status = head.split(b" ", 2)[1].decode() if head.startswith(b"HTTP/") else "none"
            print(status, len(rest))
        elif cmd == "http-chunks":
            n = int(sys.argv[3])
            body = bytes(ord("a") + i % 26 for i in range(n))
            wire = b"".join(b"1\r\n" + body[i:i + 1] + b"\r\n" for i in range(n)) + b"0\r\n\r\n"
            s.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Type: text/x\r\n"
                      b"Transfer-Encoding: chunked\r\n\r\n" + wire)
            status, got = http_response(s)
            print(status, len(got), "equal" if got == body else "differ")
        elif cmd == "fcgi-hex":
            s.sendall(bytes.fromhex(sys.argv[3]))
            r = fcgi_read(s)
            print("none" if r is None else "%d %d" % (cgi_status(r[0]), r[1]))
        elif cmd == "fcgi-stdin":
            n = int(sys.argv[3])
            cl = sys.argv[4] if len(sys.argv) > 4 else str(n)
            body = bytes(ord("a") + i % 26 for i in range(n))
            p = pair(b"REQUEST_METHOD", b"POST") + pair(b"REQUEST_URI", b"/echo") + \
                pair(b"CONTENT_TYPE", b"text/x")
            if cl != "-":
                p += pair(b"CONTENT_LENGTH", cl.encode())
            wire = record(1, 1, struct.pack(">HB5x", 1, 0)) + record(4, 1, p) + record(4, 1, b"")
            wire += b"".join(record(5, 1, body[i:i + 1]) for i in range(n)) + record(5, 1, b"")
            s.sendall(wire)
            r = fcgi_read(s)
            if r is None:
                print("none")
            else:
                got = r[0].split(b"\r\n\r\n", 1)[1]
                print(cgi_status(r[0]), len(got), "equal" if got == body else "differ")
        elif cmd == "fcgi-big":
            mb = int(sys.argv[3])
            p = pair(b"REQUEST_METHOD", b"POST") + pair(b"REQUEST_URI", b"/echo")
            s.sendall(record(1, 1, struct.pack(">HB5x", 1, 1)) + record(4, 1, p) + record(4, 1, b""))
            piece = record(5, 1, b"x" * 65528)
            for _ in range(mb * 1048576 // 65528 + 1):
                s.sendall(piece)
            s.sendall(record(5, 1, b""))
            r = fcgi_read(s)
            print("none" if r is None else "%d %d" % (cgi_status(r[0]), r[1]))
        elif cmd == "fcgi-leave":
            uri = sys.argv[3].encode()
            p = pair(b"REQUEST_METHOD", b"GET") + pair(b"REQUEST_URI", uri) + \
                pair(b"QUERY_STRING", uri.partition(b"?")[2])
            s.sendall(record(1, 1, struct.pack(">HB5x", 1, 0)) + record(4, 1, p) +
                      record(4, 1, b"") + record(5, 1, b""))
            s.close()
            print("sent")
        elif cmd == "http-halfclose":
            head = b"GET / HTTP/1.1\r\nHost: t\r\n"
            while len(head) < 70000:
                head += b"X-Filler: " + b"a" * 50 + b"\r\n"
            s.sendall(head + b"\r\n")
            s.shutdown(socket.SHUT_WR)
            out = b""
            how = "clean"
            while True:
                try:
                    b = s.recv(65536)
                except ConnectionResetError:
                    how = "reset"
                    break
                if not b:
                    break
                out += b
            status = out.split(b" ", 2)[1].decode() if out.startswith(b"HTTP/") else "none"
            print(status, how)
        elif cmd == "http-slow-413":
            import time
            s.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100000000\r\n\r\n")
            t0 = time.time()
            try:
                while time.time() - t0 < 2.5:
                    s.sendall(b"x" * 1024)
                    time.sleep(0.1)
                status, _ = http_response(s)
                print(status if status else "none")
            except (BrokenPipeError, ConnectionResetError) as e:
                print("error", type(e).__name__)
        else:
            sys.exit("unknown command " + cmd)
    except socket.timeout:
        print("timeout")


main()
