"""5_advanced/daemon_process.py -- the Python twin of daemon_process.c, steps 1-2

What daemon=True does, seen from outside: a daemonic process may not start
children (Lib/multiprocessing/process.py, Process.start); at a normal exit
util._exit_function terminates daemonic children and joins the others
(Lib/multiprocessing/util.py); a SIGKILLed parent runs nothing, and its
children live on as orphans.  Standard library only.  Run by
daemon_process.c, or alone:

    python3 daemon_process.py

Its last line sums it up for the C side:
    python: refused=1 terminated=1 joined=1 orphans=2
Orphans are killed before it exits (run by the lesson, they are re-parented
to the lesson, a subreaper, which reaps them).
"""
import multiprocessing as mp
import os
import signal
import time


def say(text):
    print(f"[python {os.getpid()}] {text}", flush=True)


def sleeper():
    time.sleep(5)  # bounded: even an escaped orphan ends


def daemonic_parent(q):
    try:
        mp.Process(target=sleeper).start()
        q.put("started a child")
    except AssertionError as e:
        q.put(f"AssertionError: {e}")


def leader(q, work_s, hold_s):
    d = mp.Process(target=sleeper, daemon=True)
    d.start()
    w = mp.Process(target=time.sleep, args=(work_s,))
    w.start()
    q.put((d.pid, w.pid))
    time.sleep(hold_s)  # still running when SIGKILLed
    # Returning ends the process: _exit_function terminates d, joins w.


def alive(pid):
    """Running, not a zombie nor gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def main():
    mp.set_start_method("fork")
    q = mp.Queue()

    p = mp.Process(target=daemonic_parent, args=(q,), daemon=True)
    p.start()
    answer = q.get(timeout=10)
    p.join()
    refused = answer.startswith("AssertionError")
    say(f"a daemonic process starts a child: {answer}")

    lead = mp.Process(target=leader, args=(q, 0.2, 0))
    lead.start()
    dpid, wpid = q.get(timeout=10)
    t0 = time.monotonic()
    lead.join(10)
    terminated, joined = not alive(dpid), not alive(wpid)
    say(f"leader returned after {time.monotonic() - t0:.2f} s (exitcode "
        f"{lead.exitcode}): daemonic child gone: {terminated}, "
        f"worker joined: {joined}")

    lead = mp.Process(target=leader, args=(q, 5, 5))
    lead.start()
    pids = q.get(timeout=10)
    os.kill(lead.pid, signal.SIGKILL)
    # No timeout here: join(timeout) polls the sentinel pipe, and the
    # orphans inherited its write end, so it would wait for them (5 s).
    lead.join()
    orphans = [pid for pid in pids if alive(pid)]
    say(f"leader SIGKILLed (exitcode {lead.exitcode}): {len(orphans)} "
        f"children still running, orphans")
    for pid in orphans:
        os.kill(pid, signal.SIGKILL)
    print(f"python: refused={int(refused)} terminated={int(terminated)} "
          f"joined={int(joined)} orphans={len(orphans)}", flush=True)


if __name__ == "__main__":
    main()
