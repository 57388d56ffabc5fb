"""2_communication/shared_memory/manager_dict_list.py -- the Python twin of
manager_dict_list.c: the same d[k] = i; d[k]; l.append(i) loop on
Manager().dict() and .list() proxies, then on a plain dict and list, in ns
per call.  One client (the C lesson runs several).  Stdlib only.

Usage: python3 manager_dict_list.py [ROUNDS (1000)]
"""
import os
import signal
import sys
import time
from multiprocessing import Manager


def work(d, lst, rounds, keys=256):
    t0 = time.perf_counter_ns()
    for i in range(rounds):
        k = i % keys
        d[k] = i
        if d[k] != i:
            raise SystemExit(f"d[{k!r}] != {i}")
        lst.append(i)
    return (time.perf_counter_ns() - t0) / (3 * rounds)


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    # A SIGTERM from the C lesson leaves through "with", which shuts the
    # manager's server process down instead of orphaning it.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    with Manager() as m:
        proxy = work(m.dict(), m.list(), rounds)
    plain = work({}, [], rounds)
    print(f"[python {os.getpid()}] Manager proxies: {proxy:.0f} ns per "
          f"call; plain dict and list: {plain:.0f} ns; {proxy / plain:.0f}x",
          flush=True)


if __name__ == "__main__":
    main()
