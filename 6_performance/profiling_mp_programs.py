"""6_performance/profiling_mp_programs.py -- the Python twin of
profiling_mp_programs.c: the same planted program, profiled per process
with cProfile

Each task takes a multiprocessing.Lock and computes while holding it (the
hot lock); worker 0 owns three times the share of the others (the
straggler).  The fix:
compute outside the lock and add once per worker, and take the tasks
CHUNK at a time from a shared counter.  Every worker runs under its own
cProfile.Profile() and sends back what pstats found for crunch() and for
SemLock.acquire() (a C method: cProfile lists it as
"<method 'acquire' of '_multiprocessing.SemLock' objects>").  cProfile's
clock is time.perf_counter (Modules/_lsprof.c, when no timer is given):
wall time, so time blocked in acquire() shows up in the profile.

Usage: python3 profiling_mp_programs.py [--workers N] [--tasks N] [--work N]
Output lines (CSV, no header):
    python,<planted|fixed>,<worker>,<tasks>,<seconds in the worker>,
           <crunch calls>,<crunch s>,<acquire calls>,<acquire s>
    python-total,<planted|fixed>,<sum of the results mod 2**64>
Stdlib only; fork workers, as the C side.
"""
import argparse
import cProfile
import multiprocessing as mp
import pstats
import sys

MASK = (1 << 64) - 1
A, C = 6364136223846793005, 1442695040888963407
CHUNK = 8


def crunch(x, n):
    for _ in range(n):
        x = (x * A + C) & MASK
    return x


def planted(w, args, lock, total, nxt):
    per = args.tasks // (args.workers + 2)
    big = args.tasks - per * (args.workers - 1)
    lo = 0 if w == 0 else big + (w - 1) * per
    hi = big if w == 0 else lo + per
    for i in range(lo, hi):
        lock.acquire()
        total.value = (total.value + crunch(i + 1, args.work)) & MASK
        lock.release()
    return hi - lo


def fixed(w, args, lock, total, nxt):
    mine, done = 0, 0
    while True:
        with nxt.get_lock():
            lo = nxt.value
            nxt.value += CHUNK
        if lo >= args.tasks:
            break
        for i in range(lo, min(lo + CHUNK, args.tasks)):
            mine += crunch(i + 1, args.work)
            done += 1
    lock.acquire()
    total.value = (total.value + mine) & MASK
    lock.release()
    return done


def worker(mode, w, args, lock, total, nxt, out):
    pr = cProfile.Profile()
    n = pr.runcall(mode, w, args, lock, total, nxt)
    found = {"crunch": [0, 0.0], "acquire": [0, 0.0]}
    st = pstats.Stats(pr).stats
    for (_, _, name), (_, ncalls, tottime, _, _) in st.items():
        key = "crunch" if name == "crunch" else (
            "acquire" if "acquire" in name and "SemLock" in name else None)
        if key:
            found[key][0] += ncalls
            found[key][1] += tottime
    secs = sum(tt for (_, _, tt, _, _) in st.values())
    out.send((w, n, secs, *found["crunch"], *found["acquire"]))
    out.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--tasks", type=int, default=400)
    ap.add_argument("--work", type=int, default=2000)
    args = ap.parse_args()
    ctx = mp.get_context("fork")
    for mode in (planted, fixed):
        lock = ctx.Lock()
        total = ctx.Value("Q", 0, lock=False)  # guarded by lock
        nxt = ctx.Value("l", 0)
        pipes = [ctx.Pipe(duplex=False) for _ in range(args.workers)]
        ps = [ctx.Process(target=worker, args=(mode, w, args, lock, total,
                                               nxt, wr))
              for w, (_, wr) in enumerate(pipes)]
        for p in ps:
            p.start()
        for _, wr in pipes:
            wr.close()
        rows = [rd.recv() for rd, _ in pipes]
        for p in ps:
            p.join()
            if p.exitcode != 0:
                sys.exit(f"worker exit code {p.exitcode}")
        for w, n, secs, cc, cs, ac, at in rows:
            print(f"python,{mode.__name__},{w},{n},{secs:.6f},{cc},{cs:.6f},"
                  f"{ac},{at:.6f}", flush=True)
        print(f"python-total,{mode.__name__},{total.value}", flush=True)


if __name__ == "__main__":
    main()
