"""4_patterns/pipeline_fanout_fanin.py -- the Python twin of
pipeline_fanout_fanin.c

A reader process puts (seq, value) records into a multiprocessing.Queue
(capacity); N worker processes get them, apply the same transform (rounds of
splitmix64's mixer, modulo 2**64) and put them into a second Queue
(capacity); a writer process gets them, puts them back in input order with
a dict as its reorder buffer, and folds them into the same order-sensitive
checksum as the C writer.  None sentinels cascade the shutdown: the reader
puts one per worker, each worker passes one on, the writer stops after N.
The clock runs from the reader's first put to the writer's last record.

Then a dead downstream: the writer is killed while a worker still has
records to put.  Every process that holds a Queue holds both ends of its
pipe (a forked child inherits the Queue object with its _reader and
_writer; under spawn Queue.__getstate__ passes both,
Lib/multiprocessing/queues.py), so no EPIPE ever comes, and the worker's
put() waits on the full Queue's BoundedSemaphore.  With put(timeout=0.5)
it raises queue.Full; without a timeout it would wait forever.

Usage: python3 pipeline_fanout_fanin.py [--items N] [--workers N]
                                        [--capacity N] [--work N]
Output lines (CSV, no header):
    python,1x<W>x1,<items>,<seconds>,<items_per_s>,<checksum>
    python-dead-downstream,<1 if the worker's put was still blocked after 0.5 s>
Stdlib only.  Fork start method, as the C lesson.
"""
import argparse
import os
import queue
import signal
import sys
import time
import multiprocessing as mp

MASK = (1 << 64) - 1
FNV = 0x100000001B3


def mix(z):
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def transform(v, work):
    for _ in range(work):
        v = mix((v + 0x9E3779B97F4A7C15) & MASK)
    return v


def reader(q1, n, nworkers, t0):
    t0.value = time.monotonic()
    for i in range(n):
        q1.put((i, mix(i)))
    for _ in range(nworkers):
        q1.put(None)


def worker(q1, q2, work):
    for seq, value in iter(q1.get, None):
        q2.put((seq, transform(value, work)))
    q2.put(None)


def writer(q2, nworkers, res, hsum):
    held, nxt, h, ends = {}, 0, 0, 0
    while ends < nworkers:
        rec = q2.get()
        if rec is None:
            ends += 1
            continue
        held[rec[0]] = rec[1]
        while nxt in held:  # the reorder buffer
            h = ((h ^ held.pop(nxt)) * FNV) & MASK
            nxt += 1
    res[0], res[1], res[2] = time.monotonic(), float(nxt), float(len(held))
    hsum.value = h


def run(ctx, args):
    q1, q2 = ctx.Queue(args.capacity), ctx.Queue(args.capacity)
    t0 = ctx.Value("d", 0.0, lock=False)
    res = ctx.Array("d", 3, lock=False)
    hsum = ctx.Value("Q", 0, lock=False)
    procs = [ctx.Process(target=writer,
                         args=(q2, args.workers, res, hsum))]
    procs += [ctx.Process(target=worker, args=(q1, q2, args.work))
              for _ in range(args.workers)]
    procs.append(ctx.Process(target=reader,
                             args=(q1, args.items, args.workers, t0)))
    for p in procs:
        p.start()
    for p in reversed(procs):  # the reader first: queues drain meanwhile
        p.join()
    if any(p.exitcode for p in procs) or res[1] != args.items or res[2]:
        print("python: a stage failed or records were lost",
              file=sys.stderr)
        sys.exit(1)
    secs = res[0] - t0.value
    print(f"python,1x{args.workers}x1,{args.items},{secs:.6f},"
          f"{args.items / secs:.0f},{hsum.value}", flush=True)


def stuck_worker(q2, capacity, flag):
    try:
        for i in range(capacity + 1):  # one more than fits
            q2.put((i, i), timeout=0.5)
    except queue.Full:
        flag.value = 1


def dead_downstream(ctx, capacity):
    q2 = ctx.Queue(capacity)
    w = ctx.Process(target=writer, args=(q2, 1, [0.0] * 3, None))
    w.start()
    w.kill()  # the writer dies before reading anything
    w.join()
    flag = ctx.Value("i", 0, lock=False)
    p = ctx.Process(target=stuck_worker, args=(q2, capacity, flag))
    p.start()
    p.join(timeout=30)
    if p.is_alive():
        p.kill()
        p.join()
    print(f"python-dead-downstream,{flag.value}", flush=True)


def stop(signum, _frame):
    for child in mp.active_children():
        child.kill()
    os._exit(128 + signum)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=20000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--capacity", type=int, default=64)
    ap.add_argument("--work", type=int, default=20)
    args = ap.parse_args()
    ctx = mp.get_context("fork")
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    run(ctx, args)
    dead_downstream(ctx, args.capacity)


if __name__ == "__main__":
    main()
