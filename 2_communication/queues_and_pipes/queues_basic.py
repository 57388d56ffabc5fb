"""2_communication/queues_and_pipes/queues_basic.py -- the Python twin of
queues_basic.c's benchmark

One producer process puts the ints 0..n-1 into a multiprocessing.Queue; the
main process gets them, checks that they arrive in order, and only then joins
the producer (joining first could deadlock: a process that put items waits
at exit until its feeder thread has pushed them all into the pipe, which a
full pipe does not allow until someone reads).

Every put() appends to a buffer that the producer's feeder thread pickles
and writes to a pipe under a lock; every get() takes the reader lock, reads
a length-prefixed message and unpickles it.  That per-item path is what the
C queue's one copy into shared memory replaces.

Usage: python3 queues_basic.py [--items N]
Output (one line, read by queues_basic.c):
  [python <pid>] multiprocessing.Queue(64), <n> ints, 1 producer -> 1
  consumer, in order: <seconds> s, <millions> M items/s
The clock starts when the producer is about to put its first item (a
monotonic clock shared by both processes) and stops at the last get.
Stdlib only.
"""
import argparse
import multiprocessing as mp
import os
import signal
import sys
import time


def producer(q, n, t0):
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us
    t0.value = time.monotonic()
    for i in range(n):
        q.put(i)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=20000)
    n = ap.parse_args().items
    if n < 1:
        ap.error("--items must be at least 1")

    ctx = mp.get_context("fork")  # as the C lesson: children are forks
    q = ctx.Queue(64)  # the capacity of the C queues
    t0 = ctx.Value("d", 0.0)
    p = ctx.Process(target=producer, args=(q, n, t0))
    p.start()

    def stop(signum, frame):
        # Stopped by the C lesson (SIGTERM) or Ctrl-C: the producer may be
        # blocked in put() on a full pipe, which nobody will read now, and
        # a normal exit would wait for it (and for its feeder thread).
        p.kill()
        p.join()
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    wrong = sum(q.get() != i for i in range(n))  # drain all, even if wrong
    t1 = time.monotonic()
    p.join()  # after draining: see the docstring
    if wrong or p.exitcode != 0:
        print(f"[python {os.getpid()}] items out of order or producer "
              "failed", file=sys.stderr)
        return 1
    secs = t1 - t0.value
    print(f"[python {os.getpid()}] multiprocessing.Queue(64), {n} ints, "
          f"1 producer -> 1 consumer, in order: {secs:.6f} s, "
          f"{n / secs / 1e6:.2f} M items/s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
