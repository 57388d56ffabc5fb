"""7_integration/asyncio_bridge.py -- the Python twin of asyncio_bridge.c

An asyncio server on 127.0.0.1 (a port the kernel picks): each request is
8 bytes, the reply the value after WORK steps of an LCG.  Served inline (the
loop computes) and offloaded with loop.run_in_executor(ProcessPoolExecutor)
while a ticker task asks for a wake-up every millisecond and records how
late the loop was.  Clients are forked processes, one request at a time.
Then the round trip of an empty task, loop -> executor -> loop.
Standard library only.

Usage:  python3 asyncio_bridge.py CLIENTS REQUESTS WORK PROBES
Output: CSV lines, no header:
        python,<mode>,<requests>,<seconds>,<p50_us>,<p99_us>,
               <worst_tick_us>,<exact>      (one line)
        python,roundtrip,<median_us>
"""
import asyncio
import concurrent.futures as cf
import multiprocessing as mp
import socket
import statistics
import sys
import time

A, C, M = 6364136223846793005, 1442695040888963407, (1 << 64) - 1


def lcg_run(x, n):
    for _ in range(n):
        x = (x * A + C) & M
    return x


def lcg_jump(x, n):  # the same in O(log n), to check each reply
    a, c, sa, sc = 1, 0, A, C
    while n:
        if n & 1:
            a, c = (a * sa) & M, (sa * c + sc) & M
        sa, sc = (sa * sa) & M, (sa * sc + sc) & M
        n >>= 1
    return (a * x + c) & M


def client(port, cid, nreq, out):
    s = socket.create_connection(("127.0.0.1", port))
    recs = []
    for k in range(nreq):
        x = cid * 1000003 + k + 1
        t0 = time.perf_counter()
        s.sendall(x.to_bytes(8, "little"))
        y = b""
        while len(y) < 8:
            chunk = s.recv(8 - len(y))
            if not chunk:
                break
            y += chunk
        recs.append((x, int.from_bytes(y, "little"), time.perf_counter() - t0))
    s.close()
    out.put(recs)


async def serve(mode, pool, clients, nreq, work):
    loop = asyncio.get_running_loop()

    async def handle(reader, writer):
        try:
            while True:
                x = int.from_bytes(await reader.readexactly(8), "little")
                if mode == "inline":
                    y = lcg_run(x, work)
                else:
                    y = await loop.run_in_executor(pool, lcg_run, x, work)
                writer.write(y.to_bytes(8, "little"))
                await writer.drain()
        except asyncio.IncompleteReadError:
            pass
        writer.close()

    worst = 0.0

    async def ticker():
        nonlocal worst
        while True:
            due = loop.time() + 0.001
            await asyncio.sleep(0.001)
            worst = max(worst, loop.time() - due)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    tick = asyncio.create_task(ticker())
    ctx = mp.get_context("fork")
    out = ctx.SimpleQueue()
    t0 = time.perf_counter()
    procs = [ctx.Process(target=client, args=(port, i, nreq, out))
             for i in range(clients)]
    for p in procs:
        p.start()
    recs = []
    while len(recs) < clients:  # the queue's get() would block the loop
        recs.append(await loop.run_in_executor(None, out.get))
    secs = time.perf_counter() - t0
    for p in procs:
        await loop.run_in_executor(None, p.join)
    tick.cancel()
    server.close()
    await server.wait_closed()
    flat = [r for rs in recs for r in rs]
    lat = sorted(r[2] for r in flat)
    exact = sum(r[1] == lcg_jump(r[0], work) for r in flat)
    p50, p99 = lat[len(lat) // 2], lat[len(lat) * 99 // 100]
    print(f"python,{mode},{len(flat)},{secs:.6f},{p50 * 1e6:.1f},"
          f"{p99 * 1e6:.1f},{worst * 1e6:.1f},{exact}", flush=True)


async def round_trip(pool, probes):
    loop = asyncio.get_running_loop()
    t = []
    for _ in range(probes):
        t0 = time.perf_counter()
        await loop.run_in_executor(pool, abs, 1)
        t.append(time.perf_counter() - t0)
    print(f"python,roundtrip,{statistics.median(t) * 1e6:.1f}", flush=True)


async def main():
    clients, nreq, work, probes = (int(a) for a in sys.argv[1:5])
    with cf.ProcessPoolExecutor(mp_context=mp.get_context("fork")) as pool:
        list(pool.map(abs, range(8)))  # start-up out of the way
        await round_trip(pool, probes)
        for mode in ("inline", "offload"):
            await serve(mode, pool, clients, nreq, work)


if __name__ == "__main__":
    asyncio.run(main())
