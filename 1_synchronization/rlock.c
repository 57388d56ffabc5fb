/* 1_synchronization/rlock.c -- a recursive lock shared by processes, and a
 * lock that knows its owner
 *
 * Python:  rlock = multiprocessing.RLock()  ...  with rlock: deposit()
 *          where deposit() takes "with rlock:" again.  RLock is a SemLock of
 *          kind RECURSIVE_MUTEX (Lib/multiprocessing/synchronize.py) over the
 *          same POSIX named semaphore as Lock (value 1, maxvalue 1).  Owner
 *          and depth are not in the semaphore: each process's SemLock object
 *          keeps last_tid and count (Modules/_multiprocessing/semaphore.c);
 *          acquire by the owner is ++count, only the release that brings count
 *          to 0 calls sem_post, and a release by anyone else raises
 *          AssertionError("attempt to release recursive lock not owned by
 *          thread").  (threading.RLock says "cannot release un-acquired lock".)
 *          Lock checks no owner: any process may release it.
 * C:       PTHREAD_MUTEX_RECURSIVE + PTHREAD_PROCESS_SHARED: glibc keeps the
 *          owner's thread id (unique system-wide) and the count inside the
 *          pthread_mutex_t, in the shared page; PTHREAD_MUTEX_ERRORCHECK:
 *          EDEADLK on a re-lock by the owner, EPERM on an unlock by anyone
 *          else.
 * Usage:   rlock [--procs N (4, 1..64)] [--rounds N (50000, 1..10^9)]
 *                [--depth N (3, 1..100)]
 * Output:  [parent 24343 +0.7ms] recursive: locked 3 of 3 deep, another process
 *                                gets EBUSY at 3 of them
 *          [parent 24343 +7.0ms] unlock 3 of 3: free
 *          [parent 24343 +250.6ms] 4 workers x 50000 deposit_twice():
 *                                  balance=400000 expected=400000, max depth 2,
 *                                  0 owner violations
 *          [parent 24343 +250.6ms] errorcheck: relock by the owner:
 *                                  EDEADLK (a plain lock would hang here)
 *          [parent 24343 +250.8ms] unlock by another process: errorcheck EPERM,
 *                                  recursive EPERM
 *          [parent 24343 +250.8ms] unlock by the owner: 0; unlock again: EPERM
 *          result: balance=400000 expected=400000 depth=2 probes=6/6 EDEADLK
 *                  EPERM x3 OK
 * Try this: make rlock PTHREAD_MUTEX_NORMAL: the second lock in step 2
 *          waits for itself (a plain pthread_mutex_lock would wait forever;
 *          the lesson gives up after a second and says MISMATCH); --depth 10.
 */
#include "mp.h"

struct shared {
	pthread_mutex_t rlock;  /* RECURSIVE, PROCESS_SHARED */
	pthread_mutex_t elock;  /* ERRORCHECK, PROCESS_SHARED */
	long balance;           /* guarded by rlock, like the next two */
	int depth;              /* our own copy of the count, to check it */
	pid_t owner;            /* who holds rlock (0: nobody) */
	_Atomic int max_depth;
	_Atomic long violations; /* owner/depth found wrong on entry */
	int unlock_err[2];      /* a stranger's unlock of elock, of rlock */
};

static void init_mutex(pthread_mutex_t *m, int type)
{
	pthread_mutexattr_t a;

	MP_CHECK_PT(pthread_mutexattr_init(&a));
	MP_CHECK_PT(pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED));
	MP_CHECK_PT(pthread_mutexattr_settype(&a, type));
	MP_CHECK_PT(pthread_mutex_init(m, &a));
	MP_CHECK_PT(pthread_mutexattr_destroy(&a));
}

/* pthread_mutex_lock, but giving up after a second: 0, ETIMEDOUT (a
 * plain mutex makes its owner wait for itself, and a lesson must not hang)
 * or EDEADLK (an error-checking one refuses the second lock at once).
 * (timedlock takes a CLOCK_REALTIME deadline: fine for a safety bound.) */
static int lock_within_1s(pthread_mutex_t *m)
{
	struct timespec deadline;

	MP_CHECK(clock_gettime(CLOCK_REALTIME, &deadline));
	deadline.tv_sec += 1;
	int err = pthread_mutex_timedlock(m, &deadline);

	if (err != 0 && err != ETIMEDOUT && err != EDEADLK)
		mp_die_en(err, "pthread_mutex_timedlock");
	return err;
}

static bool lock_bounded(pthread_mutex_t *m)
{
	return lock_within_1s(m) == 0;
}

/* Take rlock and check what we find: nobody inside on the first level,
 * ourselves on the next ones.  Mutual exclusion is what makes this hold.
 * A lock that cannot be had within the bound counts as a violation. */
static bool enter(struct shared *sh)
{
	if (!lock_bounded(&sh->rlock)) {
		atomic_fetch_add(&sh->violations, 1);
		return false;
	}
	if (sh->depth == 0 ? sh->owner != 0 : sh->owner != getpid())
		atomic_fetch_add(&sh->violations, 1);
	sh->owner = getpid();
	if (++sh->depth > atomic_load(&sh->max_depth))
		atomic_store(&sh->max_depth, sh->depth);
	return true;
}

static void leave(struct shared *sh)
{
	if (--sh->depth == 0)
		sh->owner = 0;
	MP_CHECK_PT(pthread_mutex_unlock(&sh->rlock));
}

/* A public operation that takes the lock itself ... */
static bool deposit(struct shared *sh, long amount)
{
	if (!enter(sh))
		return false;
	long b = sh->balance; /* read, then write: racy without the lock */
	sh->balance = b + amount;
	leave(sh);
	return true;
}

/* ... called by another that already holds it: the reason for an RLock. */
static bool deposit_twice(struct shared *sh)
{
	if (!enter(sh))
		return false;
	bool ok = deposit(sh, 1) && deposit(sh, 1);
	leave(sh);
	return ok;
}

/* Can another process take the lock now?  A child tries once and answers
 * with its exit status: 0 it got the lock, 1 EBUSY. */
static bool free_for_others(pthread_mutex_t *m)
{
	pid_t pid = mp_fork();

	if (pid == 0) {
		int err = pthread_mutex_trylock(m);

		if (err == 0)
			MP_CHECK_PT(pthread_mutex_unlock(m));
		_exit(err == 0 ? 0 : err == EBUSY ? 1 : 2);
	}
	int st = mp_waitpid(pid);

	if (!WIFEXITED(st) || WEXITSTATUS(st) > 1)
		mp_die("probe %jd failed", (intmax_t)pid);
	return WEXITSTATUS(st) == 0;
}

int main(int argc, char *argv[])
{
	long procs = 4, rounds = 50000, depth = 3;
	const struct mp_opt opts[] = {
		MP_OPT_L("procs", &procs, 1, 64, "worker processes"),
		MP_OPT_L("rounds", &rounds, 1, 1000000000,
			 "deposit_twice() calls per worker"),
		MP_OPT_L("depth", &depth, 1, 100,
			 "how deep the parent re-enters"),
	};

	mp_parse_options(argc, argv, "A recursive process-shared mutex, and "
			 "an error-checking one that knows its owner.",
			 opts, sizeof opts / sizeof opts[0]);
	mp_stop_on_signals();

	/* 1. Both mutexes live in shared memory and are set up before fork. */
	struct shared *sh = mp_shm_alloc(sizeof *sh);

	if (!sh)
		mp_die("mp_shm_alloc");
	init_mutex(&sh->rlock, PTHREAD_MUTEX_RECURSIVE);
	init_mutex(&sh->elock, PTHREAD_MUTEX_ERRORCHECK);

	/* 2. Re-entry: the owner locks depth times; another process finds it
	 *    held at every depth, and free only after the last unlock. */
	long right = 0;

	long held = 0;

	while (held < depth && lock_bounded(&sh->rlock)) {
		held++;
		right += !free_for_others(&sh->rlock);
	}
	mp_say("parent", "recursive: locked %ld of %ld deep, another process "
	       "gets EBUSY at %ld of them", held, depth, right);
	for (long d = held; d >= 1; d--) {
		MP_CHECK_PT(pthread_mutex_unlock(&sh->rlock));
		bool is_free = free_for_others(&sh->rlock);

		right += is_free == (d == 1);
		mp_say("parent", "unlock %ld of %ld: %s", held - d + 1, held,
		       is_free ? "free" : "still held");
	}

	/* 3. Contention: every worker re-enters while the others wait. */
	for (long p = 0; p < procs; p++) {
		if (mp_fork() == 0) {
			for (long i = 0; i < rounds; i++)
				if (!deposit_twice(sh))
					break;  /* counted in violations */
			_exit(EXIT_SUCCESS);
		}
	}
	mp_wait_all();
	long want = procs * rounds * 2;

	mp_say("parent", "%ld workers x %ld deposit_twice(): balance=%ld "
	       "expected=%ld, max depth %d, %ld owner violations", procs,
	       rounds, sh->balance, want, atomic_load(&sh->max_depth),
	       atomic_load(&sh->violations));

	/* 4. An error-checking mutex refuses what a plain one would do wrong:
	 *    a second lock by its owner (a plain lock waits for itself forever)
	 *    and an unlock by a process that does not hold it (the recursive
	 *    mutex checks that too: it knows its owner to count re-entries). */
	MP_CHECK_PT(pthread_mutex_lock(&sh->elock));
	int relock = lock_within_1s(&sh->elock);

	mp_say("parent", "errorcheck: relock by the owner: %s (a plain lock "
	       "would hang here)", mp_errname(relock));
	bool rlocked = lock_bounded(&sh->rlock);

	if (mp_fork() == 0) {
		sh->unlock_err[0] = pthread_mutex_unlock(&sh->elock);
		sh->unlock_err[1] = pthread_mutex_unlock(&sh->rlock);
		_exit(EXIT_SUCCESS);
	}
	mp_wait_all();
	mp_say("parent", "unlock by another process: errorcheck %s, "
	       "recursive %s", mp_errname(sh->unlock_err[0]),
	       mp_errname(sh->unlock_err[1]));
	if (rlocked)
		MP_CHECK_PT(pthread_mutex_unlock(&sh->rlock));
	bool released = free_for_others(&sh->rlock); /* every lock undone */
	int own = pthread_mutex_unlock(&sh->elock);
	int twice = pthread_mutex_unlock(&sh->elock);

	mp_say("parent", "unlock by the owner: %s; unlock again: %s",
	       mp_errname(own), mp_errname(twice));

	/* 5. Check and clean up. */
	/* Every child joined: none left running, none left a zombie. */
	bool reaped = waitpid(-1, NULL, WNOHANG) == -1 && errno == ECHILD;

	if (!reaped)
		mp_say("parent", "a child was never joined (no waitpid)");
	bool ok = sh->balance == want && atomic_load(&sh->violations) == 0 &&
		  held == depth && rlocked &&
		  atomic_load(&sh->max_depth) == 2 && right == 2 * depth &&
		  relock == EDEADLK && sh->unlock_err[0] == EPERM &&
		  sh->unlock_err[1] == EPERM && own == 0 && twice == EPERM &&
		  released &&
		  reaped;

	printf("result: balance=%ld expected=%ld depth=%d probes=%ld/%ld %s "
	       "EPERM x%d %s\n", sh->balance, want, atomic_load(&sh->max_depth),
	       right, 2 * depth, mp_errname(relock),
	       (sh->unlock_err[0] == EPERM) + (sh->unlock_err[1] == EPERM) +
	       (twice == EPERM), ok ? "OK" : "MISMATCH");
	if (ok) { /* a broken run may leave one held: EBUSY */
		MP_CHECK_PT(pthread_mutex_destroy(&sh->rlock));
		MP_CHECK_PT(pthread_mutex_destroy(&sh->elock));
	}
	MP_CHECK(mp_shm_free(sh, sizeof *sh));
	return ok ? EXIT_SUCCESS : EXIT_FAILURE;
}
