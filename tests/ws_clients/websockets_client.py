#!/usr/bin/env python3
"""The demo contract's GET /ws checked with Python's `websockets` package (pip):
    python3 tests/ws_clients/websockets_client.py URL     (ws://H/ws or wss://H/ws)
echo of text and binary as the same kind, a fragmented message (an iterable), ping ->
pong, a 200 KB message with permessage-deflate negotiated, the client's close code
echoed, and a connection without compression. Prints "N passed, M failed"."""
import asyncio
import ssl
import sys

import websockets

passed = failed = 0


def check(cond, what):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print("FAIL " + what)


async def main(url):
    ctx = None
    if url.startswith("wss:"):
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    async with websockets.connect(url, ssl=ctx, compression="deflate", max_size=None) as c:
        ext = [e.name for e in getattr(c.protocol, "extensions", getattr(c, "extensions", []))]
        check("permessage-deflate" in ext, "deflate negotiated: %r" % ext)
        await c.send("héllo websockets")
        m = await asyncio.wait_for(c.recv(), 10)
        check(m == "héllo websockets", "text echoed as str: %r" % m)
        await c.send(b"\x00\x01\xfe\xff")
        m = await asyncio.wait_for(c.recv(), 10)
        check(m == b"\x00\x01\xfe\xff", "binary echoed as bytes: %r" % m)
        big = b"0123456789" * 20000
        await c.send(big)
        m = await asyncio.wait_for(c.recv(), 10)
        check(m == big, "200 KB message through deflate")
        await c.send(["frag", "men", "ted"])
        m = await asyncio.wait_for(c.recv(), 10)
        check(m == "fragmented", "fragmented message: %r" % m)
        pong = await c.ping(b"hi")
        await asyncio.wait_for(pong, 10)
        check(True, "pong")
        await c.close(code=4123, reason="bye")
        check(c.close_code == 4123, "close code echoed: %r" % c.close_code)
    async with websockets.connect(url, ssl=ctx, compression=None) as c:
        await c.send("no compression")
        m = await asyncio.wait_for(c.recv(), 10)
        check(m == "no compression", "echo without compression")


try:
    asyncio.run(main(sys.argv[1]))
except Exception as e:  # noqa: BLE001 - any failure is a failed check
    check(False, "error: %r" % e)
print("%d passed, %d failed" % (passed, failed))
sys.exit(1 if failed else 0)
