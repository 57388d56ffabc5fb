"""3_pools/starmap_async.py -- the Python twin of starmap_async.c, steps 3 and 4

A failing task re-raised at get(), and a worker killed in the middle of a
starmap_async: the pool forks a replacement, but the lost chunk is never sent
again, so the call never completes (bpo-22393, gh-66587).  Standard library
only.  Run by starmap_async.c, or alone:

    python3 starmap_async.py [ITEMS (1000)] [TIMEOUT_S (0.5)]

Exits 0 whatever Python does, and says what it saw.
"""
import multiprocessing as mp
import os
import signal
import sys
import time

MOD = 1000003


def powmod(base, exp, mod, die=False):
    if die:
        os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer would
    return pow(base, exp, mod)


def say(text):
    print(f"[python {os.getpid()}] {text}", flush=True)


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    timeout = float(sys.argv[2]) if len(sys.argv) > 2 else 0.5
    args = [(i + 2, 100 + i % 7, MOD) for i in range(n)]
    bad = (n * 3 // 10, n * 7 // 10)

    with mp.get_context("fork").Pool(2) as pool:
        # 3. Two items with mod 0: get() re-raises one ValueError, without
        #    the item's index, and every result is dropped.
        failing = list(args)
        for i in bad:
            failing[i] = (i + 2, 3, 0)
        try:
            pool.starmap_async(powmod, failing).get(timeout=10)
            say("3. starmap_async with mod=0 succeeded (unexpected)")
        except ValueError as e:
            say(f"3. starmap_async with mod=0 at items {bad[0]} and {bad[1]}: "
                f"get() raised ValueError({e}): which item? the results? gone")

        # 4. One item kills its worker.  The worker handler replaces it,
        #    the pool serves new calls, and the lost chunk never comes back.
        dying = list(args)
        dying[n // 2] = args[n // 2] + (True,)
        t0 = time.monotonic()
        r = pool.starmap_async(powmod, dying)
        try:
            r.get(timeout=timeout)
            say("4. the call survived its worker's death (fixed in this Python?)")
        except mp.TimeoutError:
            two = pool.apply(powmod, (2, 10, MOD))
            say(f"4. item {n // 2} SIGKILLed its worker: get(timeout={timeout}) "
                f"raised TimeoutError after {time.monotonic() - t0:.2f} s; a new "
                f"apply() on the same pool gives {two}, and the starmap is still "
                f"ready()={r.ready()}: without a timeout, get() waits forever")
    # leaving "with" calls terminate(): the stuck call is abandoned


if __name__ == "__main__":
    main()
