"""4_patterns/producer_consumer.py -- the Python twin of producer_consumer.c

P producer processes put the ints (p << 32 | seq) into one
multiprocessing.Queue(capacity); C consumer processes get them until a None
sentinel (one per consumer, put by the parent once every producer has been
joined) and add them up.  One run per shape ("1x1,2x2,1x2,3x1": producers x
consumers), the items split among the producers as the C side splits them
(the first items % P producers put one more).  The clock runs from the first
producer's first put to the last consumer's last get (time.monotonic() is
CLOCK_MONOTONIC, the same clock in every process).  With --pin-1x1 C,P a
1x1 shape runs with its consumer on CPU C and its producer (feeder thread
included) on CPU P, as the C lesson pins its own 1x1; each line ends with
the CPU each side was allowed alone (os.sched_getaffinity), -1 if several.
Pinned or not, this side's rate stayed the same (about 0.20-0.28 M items/s
either way, measured on a 2-CPU VM), and it was no higher with 200000 or
500000 items than with 20000.

Then the pitfall the docs name "Joining processes that use queues": a
producer puts 20000 items into an unbounded Queue() and returns, but the
process cannot exit until its feeder thread has written them all into the
pipe: Queue._start_thread registers Queue._finalize_join as a Finalize
(Lib/multiprocessing/queues.py), and util._exit_function runs it as the
child ends (called from Process._bootstrap in 3.11, registered with atexit
by popen_fork.Popen._launch since 3.12).  The pipe holds only 64 KiB until
someone reads it.  join(timeout=0.5) comes
back with the producer still alive; after the parent drains, it is gone.

Usage: python3 producer_consumer.py [--items N] [--shapes 1x1,...]
                                    [--capacity N] [--pin-1x1 C,P]
Output lines (CSV, no header):
    python,<PxC>,<items>,<seconds>,<items_per_s>,<checksum mod 2**64>,
           <consumer's CPU>,<producer's CPU>   (-1: it may run on several)
    python-join-before-drain,<items>,<alive after join(0.5)>,<alive after drain>
Stdlib only.  Fork start method, as the C lesson.
"""
import argparse
import os
import signal
import sys
import time
import multiprocessing as mp

MASK = (1 << 64) - 1
JOIN_ITEMS = 20000


def pin(cpu, alone, side):
    """Go to cpu (None: stay), then tell where this process may run."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    cpus = os.sched_getaffinity(0)
    alone[side] = min(cpus) if len(cpus) == 1 else -1


def producer(q, p, n, starts, cpu, alone):
    pin(cpu, alone, 1)
    starts[p] = time.monotonic()
    for s in range(n):
        q.put(p << 32 | s)


def consumer(q, c, sums, counts, ends, cpu, alone):
    pin(cpu, alone, 0)
    total = count = 0
    for x in iter(q.get, None):  # the sentinel idiom
        total += x
        count += 1
    ends[c] = time.monotonic()
    sums[c] = total & MASK
    counts[c] = count


def run_shape(ctx, np, nc, items, capacity, cpus):
    # 1x1 pinned as the C side pins it: consumer on cpus[0], producer on
    # cpus[1] (the feeder thread runs in the producer, on its CPU).
    cc, pc = cpus if cpus and np == nc == 1 else (None, None)
    q = ctx.Queue(capacity)
    starts = ctx.Array("d", np, lock=False)
    ends = ctx.Array("d", nc, lock=False)
    sums = ctx.Array("Q", nc, lock=False)
    counts = ctx.Array("q", nc, lock=False)
    alone = ctx.Array("i", 2, lock=False)
    cons = [ctx.Process(target=consumer, args=(q, c, sums, counts, ends, cc,
                                                  alone))
            for c in range(nc)]
    prods = [ctx.Process(target=producer,
                         args=(q, p, items // np + (p < items % np), starts,
                               pc, alone))
             for p in range(np)]
    for x in cons + prods:
        x.start()
    for x in prods:  # safe: the consumers are draining meanwhile
        x.join()
    for _ in range(nc):
        q.put(None)
    for x in cons:
        x.join()
    if sum(counts) != items or any(x.exitcode for x in cons + prods):
        print("python: items lost or a process failed", file=sys.stderr)
        sys.exit(1)
    secs = max(ends) - min(starts)
    print(f"python,{np}x{nc},{items},{secs:.6f},{items / secs:.0f},"
          f"{sum(sums) & MASK},{alone[0]},{alone[1]}", flush=True)


def put_and_return(q, n):
    for i in range(n):
        q.put(i)


def join_before_drain(ctx):
    q = ctx.Queue()  # unbounded: put() never waits, the feeder does
    p = ctx.Process(target=put_and_return, args=(q, JOIN_ITEMS))
    p.start()
    p.join(timeout=0.5)  # without the timeout: forever
    alive = p.is_alive()
    for _ in range(JOIN_ITEMS):
        q.get(timeout=10)
    p.join(timeout=10)
    print(f"python-join-before-drain,{JOIN_ITEMS},{int(alive)},"
          f"{int(p.is_alive())}", flush=True)


def stop(signum, _frame):
    # Stopped by the C lesson (SIGTERM on Ctrl-C): a producer may be
    # blocked on a full queue nobody reads now; kill them all and leave.
    for child in mp.active_children():
        child.kill()
    os._exit(128 + signum)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=20000)
    ap.add_argument("--shapes", default="1x1,2x2,1x2,3x1")
    ap.add_argument("--capacity", type=int, default=1024)
    ap.add_argument("--pin-1x1", default="",
                    help="CONSUMER_CPU,PRODUCER_CPU for 1x1 shapes")
    args = ap.parse_args()
    cpus = tuple(int(v) for v in args.pin_1x1.split(",")) \
        if args.pin_1x1 else None
    ctx = mp.get_context("fork")
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for shape in args.shapes.split(","):
        np, nc = (int(v) for v in shape.split("x"))
        run_shape(ctx, np, nc, args.items, args.capacity, cpus)
    join_before_drain(ctx)


if __name__ == "__main__":
    main()
