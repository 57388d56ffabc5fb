"""4_patterns/mapreduce_example.py -- the Python twin of mapreduce_example.c

Word count the way a Python programmer writes it: the file mmap'ed, cut into
chunks at word boundaries, Pool.map(count_chunk, chunks) where each worker
returns a collections.Counter (pickled back to the parent), and the Counters
summed.  A word is a maximal run of ASCII letters, lower-cased: bytes.lower()
touches only ASCII letters, so re.findall(rb"[a-z]+", chunk.lower()) is
exactly the C lesson's definition.

Usage: python3 mapreduce_example.py FILE [--workers N] [--top K]
Output lines (CSV, no header):
    python,<bytes>,<seconds>,<total_words>,<distinct_words>
    top,<count>,<length>,<first 64 letters of the word>   (K lines)
Stdlib only.  Fork workers: they inherit the mapping.
"""
import argparse
import collections
import heapq
import mmap
import multiprocessing as mp
import os
import re
import signal
import time

WORD = re.compile(rb"[a-z]+")
DATA = b""  # the input, mapped before the pool forks


def count_chunk(span):
    start, end = span
    return collections.Counter(WORD.findall(DATA[start:end].lower()))


def is_letter(b):
    return 65 <= b <= 90 or 97 <= b <= 122


def chunks(size, n):
    """n spans of about size / n bytes, each cut moved to a word boundary."""
    cuts = [0]
    for i in range(1, n):
        c = max(size * i // n, cuts[-1])
        while 0 < c < size and is_letter(DATA[c]) and is_letter(DATA[c - 1]):
            c += 1
        cuts.append(c)
    cuts.append(size)
    return list(zip(cuts, cuts[1:]))


def stop(signum, _frame):
    """SIGTERM from the C lesson (Ctrl-C): kill the workers, leave at once."""
    for child in mp.active_children():  # the pool's workers
        child.kill()
    os._exit(128 + signum)


def main():
    global DATA
    ap = argparse.ArgumentParser()
    ap.add_argument("file")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--top", type=int, default=10)
    args = ap.parse_args()

    with open(args.file, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size:  # mmap refuses an empty file
            DATA = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
    t = time.perf_counter()
    spans = chunks(size, max(4 * args.workers, size >> 22))  # <= ~4 MiB
    total = collections.Counter()
    pool = mp.get_context("fork").Pool(args.workers)
    # After the fork: the workers keep SIGTERM's default action.
    signal.signal(signal.SIGTERM, stop)
    for c in pool.map(count_chunk, spans):
        total.update(c)
    top = heapq.nsmallest(args.top, total.items(),
                          key=lambda kv: (-kv[1], kv[0]))
    # The answer is complete: the clock stops before the workers exit, as
    # the C lesson's does (here that is a few ms of about 1.5 s).  Then
    # close + join, the documented way out; leaving "with Pool()" calls
    # terminate(), which has been known to hang (gh-78178).
    s = time.perf_counter() - t
    pool.close()
    pool.join()
    print(f"python,{size},{s:.6f},{total.total()},{len(total)}", flush=True)
    for word, count in top:
        print(f"top,{count},{len(word)},{word[:64].decode()}", flush=True)


if __name__ == "__main__":
    main()
