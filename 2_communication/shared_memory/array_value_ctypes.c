/* 2_communication/shared_memory/array_value_ctypes.c -- typed numbers in
 * shared memory: Python's Value and Array, their lock, atomics, false sharing
 *
 * Python:  v = Value('i', 0)               # a C int + an RLock
 *          v.value += 1                    # loses updates (two locked steps)
 *          with v.get_lock(): v.value += 1 # exact (get/set re-enter the RLock)
 *          a = Array('l', n, lock=False)   # c_long * n, no lock at all
 *          Lib/multiprocessing/sharedctypes.py: Value() and Array() make a
 *          ctypes object in memory from multiprocessing.heap (an mmap of a
 *          file made in /dev/shm, if it has room, and unlinked at once) and,
 *          unless lock=False, wrap it with a lock: True or None means
 *          ctx.RLock().  The wrapper takes that lock in the .value getter and
 *          again in the setter, so "v.value += 1" is get (locked), add, set
 *          (locked): two critical sections with a gap between them.
 * C:       a PTHREAD_PROCESS_SHARED + PTHREAD_MUTEX_RECURSIVE mutex (the
 *          RLock), _Atomic loads and stores, atomic_fetch_add, alignas(64)
 *          against false sharing, in one MAP_SHARED mapping made before fork.
 * Usage:   array_value_ctypes [--procs N (4, 1..64)] [--iters N (20000, 1..10^7)]
 *                             [--fs-iters N (5000000, 1..10^9)]
 * Output:  [parent 4320 +0.8ms] Value(lock=False), v.value += 1: 21024 of 80000, 58976 updates lost (0.4 ms)
 *          [parent 4320 +4.5ms] v.value += 1 (default RLock): 27809 of 80000, 52191 updates lost (3.3 ms)
 *          [parent 4320 +9.2ms] with v.get_lock(): v.value += 1: 80000 of 80000, 0 updates lost (4.3 ms)
 *          [parent 4320 +9.9ms] atomic_fetch_add (no lock): 80000 of 80000, 0 updates lost (0.1 ms)
 *          [parent 4320 +30.5ms] Array('l', n): one counter per process, packed 8 to a cache line: 1.87 ns/increment (CPU time)
 *          [parent 4320 +33.9ms] the same counters padded to 64 bytes each: 0.28 ns/increment (CPU time)
 *          result: lost 58976 without a lock, 52191 with a lock per access; get_lock=80000 atomic=80000 expected=80000; slots exact, packed/padded 6.7x OK
 *          (on a loaded 2-vCPU VM packed/padded read 0.9x to 6.7x from run to
 *          run: see step 3)
 * Try this: --procs 1 (no lost updates, no false sharing); delete the
 *          sched_yield() in gap() (losses then depend on the machine's
 *          load); make the mutex PTHREAD_MUTEX_NORMAL and watch the
 *          get_lock() phase deadlock on its own nested lock, as a Lock()
 *          would in Python.
 */
#include "mp.h"

#include <sched.h>
#include <stdalign.h>

enum { MAX_PROCS = 64, LINE = 64 };
enum variant { RAW, LOCK_EACH, GET_LOCK, ATOMIC, PACKED, PADDED };
static const char *const variant_name[] = {
	"Value(lock=False), v.value += 1", "v.value += 1 (default RLock)",
	"with v.get_lock(): v.value += 1", "atomic_fetch_add (no lock)",
	"one counter per process, packed 8 to a cache line",
	"the same counters padded to 64 bytes each",
};

struct shared {
	pthread_mutex_t rlock;          /* Value's lock: recursive, shared */
	_Atomic int value;              /* Value('i', 0): a C int */
	_Atomic int arrived;            /* workers past the start gate */
	int64_t ns[MAX_PROCS];          /* each worker's loop time */
	int64_t cpu_ns[MAX_PROCS];      /* ... and CPU time (no waiting) */
	alignas(LINE) _Atomic long packed[MAX_PROCS]; /* Array('l', n) */
	struct { alignas(LINE) _Atomic long v; } padded[MAX_PROCS];
};

/* The getter and setter of Python's Synchronized wrapper: each takes the
 * lock for one access (re-entering it inside get_lock()). */
static int get_value(struct shared *sh)
{
	MP_CHECK_PT(pthread_mutex_lock(&sh->rlock));
	int v = atomic_load_explicit(&sh->value, memory_order_relaxed);
	MP_CHECK_PT(pthread_mutex_unlock(&sh->rlock));
	return v;
}

static void set_value(struct shared *sh, int v)
{
	MP_CHECK_PT(pthread_mutex_lock(&sh->rlock));
	atomic_store_explicit(&sh->value, v, memory_order_relaxed);
	MP_CHECK_PT(pthread_mutex_unlock(&sh->rlock));
}

/* "v.value += 1" is a load and a store.  A process preempted between them
 * stores a stale value, erasing what the others added meanwhile.  The
 * sched_yield() forces such a preemption now and then, as 1_synchronization/
 * locks.c does, so that the race shows on an idle machine and a busy one
 * alike (Python's gap, a whole bytecode add, is far wider than C's). */
static void gap(long i)
{
	if (i % 1024 == 0)
		sched_yield();
}

/* One worker's loop.  Relaxed atomic loads and stores make each access
 * indivisible (a plain int would be a data race: undefined behaviour) but
 * not the increment: that is the point of the RAW and LOCK_EACH variants. */
static void work(struct shared *sh, enum variant v, int id, long iters)
{
	_Atomic long *mine = v == PACKED ? &sh->packed[id] : &sh->padded[id].v;
	struct timespec c0, c1;
	int64_t t0 = mp_now_ns();

	MP_CHECK(clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c0));
	for (long i = 0; i < iters; i++) {
		const memory_order rlx = memory_order_relaxed;
		int x;

		switch (v) {
		case RAW:
			x = atomic_load_explicit(&sh->value, rlx);
			gap(i);
			atomic_store_explicit(&sh->value, x + 1, rlx);
			break;
		case LOCK_EACH: /* two critical sections, a gap between */
			x = get_value(sh);
			gap(i);
			set_value(sh, x + 1);
			break;
		case GET_LOCK: /* the outer lock; get/set re-enter it */
			MP_CHECK_PT(pthread_mutex_lock(&sh->rlock));
			x = get_value(sh);
			gap(i); /* preempted while holding the lock: no harm */
			set_value(sh, x + 1);
			MP_CHECK_PT(pthread_mutex_unlock(&sh->rlock));
			break;
		case ATOMIC:
			atomic_fetch_add_explicit(&sh->value, 1, rlx);
			break;
		case PACKED:
		case PADDED: /* own slot: no race, but maybe a shared line */
			atomic_store_explicit(mine, atomic_load_explicit(mine,
					      rlx) + 1, rlx);
			break;
		}
	}
	MP_CHECK(clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c1));
	sh->ns[id] = mp_now_ns() - t0;
	sh->cpu_ns[id] = (c1.tv_sec - c0.tv_sec) * 1000000000 +
			 (c1.tv_nsec - c0.tv_nsec);
}

/* Fork procs workers, reap them, and return the slowest worker's loop time
 * in ns.  Each worker waits until all have started, so that the loops
 * overlap (yielding: there may be fewer CPUs than workers); the wait gives
 * up after a second, so that workers orphaned by a failed fork() finish
 * instead of spinning for ever. */
static int64_t run_phase(struct shared *sh, enum variant v, long procs,
			 long iters)
{
	atomic_store(&sh->arrived, 0);
	for (int id = 0; id < procs; id++) {
		if (mp_fork() == 0) {
			int64_t give_up = mp_now_ns() + 1000000000;

			atomic_fetch_add(&sh->arrived, 1);
			while (atomic_load(&sh->arrived) < procs &&
			       mp_now_ns() < give_up)
				sched_yield();
			work(sh, v, id, iters);
			_exit(EXIT_SUCCESS);
		}
	}
	mp_wait_all(); /* dies, naming it, if a worker failed */
	int64_t slowest = 0;

	for (int id = 0; id < procs; id++)
		slowest = sh->ns[id] > slowest ? sh->ns[id] : slowest;
	return slowest;
}

static int counter_phase(struct shared *sh, enum variant v, long procs,
			 long iters)
{
	atomic_store(&sh->value, 0);
	double ms = (double)run_phase(sh, v, procs, iters) / 1e6;
	int got = atomic_load(&sh->value);
	long want = procs * iters;

	mp_say("parent", "%s: %d of %ld, %ld updates lost (%.1f ms)",
	       variant_name[v], got, want, want - got, ms);
	return got;
}

/* CPU time per increment over all workers: CPU time leaves out the time a
 * worker waited for a CPU (4 workers on 2 cores wait half the time), but
 * not the stalls while a cache line is away.  -1 if a count is wrong. */
static double slot_phase(struct shared *sh, enum variant v, long procs,
			 long iters)
{
	int64_t cpu = 0;
	bool exact = true;

	run_phase(sh, v, procs, iters);
	for (int id = 0; id < procs; id++) {
		cpu += sh->cpu_ns[id];
		exact &= atomic_load(v == PACKED ? &sh->packed[id]
						 : &sh->padded[id].v) == iters;
	}
	double per = (double)cpu / (double)(procs * iters);

	mp_say("parent", "%s%s: %.2f ns/increment (CPU time)", v == PACKED ?
	       "Array('l', n): " : "", variant_name[v], per);
	return exact ? per : -1;
}

int main(int argc, char *argv[])
{
	long procs = 4, iters = 20000, fs_iters = 5000000;
	const struct mp_opt opts[] = {
		MP_OPT_L("procs", &procs, 1, MAX_PROCS, "worker processes"),
		MP_OPT_L("iters", &iters, 1, 10000000, "increments of the Value per worker"),
		MP_OPT_L("fs-iters", &fs_iters, 1, 1000000000,
			 "increments of its own Array slot per worker"),
	};

	mp_parse_options(argc, argv, "Value and Array in shared memory: no lock, "
			 "Python's lock, get_lock(), atomics; then false sharing.",
			 opts, sizeof opts / sizeof opts[0]);
	mp_stop_on_signals();

	/* 1. One shared mapping, zero-filled, and the recursive lock in it. */
	struct shared *sh = mp_shm_alloc(sizeof *sh);
	pthread_mutexattr_t a;

	if (!sh)
		mp_die("mp_shm_alloc");
	MP_CHECK_PT(pthread_mutexattr_init(&a));
	MP_CHECK_PT(pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED));
	MP_CHECK_PT(pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE));
	MP_CHECK_PT(pthread_mutex_init(&sh->rlock, &a));
	MP_CHECK_PT(pthread_mutexattr_destroy(&a));

	/* 2. Value: the same "+= 1" without a lock, with Python's per-access
	 *    lock, inside get_lock(), and as one atomic instruction. */
	long want = procs * iters;
	int raw = counter_phase(sh, RAW, procs, iters);
	int each = counter_phase(sh, LOCK_EACH, procs, iters);
	int locked = counter_phase(sh, GET_LOCK, procs, iters);
	int atomic = counter_phase(sh, ATOMIC, procs, iters);

	/* 3. Array: every process owns one slot, so nothing is shared... except
	 *    the 64-byte cache line that the slots sit in.  Each store takes
	 *    the line away from the other cores: "false sharing".  The ratio
	 *    needs workers that really run at the same time on different
	 *    cores: on a busy machine (or on two hyperthreads of one core,
	 *    which share the L1 cache) it reads close to 1x. */
	double packed = slot_phase(sh, PACKED, procs, fs_iters);
	double padded = slot_phase(sh, PADDED, procs, fs_iters);

	/* 4. Clean up and judge.  Lost updates and the false-sharing ratio are
	 *    reported, not judged: a lucky run may lose none (the race is
	 *    still there), and the ratio depends on the machine's load. */
	MP_CHECK_PT(pthread_mutex_destroy(&sh->rlock));
	MP_CHECK(mp_shm_free(sh, sizeof *sh));
	bool slots = packed > 0 && padded > 0;
	bool ok = locked == want && atomic == want && slots;

	printf("result: lost %ld without a lock, %ld with a lock per access; "
	       "get_lock=%d atomic=%d expected=%ld; slots %s, packed/padded "
	       "%.1fx %s\n", want - raw, want - each, locked, atomic, want,
	       slots ? "exact" : "WRONG", slots ? packed / padded : 0,
	       ok ? "OK" : "MISMATCH");
	return ok ? EXIT_SUCCESS : EXIT_FAILURE;
}
