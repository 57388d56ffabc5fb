"""3_pools/chunksize_tuning.py -- the Python twin of chunksize_tuning.c

Pool.map(square, items, chunksize=c) over the same items (x*x for
x in 0..n-1) for each chunksize, then apply_async throughput and the private
memory (USS) of an idle fork worker.  chunksize_tuning.c runs this file and
checks the checksums; run alone it prints the same lines.

Every chunk is a task tuple pickled into the pool's task queue (a pipe plus a
lock), unpickled by a worker, run by mapstar(), and its list of results is
pickled back through the result queue to the parent's result-handler thread.
That per-chunk round trip (tens of microseconds) is why Python's curve is so
steep at small chunksizes.

Usage: python3 chunksize_tuning.py [--tasks N] [--workers N] [--repeat N]
                                   [--chunksizes 1,4,...,auto] [--apply N]
Output lines (CSV, no header):
    python,<chunksize>,<tasks>,<seconds>,<tasks_per_s>,<checksum>
    python-apply_async,1,<tasks>,<seconds>,<tasks_per_s>,<checksum>
    python-uss,<KiB>
Stdlib only.  Fork workers, as the C pool.
"""
import argparse
import collections
import multiprocessing as mp
import os
import signal
import statistics
import time

MASK = (1 << 64) - 1


def square(x):
    return x * x


def my_pid(_):
    time.sleep(0.01)  # so that every worker gets one
    return os.getpid()


def checksum(results):
    return sum(results) & MASK


def uss_kib(pid):
    """Private_Clean + Private_Dirty of a process, from smaps_rollup."""
    total = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith(("Private_Clean:", "Private_Dirty:")):
                    total += int(line.split()[1])
    except OSError:
        return -1
    return total


def run(pool, args, items):
    pool.map(square, range(args.workers * 4))  # start-up out of the way
    for c in args.chunksizes.split(","):
        chunk = None if c == "auto" else int(c)
        times = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            res = pool.map(square, items, chunksize=chunk)
            times.append(time.perf_counter() - t)
        s = statistics.median(times)
        print(f"python,{c},{args.tasks},{s:.6f},{args.tasks / s:.0f},"
              f"{checksum(res)}", flush=True)
    if args.apply:
        # At most 1024 in flight, as the C side: bounded memory.
        t = time.perf_counter()
        window, total = collections.deque(), 0
        for x in range(args.apply):
            window.append(pool.apply_async(square, (x,)))
            if len(window) == 1024:
                total += window.popleft().get()
        while window:
            total += window.popleft().get()
        s = time.perf_counter() - t
        print(f"python-apply_async,1,{args.apply},{s:.6f},"
              f"{args.apply / s:.0f},{total & MASK}", flush=True)
    pids = set(pool.map(my_pid, range(args.workers * 4), chunksize=1))
    time.sleep(0.05)  # idle now
    print(f"python-uss,{max(uss_kib(p) for p in pids)}", flush=True)


def stop(signum, _frame):
    for child in mp.active_children():  # the pool's workers
        child.kill()
    os._exit(128 + signum)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=3000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--chunksizes", default="1,4,16,64,256,1024,auto")
    ap.add_argument("--apply", type=int, default=0)
    args = ap.parse_args()

    items = range(args.tasks)
    pool = mp.get_context("fork").Pool(args.workers)
    # Stopped by the C lesson (SIGTERM on Ctrl-C), whose handler waits for
    # us: kill the workers and leave at once, without Pool.terminate(),
    # which joins three threads and has been known to hang (gh-78178).
    # Installed after the workers are forked: they keep the default action.
    signal.signal(signal.SIGTERM, stop)
    try:
        run(pool, args, items)
    except BaseException:
        pool.terminate()
        raise
    pool.close()  # the documented way out: no new tasks, workers exit
    pool.join()


if __name__ == "__main__":
    main()
