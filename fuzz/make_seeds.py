#!/usr/bin/env python3
"""Writes the committed seed corpora (fuzz/seeds/TARGET/) from the byte strings of the unit
and integration tests, so that each target starts from the inputs the tests already know.
Raw-mode seeds start with "=" (see the targets). Rerun after adding test cases:
    python3 fuzz/make_seeds.py
"""
import hashlib
import os
import re
import struct

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "fuzz", "seeds")

LIT = re.compile(rb'b"((?:[^"\\]|\\.|\\\n)*)"', re.S)


def unescape(s):
    out = bytearray()
    i = 0
    while i < len(s):
        c = s[i]
        if c != 0x5C:  # backslash
            out.append(c)
            i += 1
            continue
        e = s[i + 1 : i + 2]
        if e == b"\n":  # line continuation: skip the newline and leading spaces
            i += 2
            while i < len(s) and s[i] in b" \t":
                i += 1
            continue
        simple = {b"r": 13, b"n": 10, b"t": 9, b"0": 0, b"\\": 92, b'"': 34, b"'": 39}
        if e in simple:
            out.append(simple[e])
            i += 2
        elif e == b"x":
            out.append(int(s[i + 2 : i + 4], 16))
            i += 4
        else:
            out.append(ord(e))
            i += 2
    return bytes(out)


def literals(path):
    with open(os.path.join(ROOT, path), "rb") as f:
        return [unescape(m.group(1)) for m in LIT.finditer(f.read())]


def write(target, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    name = hashlib.sha1(data).hexdigest()[:16]
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def rec(kind, rid, content, pad=None):
    if pad is None:
        pad = (8 - len(content) % 8) % 8
    return struct.pack(">BBHHBB", 1, kind, rid, len(content), pad, 0) + content + b"\0" * pad


def pair(n, v):
    out = b""
    for x in (n, v):
        out += bytes([len(x)]) if len(x) < 128 else struct.pack(">I", len(x) | 0x80000000)
    return out + n + v


def main():
    heads = [
        b
        for p in ("core/src/http/parse.rs", "core/tests/http.rs", "core/tests/fuzz_regressions.rs")
        for b in literals(p)
        if re.match(rb"\r?\n?[A-Z;]+ ", b) or b.startswith(b"\r\n")
    ]
    for b in heads:
        write("http_head", b)
        write("http_head", b"\x01" + b)  # small limits
        write("http_conn", b"=" + b)
    # Pipelined pairs and bodies, as the connection tests send them.
    for b in heads[:20]:
        write("http_conn", b"=" + b + b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    write("http_conn", b"=POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhelloGET /stream HTTP/1.1\r\nHost: t\r\n\r\n")
    write("http_conn", b"=PUT /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n5;x=1\r\nhello\r\n0\r\nT: v\r\n\r\nHEAD /big HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    for b in literals("core/src/http/chunked.rs"):
        if re.match(rb"[0-9a-fA-F +\-g]", b) or b.startswith(b"\r\n"):
            write("chunked", b"=" + b)
    # FastCGI: the record tests' sample stream, management records, bad versions.
    params = pair(b"REQUEST_METHOD", b"GET") + pair(b"X", b"v" * 200)
    sample = (
        rec(1, 1, bytes([0, 1, 1, 0, 0, 0, 0, 0]))
        + rec(4, 1, params[:7])
        + rec(4, 1, params[7:])
        + rec(4, 1, b"")
        + rec(5, 1, b"hello")
        + rec(5, 1, b"")
    )
    echo = (
        rec(1, 2, bytes([0, 1, 1, 0, 0, 0, 0, 0]))
        + rec(4, 2, pair(b"REQUEST_URI", b"/echo") + pair(b"CONTENT_LENGTH", b"3"))
        + rec(4, 2, b"")
        + rec(5, 2, b"abc")
        + rec(5, 2, b"")
    )
    mgmt = rec(9, 0, pair(b"FCGI_MPXS_CONNS", b"") + pair(b"FCGI_MAX_REQS", b"")) + rec(42, 0, b"??")
    abort = rec(1, 3, bytes([0, 1, 1, 0, 0, 0, 0, 0])) + rec(2, 3, b"")
    bad = [
        bytes([2, 1, 0, 1, 0, 0, 0, 0]),
        rec(1, 1, bytes([0, 1, 0])),
        rec(1, 1, bytes([0, 9, 0, 0, 0, 0, 0, 0])),
        rec(1, 1, bytes([0, 1, 0, 0, 0, 0, 0, 0])) + rec(4, 1, b"\xff\xff\xff\xff\xff\xff\xff\xff") + rec(4, 1, b""),
    ]
    for s in [sample, echo, mgmt, abort, sample + echo + mgmt + abort] + bad:
        write("fcgi_records", b"=" + s)
        write("fcgi_conn", b"=" + s)
    # WebSocket: client frames as the ws tests send them.
    def wsf(op, payload, fin=True, rsv1=False, key=b"\x11\x22\x33\x44"):
        b0 = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | op
        n = len(payload)
        if n < 126:
            head = bytes([b0, 0x80 | n])
        elif n < 65536:
            head = bytes([b0, 0x80 | 126]) + struct.pack(">H", n)
        else:
            head = bytes([b0, 0x80 | 127]) + struct.pack(">Q", n)
        return head + key + bytes(c ^ key[i % 4] for i, c in enumerate(payload))

    ws = [
        wsf(1, b"hello"),
        wsf(2, bytes(range(256)) * 2),
        wsf(1, "κό".encode(), fin=False) + wsf(9, b"ping") + wsf(0, "σμε".encode()),
        wsf(2, b"a", fin=False) + wsf(10, b"") + wsf(0, b"b", fin=False) + wsf(0, b"c"),
        wsf(8, struct.pack(">H", 1000) + b"bye"),
        wsf(8, b""),
        wsf(8, struct.pack(">H", 1004)),
        wsf(1, b"\xce\xba\xff"),
        wsf(0, b"x"),
        wsf(1, b"\xf2\x48\xcd\xc9\xc9\x07\x00", rsv1=True) + wsf(1, b"\xf2\x00\x11\x00\x00", rsv1=True),
        wsf(2, b"x" * 300),
        b"\x81\x02hi",
    ]
    for s in ws + [b"".join(ws)]:
        write("ws_frame", b"=" + s)


if __name__ == "__main__":
    main()
