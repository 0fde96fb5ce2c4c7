#!/usr/bin/env python3
"""Opens N keep-alive client connections to 127.0.0.1:PORT, sends one GET on
each (BATCH at a time), reads its response, and keeps every connection open
and silent until stdin closes (or HOLD seconds pass). Prints "ready N" on
stdout once all N answered, then "closed" when it lets go.

Used by benches/idle_conns.sh: the proxy's memory is read while these
connections sit idle. Standard library only.

    idle_clients.py PORT N [BATCH] [HOLD]
"""

import asyncio
import sys


async def one(port, sem, conns, failures):
    async with sem:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET / HTTP/1.1\r\nHost: idle.example\r\n\r\n")
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            if length:
                await reader.readexactly(length)
            if not head.startswith(b"HTTP/1.1 200"):
                failures.append(head[:40])
            conns.append(writer)
        except (OSError, asyncio.IncompleteReadError) as e:
            failures.append(repr(e))


async def main():
    port = int(sys.argv[1])
    n = int(sys.argv[2])
    batch = int(sys.argv[3]) if len(sys.argv) > 3 else 100
    hold = float(sys.argv[4]) if len(sys.argv) > 4 else 3600.0
    sem = asyncio.Semaphore(batch)
    conns, failures = [], []
    await asyncio.gather(*(one(port, sem, conns, failures) for _ in range(n)))
    print(f"ready {len(conns)} failed {len(failures)}", flush=True)
    if failures:
        print(f"first failure: {failures[0]}", file=sys.stderr, flush=True)
    loop = asyncio.get_running_loop()
    done = loop.run_in_executor(None, sys.stdin.read)
    try:
        await asyncio.wait_for(done, hold)
    except asyncio.TimeoutError:
        pass
    for w in conns:
        w.close()
    print("closed", flush=True)


asyncio.run(main())
