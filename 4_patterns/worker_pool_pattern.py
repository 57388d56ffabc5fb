"""4_patterns/worker_pool_pattern.py -- the Python twin of worker_pool_pattern.c

The same job on concurrent.futures.ProcessPoolExecutor: task i spins for
US microseconds, then returns splitmix64(i).  executor.map(fn, items,
chunksize=B) sends B items per work item (Lib/concurrent/futures/process.py,
_process_chunk), so chunksize is the batch of the C lesson.

Then a worker is SIGKILLed mid-task.  The executor's manager thread waits on
the result pipe and on every worker's sentinel
(wait_result_broken_or_wakeup); a sentinel that fires without a result marks
the pool broken (_terminate_broken): every pending future fails with
BrokenProcessPool and later submits raise it too.  Nothing hangs, but
nothing is retried either.  (multiprocessing.Pool, by contrast, replaces the
worker and never sends its task again: the call waits forever, bpo-22393.)

Usage: python3 worker_pool_pattern.py [--workers N] [--tasks N] [--sizes 0,10]
           [--batch-tasks N] [--batches 1,100] [--kill-tasks N]
Output lines (CSV, no header):
    python,<us>,<batch>,<tasks>,<seconds>,<tasks_per_s>,<checksum>
    [python PID] item N SIGKILLed its worker: ... (with --kill-tasks N)
Stdlib only.  Fork workers, as the C pool.
"""
import argparse
import concurrent.futures as cf
import multiprocessing as mp
import os
import signal
import time

MASK = (1 << 64) - 1
MAIN_PID = os.getpid()


def splitmix64(x):
    z = (x + 0x9E3779B97F4A7C15) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def task(i, us=0, die=False):
    if die:
        os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer would
    end = time.perf_counter_ns() + us * 1000
    while time.perf_counter_ns() < end:
        pass
    return splitmix64(i)


def timed(ex, n, us, batch):
    t = time.perf_counter()
    total = 0
    for r in ex.map(task, range(n), [us] * n, chunksize=batch):
        total += r
    s = time.perf_counter() - t
    print(f"python,{us},{batch},{n},{s:.6f},{n / s:.0f},{total & MASK}",
          flush=True)


def kill_one(ctx, workers, n):
    """Item n // 2 SIGKILLs its worker: what do the futures say?"""
    with cf.ProcessPoolExecutor(workers, mp_context=ctx,
                                initializer=default_sigterm) as ex:
        futs = [ex.submit(task, i, 100, i == n // 2) for i in range(n)]
        results = broken = 0
        for f in futs:
            try:
                f.result(timeout=30)
                results += 1
            except cf.process.BrokenProcessPool:
                broken += 1
        try:
            ex.submit(task, 0)
            after = "accepted"
        except cf.process.BrokenProcessPool:
            after = "BrokenProcessPool"
    print(f"[python {os.getpid()}] item {n // 2} SIGKILLed its worker: "
          f"{results} of {n} futures done, {broken} raised "
          f"BrokenProcessPool; a new submit: {after}", flush=True)


def stop(signum, _frame):
    """SIGTERM from the C lesson (Ctrl-C): kill the workers, leave at once."""
    if os.getpid() == MAIN_PID:
        for child in mp.active_children():  # the executors' workers
            child.kill()
    os._exit(128 + signum)


def default_sigterm():
    """Each worker's initializer: SIGTERM's default action again, so that
    the executor's terminate() (on a broken pool) ends a worker at once
    instead of running our handler in it."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--tasks", type=int, default=2000)
    ap.add_argument("--sizes", default="0,10,100")
    ap.add_argument("--batch-tasks", type=int, default=10000)
    ap.add_argument("--batches", default="1,100,1000")
    ap.add_argument("--kill-tasks", type=int, default=0)
    args = ap.parse_args()

    ctx = mp.get_context("fork")
    signal.signal(signal.SIGTERM, stop)
    with cf.ProcessPoolExecutor(args.workers, mp_context=ctx,
                                initializer=default_sigterm) as ex:
        list(ex.map(task, range(4 * args.workers)))  # start-up out of the way
        for us in map(int, args.sizes.split(",")):
            timed(ex, args.tasks, us, 1)
        for b in map(int, args.batches.split(",")):
            timed(ex, args.batch_tasks, 0, b)
    if args.kill_tasks:
        kill_one(ctx, args.workers, args.kill_tasks)


if __name__ == "__main__":
    main()
