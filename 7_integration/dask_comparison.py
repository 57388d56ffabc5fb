"""7_integration/dask_comparison.py -- the Python twin of dask_comparison.c

The same task graph (BLOCKS leaves, then a tree reduction that combines
pairs level by level) run serially and on a concurrent.futures
ProcessPoolExecutor by a small dependency-aware scheduler: a node is
submitted when its last input is known, as Dask's local scheduler does
with an executor (docs.dask.org/en/stable/shared.html).  Every submit()
pickles the function and its arguments into the executor's call queue and
a worker pickles the result back (Lib/concurrent/futures/process.py), so
a task costs far more than in C.  Standard library only.

Usage:  python3 dask_comparison.py BLOCKS WORKERS REPEAT WORK[,WORK...]
Output: one CSV line per task size, no header:
        python,<work>,<tasks>,<serial_s>,<graph_s>,<root>
"""
import concurrent.futures as cf
import multiprocessing as mp
import statistics
import sys
import time

M64 = (1 << 64) - 1


def leaf_value(block, work):
    x = ((block + 1) * 0x9E3779B97F4A7C15) & M64
    for _ in range(work):  # xorshift64, as in the C file
        x ^= (x << 13) & M64
        x ^= x >> 7
        x ^= (x << 17) & M64
    return x


def combine(a, b):
    return (((a << 17) | (a >> 47)) & M64) ^ ((b * 0xFF51AFD7ED558CCD) & M64)


def build(n):
    """Nodes as (left, right); leaves are (None, None).  Creation order is
    a topological order, the same numbering as the C file."""
    nodes = [(None, None)] * n
    level = list(range(n))
    while len(level) > 1:
        nxt = []
        for i in range(0, len(level) - 1, 2):
            nodes.append((level[i], level[i + 1]))
            nxt.append(len(nodes) - 1)
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return nodes


def serial(nodes, work):
    val = []
    for k, (l, r) in enumerate(nodes):
        val.append(leaf_value(k, work) if l is None
                   else combine(val[l], val[r]))
    return val


def graph(pool, nodes, work):
    parent, pending, val = {}, [0] * len(nodes), [None] * len(nodes)
    for k, (l, r) in enumerate(nodes):
        if l is not None:
            parent[l] = parent[r] = k
            pending[k] = 2
    running = {pool.submit(leaf_value, k, work): k
               for k in range(len(nodes)) if nodes[k][0] is None}
    while running:
        done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
        for f in done:
            k = running.pop(f)
            val[k] = f.result()
            p = parent.get(k)
            if p is not None:
                pending[p] -= 1
                if pending[p] == 0:  # its last input: submit it
                    l, r = nodes[p]
                    running[pool.submit(combine, val[l], val[r])] = p
    return val


def main():
    blocks, workers, repeat = (int(a) for a in sys.argv[1:4])
    works = [int(w) for w in sys.argv[4].split(",")] if len(sys.argv) > 4 \
        else [0]
    nodes = build(blocks)
    ctx = mp.get_context("fork")  # as the C pool: forked workers
    with cf.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        list(pool.map(abs, range(workers * 4)))  # start-up out of the way
        for work in works:
            ts, tg = [], []
            for _ in range(repeat):
                t0 = time.perf_counter()
                want = serial(nodes, work)
                ts.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                got = graph(pool, nodes, work)
                tg.append(time.perf_counter() - t0)
                if got != want:
                    print(f"python: work {work}: values differ", flush=True)
                    sys.exit(1)
            print(f"python,{work},{len(nodes)},{statistics.median(ts):.6f},"
                  f"{statistics.median(tg):.6f},{want[-1]}", flush=True)


if __name__ == "__main__":
    main()
