"""6_performance/ipc_cost_table.py -- the Python twin of ipc_cost_table.c

The same measurements for what multiprocessing offers:
  Pipe()   a socketpair (Lib/multiprocessing/connection.py); send_bytes puts
           a 4-byte length header in front of every message.
  Queue()  put() hands the object to a feeder thread that pickles it into a
           pipe (os.pipe); get() reads the bytes under a lock and unpickles
           them after releasing it (Lib/multiprocessing/queues.py).
  Manager  a proxy call pickles (id, method, args, kwds) over a socket to
           the manager process, which runs it and pickles the result back
           (BaseProxy._callmethod, Lib/multiprocessing/managers.py).
  Lock()   a SemLock over a POSIX semaphore
           (Modules/_multiprocessing/semaphore.c).
Every message is compared with what was sent; the lock guards a read, add
one, write back of a shared counter that must come out exact.

Usage: python3 ipc_cost_table.py [--rounds N] [--messages N] [--iters N]
                                 [--repeat N] [--csv]
Prints rows for the C lesson's table (CSV rows with --csv) and exits 1 if a
message or a count was wrong.  Stdlib only; fork start method, as the C side.
"""
import argparse
import multiprocessing as mp
import os
import statistics
import sys
import time

BIG = 65536
BLOCK = bytes(range(256)) * (BIG // 256)


def stamp(i, size):
    return i.to_bytes(8, "little") + BLOCK[8:size]


def intact(msg, i, size):
    return msg[:8] == i.to_bytes(8, "little") and msg[8:] == BLOCK[8:size]


# ---- the far side of each measurement ------------------------------------

def pipe_echo(conn, n, size, rt):
    good = 0
    conn.send_bytes(b"ready")  # the clock starts after this
    for i in range(n):
        msg = conn.recv_bytes()
        if rt:
            conn.send_bytes(msg)
        else:
            good += intact(msg, i, size)
    if not rt:
        conn.send_bytes(good.to_bytes(8, "little"))


def queue_echo(qin, qout, n, size, rt):
    good = 0
    qout.put(b"ready")
    for i in range(n):
        msg = qin.get()
        if rt:
            qout.put(msg)
        else:
            good += intact(msg, i, size)
    if not rt:
        qout.put(good.to_bytes(8, "little"))


def locked_adds(lock, counter, iters, times, k, go):
    # Each on its own CPU, as the C side: forked workers start on their
    # parent's CPU, and two that never run at once never contend.
    cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpus[k % len(cpus)]})
    go.wait()
    times[2 * k] = time.monotonic()  # CLOCK_MONOTONIC: one clock for all
    for _ in range(iters):
        with lock:
            counter.value = counter.value + 1  # racy without the lock
    times[2 * k + 1] = time.monotonic()


# ---- the near side -------------------------------------------------------

def pipe_run(ctx, n, size, rt):
    a, b = ctx.Pipe()
    p = ctx.Process(target=pipe_echo, args=(b, n, size, rt))
    p.start()
    a.recv_bytes()
    bad, t = 0, time.perf_counter()
    for i in range(n):
        a.send_bytes(stamp(i, size))
        if rt:
            bad += not intact(a.recv_bytes(), i, size)
    if not rt:
        bad += int.from_bytes(a.recv_bytes(), "little") != n
    t = time.perf_counter() - t
    p.join()
    return t, bad + (p.exitcode != 0)


def queue_run(ctx, n, size, rt):
    q1, q2 = ctx.Queue(), ctx.Queue()
    p = ctx.Process(target=queue_echo, args=(q1, q2, n, size, rt))
    p.start()
    q2.get()
    bad, t = 0, time.perf_counter()
    for i in range(n):
        q1.put(stamp(i, size))
        if rt:
            bad += not intact(q2.get(), i, size)
    if not rt:
        bad += int.from_bytes(q2.get(), "little") != n
    t = time.perf_counter() - t
    p.join()
    return t, bad + (p.exitcode != 0)


def manager_run(ctx, n, manager):
    d = manager.dict({"k": 42})
    bad, t = 0, time.perf_counter()
    for _ in range(n):
        bad += d.get("k") != 42
    return time.perf_counter() - t, bad


def lock_run(ctx, procs, iters):
    lock, counter = ctx.Lock(), ctx.RawValue("q", 0)
    times, go = ctx.RawArray("d", 2 * procs), ctx.Barrier(procs)
    ps = [ctx.Process(target=locked_adds,
                      args=(lock, counter, iters, times, k, go))
          for k in range(procs)]
    for p in ps:
        p.start()
    for p in ps:
        p.join()
    bad = counter.value != procs * iters or any(p.exitcode for p in ps)
    return max(times[1::2]) - min(times[0::2]), bad  # wall clock


def report(csv, table, name, param, values, prec):
    med, lo, hi = statistics.median(values), min(values), max(values)
    if csv:
        print(f"{table},py {name},{param},{med:.3f},{lo:.3f},{hi:.3f},,")
    else:
        print(f"{'py ' + name:<18} {param:>5} {med:8.{prec}f} "
              f"{lo:8.{prec}f}..{hi:<8.{prec}f}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=300)
    ap.add_argument("--messages", type=int, default=64)
    ap.add_argument("--iters", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--csv", action="store_true")
    args = ap.parse_args()
    ctx = mp.get_context("fork")
    n, m, it, rep = args.rounds, args.messages, args.iters, args.repeat
    bad = 0

    if not args.csv:
        print("python: round trip, us; bandwidth, MB/s; lock pair, ns")
    with ctx.Manager() as manager:
        for name, run in (("Pipe", lambda: pipe_run(ctx, n, 8, True)),
                          ("Queue", lambda: queue_run(ctx, n, 8, True)),
                          ("Manager call", lambda: manager_run(ctx, n,
                                                               manager))):
            res = [run() for _ in range(rep)]
            bad += sum(b for _, b in res)
            report(args.csv, "latency_us", name, "8",
                   [t * 1e6 / n for t, _ in res], 2)
    for name, run in (("Pipe", pipe_run), ("Queue", queue_run)):
        res = [run(ctx, m, BIG, False) for _ in range(rep)]
        bad += sum(b for _, b in res)
        report(args.csv, "bandwidth_MBps", name, str(BIG),
               [m * BIG / t / 1e6 for t, _ in res], 0)
    for procs in (1, 2):
        res = [lock_run(ctx, procs, it) for _ in range(rep)]
        bad += sum(b for _, b in res)
        report(args.csv, "lock_ns", "Lock", str(procs),
               [t * 1e9 / (procs * it) for t, _ in res], 1)
    if bad:
        print(f"python: {bad} wrong results (a message or a counter)")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
