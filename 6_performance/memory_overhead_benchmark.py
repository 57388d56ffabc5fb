"""6_performance/memory_overhead_benchmark.py -- the Python twin of
memory_overhead_benchmark.c

1. What an idle worker costs, for each start method: fork (a copy-on-write
   image of this interpreter), spawn (a fresh python3 that imports what it
   needs) and forkserver (forked from a small server process that was
   spawned once).  RSS, PSS and USS (Private_Clean + Private_Dirty) from
   /proc/PID/smaps_rollup, read by this parent.
2. The refcount copy-on-write problem.  The parent builds N small lists;
   fork children then
     idle        do nothing                -> the pages stay shared
     read        for x in data: s += x[0]  -> every Py_INCREF/Py_DECREF
                 writes ob_refcnt in the object's header (Include/object.h),
                 so merely reading dirties every page that holds an object
     collect     gc.collect()              -> the collector writes gc_refs
                 in the GC header of every tracked object (update_refs() in
                 Modules/gcmodule.c; Python/gc.c since 3.13)
     frozen+collect  gc.freeze() in the parent before fork, then
                 gc.collect() in the child: frozen objects sit in the
                 permanent generation, which no collection visits (gc.freeze,
                 Doc/library/gc.rst, since 3.7)
     frozen+read  gc.freeze() does not stop refcount writes: reading still
                 dirties the pages.
   (Since 3.12, PEP 683 makes some objects immortal -- None, small ints,
   interned strings -- and Py_INCREF leaves them alone; the lists here are
   ordinary objects.)

Usage: python3 memory_overhead_benchmark.py [--objects N]
Output lines (CSV, no header), sizes in KiB:
    python-worker,<fork|spawn|forkserver>,<rss>,<pss>,<uss>
    python-cow,<idle|read|collect|frozen+collect|frozen+read>,<uss>,<sum>
(<sum>: of x[0] over the objects when read, else 0)
Stdlib only.
"""
import argparse
import gc
import multiprocessing as mp
import os
import sys


def smaps(pid):
    """(Rss, Pss, Private_Clean + Private_Dirty) in KiB."""
    f = {}
    with open(f"/proc/{pid}/smaps_rollup") as fh:
        for line in fh:
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                f[parts[0].rstrip(":")] = int(parts[1])
    return f["Rss"], f["Pss"], f["Private_Clean"] + f["Private_Dirty"]


def idle(ready, go):
    ready.send(0)
    go.recv()  # until the parent says so


def cow_child(what, data, ready, go):
    s = 0
    if what.endswith("read"):
        for x in data:
            s += x[0]
    elif what.endswith("collect"):
        gc.collect()
    ready.send(s)
    go.recv()


def measure(ctx, target, args):
    """Start a worker, wait until it is ready, measure it, let it go."""
    ready_r, ready_w = ctx.Pipe(duplex=False)
    go_r, go_w = ctx.Pipe(duplex=False)
    p = ctx.Process(target=target, args=(*args, ready_w, go_r))
    p.start()
    ready_w.close()
    go_r.close()
    if not ready_r.poll(60):
        p.kill()
        sys.exit(f"worker {p.pid} not ready")
    value = ready_r.recv()
    m = smaps(p.pid)
    go_w.send(0)
    p.join(30)
    if p.exitcode != 0:
        sys.exit(f"worker exit code {p.exitcode}")
    return m, value


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--objects", type=int, default=200000)
    args = ap.parse_args()

    for method in ("fork", "spawn", "forkserver"):
        (rss, pss, uss), _ = measure(mp.get_context(method), idle, ())
        print(f"python-worker,{method},{rss},{pss},{uss}", flush=True)

    gc.disable()  # no collection in the parent between the runs
    data = [[i] for i in range(args.objects)]
    want = args.objects * (args.objects - 1) // 2
    fork = mp.get_context("fork")
    for what in ("idle", "read", "collect", "frozen+collect",
                 "frozen+read"):
        if what.startswith("frozen") and gc.get_freeze_count() == 0:
            gc.freeze()
        (_, _, uss), s = measure(fork, cow_child, (what, data))
        if s != (want if what.endswith("read") else 0):
            sys.exit(f"{what}: wrong checksum {s}")
        print(f"python-cow,{what},{uss},{s}", flush=True)


if __name__ == "__main__":
    main()
