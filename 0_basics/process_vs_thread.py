"""0_basics/process_vs_thread.py -- the Python twin of process_vs_thread.c

The same CPU-bound work (the sum of splitmix64(i) for i < ITERS, modulo
2**64) split over 1..N threading.Thread and 1..N multiprocessing.Process
workers.  In the default CPython build only the thread that holds the GIL
runs bytecode, so the thread column stays near 1x while processes scale with
the cores.  process_vs_thread.c runs this file and checks the checksum.

Usage: python3 process_vs_thread.py [--iters N (300000)] [--workers N (2)]
                                    [--repeat N (2)]
Every line starts with "[python <pid>]"; the C lesson shows them as they
are and reads the checksum, the GIL and the 2-worker row from them.
As in the C lesson, one untimed serial run warms up first, the runs take
turns (serial, 1 thread, 1 process, 2 threads, ...), best of repeat, and
each cell also shows in brackets its "own" speedup: with every time less
the time its workers waited for a CPU held by another program
(/proc/thread-self/schedstat).  A thread waiting for the GIL sleeps (on a
condition variable: take_gil() in Python/ceval_gil.c, ceval_gil.h in older
versions), so that time still counts.
sys._is_gil_enabled() (new in 3.13) is True unless CPython was built with
Py_GIL_DISABLED and runs with the GIL off (Python/sysmodule.c).
Stdlib only.  Results come back through mp.Pipe(duplex=False), which is a
plain os.pipe() on Linux and leaves nothing in /dev/shm.
"""
import argparse
import multiprocessing as mp
import os
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


def cpu_wait_ns():
    """How long this thread has waited for a CPU that someone else held, in
    ns (/proc/thread-self/schedstat, second field), or None if unknown."""
    try:
        with open("/proc/thread-self/schedstat") as f:
            return int(f.read().split()[1])
    except (OSError, IndexError, ValueError):
        return None


def measured(lo, hi, since_fork=False):
    """work(lo, hi), and how long this thread waited for a CPU meanwhile --
    in a forked worker, since the fork (the kernel starts a new task's
    counts at 0), so that its start-up is covered too."""
    w0 = 0 if since_fork else cpu_wait_ns()
    s = work(lo, hi)
    w1 = cpu_wait_ns()
    return s, None if w0 is None or w1 is None else w1 - w0


def combine(results, started_wait):
    """The total of the workers' (sum, wait) pairs, and the time they waited
    for a CPU: the main thread's wait while it started them (which delays
    them all) plus the longest wait of one worker."""
    waits = [w for _, w in results] + [started_wait]
    return (sum(s for s, _ in results) & MASK,
            None if None in waits else started_wait + max(waits[:-1]))


def slices(iters, k):
    return [(iters * i // k, iters * (i + 1) // k) for i in range(k)]


def with_threads(iters, k):
    out = [(0, None)] * k

    def run(i, lo, hi):
        out[i] = measured(lo, hi)

    ts = [threading.Thread(target=run, args=(i, lo, hi), daemon=True)
          for i, (lo, hi) in enumerate(slices(iters, k))]
    w0 = cpu_wait_ns()
    for t in ts:
        t.start()
    w1 = cpu_wait_ns()
    for t in ts:
        t.join()
    return combine(out, None if None in (w0, w1) else w1 - w0)


def proc_main(conn, lo, hi):
    conn.send(measured(lo, hi, since_fork=True))
    conn.close()


def with_processes(ctx, iters, k):
    procs, conns = [], []
    w0 = cpu_wait_ns()
    for lo, hi in slices(iters, k):
        r, w = ctx.Pipe(duplex=False)
        p = ctx.Process(target=proc_main, args=(w, lo, hi), daemon=True)
        p.start()
        w.close()
        procs.append(p)
        conns.append(r)
    w1 = cpu_wait_ns()
    out = []
    for c in conns:
        out.append(c.recv())
        c.close()
    for p in procs:
        p.join()
        if p.exitcode != 0:
            sys.exit(f"worker {p.pid} exitcode {p.exitcode}")
    return combine(out, None if None in (w0, w1) else w1 - w0)


def say(text):
    print(f"[python {os.getpid()}] {text}", flush=True)


def timed(cell, r, fn, *args):
    """Run fn once.  cell keeps [best ms, set of sums, best own ms]: own is
    the time less the longest a worker waited for a CPU (None: unknown)."""
    t0 = time.perf_counter()
    total, wait_ns = fn(*args)
    ms = (time.perf_counter() - t0) * 1e3
    own = None if wait_ns is None else ms - wait_ns / 1e6
    if r == 0:
        cell[:] = [ms, set(), own]
    cell[0] = min(cell[0], ms)
    cell[1].add(total)
    cell[2] = None if own is None or cell[2] is None else min(cell[2], own)


def cell_text(serial, cell, k):
    """"time, speedup (own speedup)" of one table cell.  Past the CPUs we
    may use, our own workers wait for each other, which own times would
    leave out too: shown as "-", as the C lesson does."""
    own = "(  -  )" if None in (serial[2], cell[2]) or \
        k > len(os.sched_getaffinity(0)) else f"({serial[2] / cell[2]:4.2f}x)"
    return f"{cell[0]:6.1f} ms {serial[0] / cell[0]:4.2f}x {own}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=300000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2)
    a = ap.parse_args()
    # On Ctrl-C the C lesson stops us with SIGTERM.  Leave through SystemExit,
    # so that multiprocessing's exit handler terminates the (daemonic)
    # workers, instead of leaving them to run on as orphans.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    # "fork", as the C lesson does (3.14 made "forkserver" the Linux default).
    ctx = mp.get_context("fork")
    gil = getattr(sys, "_is_gil_enabled", lambda: True)()  # 3.13+
    work(0, a.iters // 4)  # warm-up, untimed
    serial, ths, prs = [], [[] for _ in range(a.workers + 1)], \
        [[] for _ in range(a.workers + 1)]
    for r in range(a.repeat):
        timed(serial, r, measured, 0, a.iters)
        for k in range(1, a.workers + 1):
            timed(ths[k], r, with_threads, a.iters, k)
            timed(prs[k], r, with_processes, ctx, a.iters, k)
    want = serial[1].pop() if len(serial[1]) == 1 else None
    say(f"CPython {platform.python_version()} "
        f"(GIL {'enabled' if gil else 'disabled'}), {a.iters} iterations, "
        f"best of {a.repeat}: serial {serial[0]:.1f} ms")
    say("workers  threads               processes")
    bad = want is None
    for k in range(1, a.workers + 1):
        bad += (ths[k][1] != {want}) + (prs[k][1] != {want})
        say(f"{k:7d}  {cell_text(serial, ths[k], k)}  "
            f"{cell_text(serial, prs[k], k)}")
    say(f"checksum 0x{want or 0:016x} "
        + ("rows agree" if not bad else "MISMATCH"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
