"""5_advanced/initializer_finalizer.py -- the Python twin of
initializer_finalizer.c

Pool(initializer=...) has no finalizer=.  What people use instead, and when it
runs: multiprocessing.util.Finalize(None, fn, exitpriority=N), run by
util._exit_function when a worker process ends normally (after
maxtasksperchild tasks, or at close() + join()); atexit.register() in the
initializer, which forked workers honour only since 3.13 (gh-83856:
Lib/multiprocessing/popen_fork.py now runs atexit._run_exitfuncs() before
os._exit()).  "with Pool() as p:" calls terminate() on the way out: the task
handler still sends each worker its None sentinel, and terminate() SIGTERMs
the workers that have not exited by then (Pool._terminate_pool), so whether
a worker's Finalize runs is a race.  And an initializer that raises:
the worker dies, Pool's _worker_handler thread starts another
(Pool._maintain_pool in Lib/multiprocessing/pool.py), which dies too, and
map() never returns.  Standard library only.  Run by initializer_finalizer.c,
or alone:

    python3 initializer_finalizer.py [DIR (a temporary one)]

Its last line sums it up for the C side:
    python: version=3.11 workers=4 finalize=4 atexit=0 terminated_finalize=2
            failing_starts=57 ready=0                            (one line)
"""
import atexit
import multiprocessing as mp
import os
import sys
import tempfile
import time
from multiprocessing import util


def say(text):
    print(f"[python {os.getpid()}] {text}", flush=True)


def note(path, what):
    with open(path, "a") as f:
        f.write(f"{what} {os.getpid()}\n")


def init_ok(path):
    note(path, "open")
    util.Finalize(None, note, args=(path, "finalize"), exitpriority=10)
    atexit.register(note, path, "atexit")


def init_fail(path):
    # Counted in a file, not a Value: terminate() may SIGTERM a worker
    # while it holds a Value's lock, and reading .value would then wait
    # for that lock forever -- the lesson of process_inheritance.c.
    note(path, "start")
    sys.stderr = open(os.devnull, "w")  # keep the tracebacks quiet
    raise RuntimeError("the initializer failed")


def square(x):
    return x * x


def count(path, what):
    with open(path) as f:
        return sum(1 for line in f if line.startswith(what + " "))


def main(d):
    ctx = mp.get_context("fork")
    path = os.path.join(d, "log")
    pool = ctx.Pool(2, initializer=init_ok, initargs=(path,),
                    maxtasksperchild=2)
    pool.map(square, range(8), chunksize=1)
    pool.close()
    pool.join()
    opened, fin, ax = (count(path, w)
                       for w in ("open", "finalize", "atexit"))
    say(f"Pool(2, maxtasksperchild=2), 8 tasks, close+join: "
        f"{opened} workers, util.Finalize ran {fin}, atexit ran {ax}")

    path2 = os.path.join(d, "log2")
    with ctx.Pool(2, initializer=init_ok, initargs=(path2,)) as pool:
        pool.map(square, range(8))
    time.sleep(0.1)
    tfin = count(path2, "finalize") + count(path2, "atexit")
    say(f"'with Pool() as p:' (terminate): Finalize and atexit ran "
        f"{tfin} times in {count(path2, 'open')} workers -- a race with "
        f"the SIGTERM")

    path3 = os.path.join(d, "log3")
    pool = ctx.Pool(2, initializer=init_fail, initargs=(path3,))
    # chunksize given: the default divides by len(pool._pool), which is 0
    # for a moment whenever every worker has just died (ZeroDivisionError
    # from Pool._map_async).
    r = pool.map_async(square, range(4), chunksize=1)
    r.wait(0.5)
    ready = r.ready()
    pool.terminate()
    starts = count(path3, "start")
    say(f"initializer raises: {starts} workers started in 0.5 s, "
        f"map ready: {ready} (it would wait forever)")
    v = sys.version_info
    print(f"python: version={v.major}.{v.minor} workers={opened} "
          f"finalize={fin} atexit={ax} "
          f"terminated_finalize={tfin} failing_starts={starts} "
          f"ready={int(ready)}", flush=True)


if __name__ == "__main__":
    if len(sys.argv) > 1:  # the C lesson's directory: it removes it
        main(sys.argv[1])
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(tmp)
