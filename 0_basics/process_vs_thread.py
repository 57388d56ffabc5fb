"""0_basics/process_vs_thread.py -- the Python twin of process_vs_thread.c

The same CPU-bound work (the sum of splitmix64(i) for i < ITERS, modulo
2**64) split over 1..N threading.Thread and 1..N multiprocessing.Process
workers.  In the default CPython build only the thread that holds the GIL
runs bytecode, so the thread column stays near 1x while processes scale with
the cores.  process_vs_thread.c runs this file and checks the checksum.

Usage: python3 process_vs_thread.py [--iters N (100000)] [--workers N (2)]
                                    [--repeat N (2)]
Stdlib only.  Results come back through mp.Pipe(duplex=False), which is a
plain os.pipe() on Linux and leaves nothing in /dev/shm.
"""
import argparse
import multiprocessing as mp
import platform
import signal
import sys
import threading
import time

MASK = (1 << 64) - 1


def work(lo, hi):
    s = 0
    for x in range(lo, hi):
        z = (x + 0x9E3779B97F4A7C15) & MASK
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        s = (s + (z ^ (z >> 31))) & MASK
    return s


def slices(iters, k):
    return [(iters * i // k, iters * (i + 1) // k) for i in range(k)]


def with_threads(iters, k):
    out = [0] * k

    def run(i, lo, hi):
        out[i] = work(lo, hi)

    ts = [threading.Thread(target=run, args=(i, lo, hi), daemon=True)
          for i, (lo, hi) in enumerate(slices(iters, k))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sum(out) & MASK


def proc_main(conn, lo, hi):
    conn.send(work(lo, hi))
    conn.close()


def with_processes(ctx, iters, k):
    procs, conns = [], []
    for lo, hi in slices(iters, k):
        r, w = ctx.Pipe(duplex=False)
        p = ctx.Process(target=proc_main, args=(w, lo, hi), daemon=True)
        p.start()
        w.close()
        procs.append(p)
        conns.append(r)
    total = 0
    for c in conns:
        total += c.recv()
        c.close()
    total &= MASK
    for p in procs:
        p.join()
        if p.exitcode != 0:
            sys.exit(f"worker {p.pid} exitcode {p.exitcode}")
    return total


def timed(repeat, fn, *args):
    """Best of `repeat` runs in ms, and the sum (None if runs disagree)."""
    best, sums = None, set()
    for _ in range(repeat):
        t0 = time.perf_counter()
        sums.add(fn(*args))
        ms = (time.perf_counter() - t0) * 1e3
        best = ms if best is None else min(best, ms)
    return (sums.pop() if len(sums) == 1 else None), best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=100000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2)
    a = ap.parse_args()
    # On Ctrl-C the C lesson stops us with SIGTERM.  Leave through SystemExit,
    # so that multiprocessing's exit handler terminates the (daemonic)
    # workers, instead of leaving them to run on as orphans.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    # "fork", as the C lesson does (3.14 made "forkserver" the Linux default).
    ctx = mp.get_context("fork")
    want, serial = timed(a.repeat, work, 0, a.iters)
    print(f"CPython {platform.python_version()}, {a.iters} iterations, "
          f"best of {a.repeat}: serial {serial:.1f} ms")
    print("workers  threads            processes")
    bad = 0
    for k in range(1, a.workers + 1):
        ts, tms = timed(a.repeat, with_threads, a.iters, k)
        ps, pms = timed(a.repeat, with_processes, ctx, a.iters, k)
        bad += (ts != want) + (ps != want)
        print(f"{k:7d}  {tms:7.1f} ms {serial / tms:5.2f}x"
              f"  {pms:7.1f} ms {serial / pms:5.2f}x")
    bad += want is None
    print(f"checksum 0x{want or 0:016x} "
          f"{'rows agree' if not bad else 'MISMATCH'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
