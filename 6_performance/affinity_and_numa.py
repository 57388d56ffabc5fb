"""6_performance/affinity_and_numa.py -- the Python twin of affinity_and_numa.c

The same ping-pong between two processes, pinned with os.sched_setaffinity
(Modules/posixmodule.c: a wrapper of sched_setaffinity(2)).  Python knows
CPUs only as numbers: which two share a core, a cache or a memory node is not
in the stdlib, so the pairs are CPU numbers (0 and 0, 0 and 1) and unbound.

The ball is a RawValue('Q') (a ctypes c_uint64 in a shared mmap, no lock):
the pinger writes odd numbers, the ponger answers with the next even one.
Python has no atomics; one writer at a time and an aligned 8-byte store make
this work on x86-64 and arm64, and the final counts are checked.  Where a
process ran is read from /proc/self/stat (field 39, "processor").

Usage: python3 affinity_and_numa.py [--rounds N] [--seconds X] [--no-bind]
                                    [--csv]
Prints rows for the C lesson's table (or CSV rows with --csv:
python,<pair>,<cpu a>,<cpu b>,<rounds>,<ns per round trip>,,) and exits 1 if
a count was wrong or a pinned process ran elsewhere.
Stdlib only; fork start method, as the C side.
"""
import argparse
import multiprocessing as mp
import os
import sys
import time

STOP = (1 << 64) - 1
SPIN = 100


def last_cpu():
    with open("/proc/self/stat") as f:
        # Field 2 (comm) may hold spaces: count from after its ')'.
        return int(f.read().rsplit(")", 1)[1].split()[36])


def wait_ball(ball, want, deadline_s=2.0):
    """Spin, then yield, until ball == want; False on STOP or time-out."""
    i, deadline = 0, None
    while True:
        v = ball.value
        if v == want or v == STOP:
            return v == want
        i += 1
        if i < SPIN:
            continue
        os.sched_yield()
        if deadline is None:
            deadline = time.monotonic() + deadline_s
        elif i % 1024 == 0 and time.monotonic() > deadline:
            return False


def side(me, cpu, ball, ready, rounds, seconds, out):
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    first = last_cpu()
    with ready.get_lock():
        ready.value += 1
    deadline = time.monotonic() + 5
    while ready.value < 2 and time.monotonic() < deadline:
        os.sched_yield()  # not sleep: the pinger's clock starts next
    n, ok = 0, True
    t0 = time.perf_counter()
    if me == 0:
        while n < rounds and ok:
            ball.value = 2 * n + 1
            ok = wait_ball(ball, 2 * n + 2)
            n += 1
            if n % 256 == 0 and time.perf_counter() - t0 > seconds:
                break
        out[2] = (time.perf_counter() - t0) / max(n, 1) * 1e9
        ball.value = STOP
    else:
        while wait_ball(ball, 2 * n + 1):
            ball.value = 2 * n + 2
            n += 1
        ok = ball.value == STOP
    placed = cpu is None or (first == cpu and last_cpu() == cpu)
    out[me] = n if ok and placed else -1


def ping_pong(name, a, b, rounds, seconds, csv):
    ctx = mp.get_context("fork")
    ball = ctx.RawValue("Q", 0)
    ready = ctx.Value("i", 0)
    out = ctx.RawArray("d", 3)
    procs = [ctx.Process(target=side, args=(k, cpu, ball, ready, rounds,
                                            seconds, out))
             for k, cpu in ((1, b), (0, a))]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)  # each side gives up by itself after a few seconds
        if p.is_alive():
            p.kill()
            p.join()
    ok = all(p.exitcode == 0 for p in procs) and out[0] == out[1] > 0
    a, b = ("-" if cpu is None else cpu for cpu in (a, b))
    if csv:
        print(f"python,{name},{a},{b},{int(out[1])},{out[2]:.1f},,")
    else:
        print(f"  python {name:<15} {a:>4} {b:>4} {int(out[1]):8d} "
              f"{out[2]:14.1f}  ({'exact' if ok else 'WRONG'})")
    return ok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=2000)
    ap.add_argument("--seconds", type=float, default=0.25)
    ap.add_argument("--no-bind", action="store_true")
    ap.add_argument("--csv", action="store_true")
    ap.add_argument("--table", action="store_true", help="(the default)")
    args = ap.parse_args()

    cpus = sorted(os.sched_getaffinity(0))
    if not args.csv:
        print(f"  python: os.cpu_count() = {os.cpu_count()}, "
              f"len(os.sched_getaffinity(0)) = {len(cpus)}; no\n"
              "  cores, caches or nodes: pairs by CPU number")
    pairs = [("unbound", None, None)]
    if not args.no_bind:
        pairs[:0] = [("same CPU", cpus[0], cpus[0])]
        if len(cpus) > 1:
            pairs[1:1] = [("two CPUs", cpus[0], cpus[1])]
    for name, a, b in pairs:
        if not ping_pong(name, a, b, args.rounds, args.seconds, args.csv):
            sys.exit(1)  # fail fast, as the C side


if __name__ == "__main__":
    main()
