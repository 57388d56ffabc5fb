"""6_performance/cpu_vs_io_bound.py -- the Python twin of cpu_vs_io_bound.c

The same two tasks: CPU-bound (n steps of a 64-bit LCG, masked to 64 bits
as C wraps) and I/O-bound (wait for a pipe that stays silent until a
timeout: select() releases the GIL while it waits).  Each runs on 1, 2,
4 ... threads and fork processes.  With the GIL (Python/ceval_gil.c; a
waiting thread asks for it every sys.getswitchinterval() = 5 ms), CPU-bound
threads take turns: no speedup.  Processes each have their own interpreter
and GIL: they scale up to the CPU count.  cpu_vs_io_bound.c runs this file
and checks the checksums; run alone it prints the same lines.

Usage: python3 cpu_vs_io_bound.py [--tasks N] [--work N] [--io-ms N]
                                  [--max-workers N] [--repeat N]
Output lines (CSV, no header):
    python-gil,<1 with a GIL, 0 on a free-threaded build>
    python,<cpu|io>,<threads|processes>,<workers>,<seconds>,<checksum>,
           <CPU seconds: user+sys of the threads, or of the processes>
Stdlib only.
"""
import argparse
import multiprocessing as mp
import os
import select
import sys
import threading
import time

MASK = (1 << 64) - 1
A, C = 6364136223846793005, 1442695040888963407


def crunch(x, n):
    for _ in range(n):
        x = (x * A + C) & MASK
    return x


def wait_io(ms, task, r):
    # Nothing is ever written to the pipe: select() returns at the timeout.
    ready, _, _ = select.select([r], [], [], ms / 1000)
    return task + (0 if ready else 1)


def worker(kind, w, nw, args, r, out):
    """Tasks w, w + nw, ...: results into out (a list, or a pipe)."""
    res = []
    for i in range(w, args.tasks, nw):
        res.append(crunch(i + 1, args.work) if kind == "cpu"
                   else wait_io(args.io_ms, i, r))
    if isinstance(out, list):
        out.extend(res)
    else:
        out.send(res)
        out.close()


def run(kind, engine, nw, args, r):
    """One run; returns (seconds, checksum, CPU seconds of the workers)."""
    t, c0, t0 = time.perf_counter(), time.process_time(), os.times()
    results = []
    if engine == "threads":
        ts = [threading.Thread(target=worker, args=(kind, w, nw, args, r,
                                                    results))
              for w in range(nw)]
        for x in ts:
            x.start()
        for x in ts:
            x.join()
    else:
        # fork, as the C side (3.14 made forkserver the default on Linux:
        # gh-84559, Lib/multiprocessing/context.py).
        ctx = mp.get_context("fork")
        pipes = [ctx.Pipe(duplex=False) for _ in range(nw)]
        ps = [ctx.Process(target=worker, args=(kind, w, nw, args, r, wr))
              for w, (_, wr) in enumerate(pipes)]
        for p in ps:
            p.start()
        for _, wr in pipes:
            wr.close()
        for rd, _ in pipes:
            results.extend(rd.recv())
        for p in ps:
            p.join()
            if p.exitcode != 0:
                sys.exit(f"worker exit code {p.exitcode}")
    s, c1, t1 = time.perf_counter() - t, time.process_time(), os.times()
    # Threads: this process's CPU time (CLOCK_PROCESS_CPUTIME_ID, to the
    # ns); processes: its reaped children's (os.times: clock ticks).
    cpu = (c1 - c0 if engine == "threads"
           else t1.children_user + t1.children_system
           - t0.children_user - t0.children_system)
    return s, sum(results) & MASK, cpu


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=8)
    ap.add_argument("--work", type=int, default=40000)
    ap.add_argument("--io-ms", type=int, default=8)
    ap.add_argument("--max-workers", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    gil = getattr(sys, "_is_gil_enabled", lambda: True)()  # 3.13+
    print(f"python-gil,{int(gil)}", flush=True)
    r, w = os.pipe()
    for kind in ("cpu", "io"):
        for engine in ("threads", "processes"):
            nw = 1
            while nw <= args.max_workers:
                # The best of --repeat runs: other programs only add time.
                s, total, cpu = min(run(kind, engine, nw, args, r)
                                    for _ in range(args.repeat))
                print(f"python,{kind},{engine},{nw},{s:.6f},{total},"
                      f"{cpu:.6f}", flush=True)
                nw *= 2
    os.close(r)
    os.close(w)


if __name__ == "__main__":
    main()
