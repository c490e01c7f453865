#!/usr/bin/env python3
"""A raw-socket WebSocket client (Python's standard library only) checking the demo
contract's GET /ws echo and the framing rules against a running server:

    python3 tests/ws_raw.py HOST:PORT [--path /ws] [--tls]

Checks: a plain GET gets 400 or 426; the 101 and its Sec-WebSocket-Accept; bytes sent with
the upgrade request; echo of text, binary, empty and 70,000-byte messages as the same
kind; a fragmented text with a ping between its fragments; the pong; permessage-deflate
(a compressed message in, the echo decompressed); the close handshake with the client's
code; and closes for an unmasked frame (1002), a reserved opcode (1002), invalid UTF-8
(1007), a bad close code (1002). Prints one line per failure and "N passed, M failed".
"""
import base64
import hashlib
import os
import socket
import ssl
import struct
import sys
import zlib

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
passed = failed = 0


def check(cond, what):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print("FAIL " + what)


def encode(op, payload=b"", fin=True, rsv1=False, mask=True):
    """A client frame."""
    b0 = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | op
    n = len(payload)
    m = 0x80 if mask else 0
    if n < 126:
        head = struct.pack("!BB", b0, m | n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, m | 126, n)
    else:
        head = struct.pack("!BBQ", b0, m | 127, n)
    if mask:
        key = os.urandom(4)
        payload = bytes(c ^ key[i % 4] for i, c in enumerate(payload))
        head += key
    return head + payload


class Conn:
    def __init__(self, addr, tls, path, extra=b"", after=b"", upgrade=True):
        host, port = addr.rsplit(":", 1)
        s = socket.create_connection((host, int(port)), timeout=10)
        if tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            s = ctx.wrap_socket(s, server_hostname="localhost")
        self.s = s
        self.buf = b""
        self.key = base64.b64encode(os.urandom(16))
        if upgrade:
            req = (b"GET " + path.encode() + b" HTTP/1.1\r\nHost: " + host.encode() +
                   b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " + self.key +
                   b"\r\nSec-WebSocket-Version: 13\r\n" + extra + b"\r\n")
        else:
            req = b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        s.sendall(req + after)
        while b"\r\n\r\n" not in self.buf:
            d = s.recv(65536)
            if not d:
                break
            self.buf += d
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        self.head = head.decode("latin-1")

    def accepted(self):
        want = base64.b64encode(hashlib.sha1(self.key + GUID).digest()).decode()
        return self.head.startswith("HTTP/1.1 101") and ("Sec-WebSocket-Accept: " + want) in self.head

    def send(self, op, payload=b"", fin=True, rsv1=False, mask=True):
        self.s.sendall(encode(op, payload, fin, rsv1, mask))

    def fill(self, n):
        while len(self.buf) < n:
            try:
                d = self.s.recv(65536)
            except (ConnectionResetError, ssl.SSLError):
                return False
            if not d:
                return False
            self.buf += d
        return True

    def frame(self):
        """(fin, rsv1, opcode, payload), or None at EOF."""
        if not self.fill(2):
            return None
        b0, b1 = self.buf[0], self.buf[1]
        n, at = b1 & 0x7F, 2
        if n == 126:
            self.fill(4)
            n, at = struct.unpack("!H", self.buf[2:4])[0], 4
        elif n == 127:
            self.fill(10)
            n, at = struct.unpack("!Q", self.buf[2:10])[0], 10
        if not self.fill(at + n):
            return None
        p = self.buf[at:at + n]
        self.buf = self.buf[at + n:]
        return (bool(b0 & 0x80), bool(b0 & 0x40), b0 & 0x0F, p)

    def close_code(self):
        """The code of the next close frame (skipping other frames), or None."""
        while True:
            f = self.frame()
            if f is None:
                return None
            if f[2] == 8:
                return struct.unpack("!H", f[3][:2])[0] if len(f[3]) >= 2 else 1005

    def eof(self):
        return self.frame() is None


def main():
    addr = sys.argv[1]
    path = sys.argv[sys.argv.index("--path") + 1] if "--path" in sys.argv else "/ws"
    tls = "--tls" in sys.argv

    c = Conn(addr, tls, path, upgrade=False)
    status = c.head[9:12]
    check(status in ("400", "426"), "a plain GET %s: 400 or 426, got %r" % (path, c.head[:40]))
    c.s.close()

    # A frame in the same write as the upgrade request: not lost.
    early = Conn(addr, tls, path, after=encode(1, b"sent with the upgrade"))
    check(early.accepted(), "101 with the right Sec-WebSocket-Accept: %r" % early.head)
    f = early.frame()
    check(f == (True, False, 1, b"sent with the upgrade"), "first message echoed: %r" % (f,))
    early.s.close()

    c = Conn(addr, tls, path)
    check(c.accepted(), "second 101")
    for op, p in [(1, "héllo κόσμε".encode()), (2, bytes(range(256))), (1, b""), (2, os.urandom(70000))]:
        c.send(op, p)
        f = c.frame()
        check(f is not None and f[2] == op and f[3] == p, "echo of opcode %d, %d bytes" % (op, len(p)))
    c.send(1, "κό".encode(), fin=False)
    c.send(9, b"between")
    c.send(0, "σμε".encode(), fin=True)
    f = c.frame()
    check(f == (True, False, 10, b"between"), "pong between fragments: %r" % (f,))
    f = c.frame()
    check(f is not None and f[2] == 1 and f[3] == "κόσμε".encode(), "fragmented text echoed: %r" % (f,))
    c.send(8, struct.pack("!H", 4000) + b"bye")
    check(c.close_code() == 4000, "the client's close code comes back")
    check(c.eof(), "the server closes after the close handshake")
    c.s.close()

    # permessage-deflate.
    c = Conn(addr, tls, path, extra=b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n")
    check(c.accepted(), "101 with deflate offered")
    check("permessage-deflate" in c.head, "permessage-deflate accepted: %r" % c.head)
    msg = ("compressible text " * 200).encode()
    co = zlib.compressobj(wbits=-15)
    data = co.compress(msg) + co.flush(zlib.Z_SYNC_FLUSH)
    c.send(1, data[:-4], rsv1=True)
    f = c.frame()
    got = None
    if f is not None:
        got = zlib.decompressobj(wbits=-15).decompress(f[3] + b"\x00\x00\xff\xff") if f[1] else f[3]
    check(f is not None and f[2] == 1 and got == msg, "compressed message echoed")
    c.send(8, struct.pack("!H", 1000))
    check(c.close_code() == 1000, "deflate connection closes with 1000")
    c.s.close()

    # Framing errors.
    for what, frame, code in [
        ("unmasked frame", lambda c: c.send(1, b"x", mask=False), 1002),
        ("reserved opcode", lambda c: c.send(3, b""), 1002),
        ("invalid UTF-8", lambda c: c.send(1, b"\xce\xba\xff"), 1007),
        ("bad close code", lambda c: c.send(8, struct.pack("!H", 1004)), 1002),
        ("continuation without a message", lambda c: c.send(0, b"x"), 1002),
    ]:
        c = Conn(addr, tls, path)
        frame(c)
        got = c.close_code()
        check(got == code, "%s: close %d, got %r" % (what, code, got))
        c.s.close()

    print("%d passed, %d failed" % (passed, failed))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
