"""5_advanced/custom_context.py -- the Python twin of custom_context.c

Python's contexts in one program: set_start_method() once; a table module
that every worker needs (fork's workers inherit it, spawn's import it again,
a forkserver's get it if the server preloaded it); the start time and USS of
each worker; a Lock made for fork handed to a spawn process.  Standard
library only.  Run by custom_context.c, or alone:

    MPP_TABLE_MIB=16 python3 custom_context.py [WORKERS (3)]

Exits 0 whatever Python does, and says what it saw.
"""
import multiprocessing as mp
import multiprocessing.forkserver
import os
import sys
import time

import custom_context_table as tbl  # the parent builds the table here


def worker(conn):
    conn.send(tbl.BUILT_BY != os.getpid())
    conn.recv()  # wait: the parent reads our memory first


def use_lock(lock):
    lock.acquire()


def uss_mib(pid):
    kib = 0
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                kib += int(line.split()[1])
    return kib / 1024


def say(text):
    print(f"[python {os.getpid()}] {text}", flush=True)


def row(ctx, label, workers):
    ms, mib = [], []
    for _ in range(workers):
        here, there = ctx.Pipe()
        t0 = time.perf_counter()
        p = ctx.Process(target=worker, args=(there,))
        p.start()
        inherited = here.recv()
        ms.append((time.perf_counter() - t0) * 1e3)
        mib.append(uss_mib(p.pid))
        here.send(None)
        p.join()
    ms.sort()
    mib.sort()
    say(f"      {label:<29} {ms[workers // 2]:8.2f} {mib[workers // 2]:8.2f}"
        f"  {'inherited' if inherited else 'built'}")
    return inherited


def main():
    workers = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    # The server is a fresh "python -c" whose sys.path does not hold this
    # folder (forkserver.main() ignores sys_path, gh-117378): PYTHONPATH
    # does, through the environment it inherits.
    here = os.path.dirname(os.path.abspath(__file__))
    os.environ["PYTHONPATH"] = here + os.pathsep + os.environ.get(
        "PYTHONPATH", "")

    mp.set_start_method("forkserver")
    try:
        mp.set_start_method("spawn")
        say("2. set_start_method twice: accepted (unexpected)")
    except RuntimeError as e:
        say(f"2. set_start_method again: RuntimeError({e})")

    lock = mp.get_context("fork").Lock()
    p = mp.get_context("spawn").Process(target=use_lock, args=(lock,))
    if "_is_fork_ctx" in vars(lock):
        try:
            p.start()
            p.join()
            say("4. a fork-made Lock in a spawn process: started (unexpected)")
        except RuntimeError as e:
            say(f"4. a fork-made Lock in a spawn process: RuntimeError({e})")
    else:
        say(f"4. a fork-made Lock in a spawn process: Python "
            f"{sys.version.split()[0]} does not check (3.11.7 and 3.12 "
            f"raise RuntimeError): _rebuild() in semaphore.c would hand "
            f"the child the parent's bare sem_t pointer; not tried")

    say(f"5.    {'context':<29} start ms  USS MiB  table")
    row(mp.get_context("fork"), "fork", workers)
    row(mp.get_context("spawn"), "spawn", workers)
    fs = mp.get_context("forkserver")
    fs.set_forkserver_preload(["__main__"])  # the default
    if not row(fs, "forkserver, preload __main__", workers):
        say("   preload ['__main__'] did nothing: forkserver.py takes "
            "'main_path' from spawn.get_preparation_data(), which calls it "
            "'init_main_from_path' (gh-98552, fixed by gh-126631 in later "
            "releases): every worker ran the main script again")
    # A new preload list needs a new server; there is no public call.
    mp.forkserver._forkserver._stop()
    fs.set_forkserver_preload(["custom_context_table"])
    row(fs, "forkserver, preload the table", workers)


if __name__ == "__main__":
    main()
