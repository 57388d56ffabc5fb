/* 1_synchronization/locks.c -- one lock shared by N processes, and a lock
 * whose holder dies
 *
 * Python:  lock = multiprocessing.Lock()  ...  with lock: counter.value += 1
 *          Lock is a SemLock(SEMAPHORE, value 1, maxvalue 1) in Lib/
 *          multiprocessing/synchronize.py: sem_open(name, O_CREAT | O_EXCL,
 *          0600, 1) on a random "/mp-..." name (Modules/_multiprocessing/
 *          semaphore.c), unlinked at once under the "fork" start method;
 *          under spawn/forkserver the name lives until the lock is finalized.
 * C:       an _Atomic counter updated by a load then a store (the race), a
 *          PTHREAD_PROCESS_SHARED mutex in MAP_SHARED memory, sem_open +
 *          sem_unlink + sem_wait/sem_post/sem_trywait; then robust mutexes:
 *          PTHREAD_MUTEX_ROBUST, EOWNERDEAD, pthread_mutex_consistent,
 *          ENOTRECOVERABLE.  Every wait is bounded (pthread_mutex_clocklock,
 *          sem_clockwait on CLOCK_MONOTONIC), so a broken lock ends in
 *          MISMATCH, never in a hang.
 * Usage:   locks [--procs N (4, 1..64)] [--iters N (200000, 1..10^9)]
 * Output:  [parent 24261 +2.3ms] no lock: counter=200000 expected=800000,
 *                                600000 lost (2.2 ms)
 *          [parent 24261 +18.3ms] process-shared mutex: counter=800000
 *                                 expected=800000, 0 lost (15.9 ms)
 *          [parent 24261 +337.9ms] named semaphore: counter=800000
 *                                  expected=800000, 0 lost (319.6 ms)
 *          [parent 24261 +338.1ms] child 24340 was killed by SIGKILL while
 *                                  holding both locks
 *          [parent 24261 +338.2ms] pthread_mutex_lock: EOWNERDEAD,
 *                                  the data is half-updated: from=90 to=0
 *          [parent 24261 +338.2ms] repaired to from=90 to=10;
 *                                  pthread_mutex_consistent; unlock;
 *                                  lock again: 0
 *          [parent 24261 +338.3ms] unlocked without repair;
 *                                  next pthread_mutex_lock: ENOTRECOVERABLE
 *          result: mutex=800000 semaphore=800000 expected=800000, robust:
 *                  EOWNERDEAD repaired, unrepaired ENOTRECOVERABLE OK
 * Try this: --procs 1 (one process loses nothing); delete the sched_yield()
 *          in add() (the losses then depend on how busy the machine is);
 *          delete the pthread_mutex_consistent() call (ENOTRECOVERABLE);
 *          delete the sem_post() in add(), the setpshared or the setrobust
 *          call: a waiter is never woken, gives up after 2 s, and the
 *          verdict says MISMATCH.
 */
#define _GNU_SOURCE /* pthread_mutex_clocklock, sem_clockwait: monotonic */
#include "mp.h"

#include <fcntl.h>
#include <sched.h>
#include <semaphore.h>

enum mode { NO_LOCK, MUTEX, SEMAPHORE };
static const char *const mode_name[] = { "no lock", "process-shared mutex",
					 "named semaphore" };
enum { TOTAL = 100, MOVED = 10 }; /* robust guards from + to == TOTAL */

struct shared {
	pthread_mutex_t mutex;  /* PTHREAD_PROCESS_SHARED */
	pthread_mutex_t robust; /* ... + PTHREAD_MUTEX_ROBUST */
	_Atomic long counter;
	_Atomic long ready;     /* workers at the start line */
	long from, to;          /* an account transfer, guarded by robust */
};

static void init_mutex(pthread_mutex_t *m, bool robust)
{
	pthread_mutexattr_t a;

	MP_CHECK_PT(pthread_mutexattr_init(&a));
	/* Without this the mutex may keep process-private state: it would
	 * "work" in one process and corrupt or hang across fork. */
	MP_CHECK_PT(pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED));
	if (robust)
		MP_CHECK_PT(pthread_mutexattr_setrobust(&a,
							PTHREAD_MUTEX_ROBUST));
	MP_CHECK_PT(pthread_mutex_init(m, &a));
	MP_CHECK_PT(pthread_mutexattr_destroy(&a));
}

/* Every wait of the lesson is bounded, so that a broken lock (a post left
 * out, a mutex that is not process-shared and so never wakes a sleeper in
 * another process) ends in a MISMATCH instead of a hang.  No holder keeps a
 * lock for more than microseconds here: BOUND_S is generous. */
enum { BOUND_S = 2 };

static struct timespec deadline(void)
{
	struct timespec t;

	MP_CHECK(clock_gettime(CLOCK_MONOTONIC, &t));
	t.tv_sec += BOUND_S;
	return t;
}

/* pthread_mutex_lock with a CLOCK_MONOTONIC bound (glibc 2.30): 0,
 * EOWNERDEAD or ENOTRECOVERABLE (robust), ETIMEDOUT; any other error dies. */
static int lock_bounded(pthread_mutex_t *m)
{
	struct timespec t = deadline();
	int err = pthread_mutex_clocklock(m, CLOCK_MONOTONIC, &t);

	if (err != 0 && err != EOWNERDEAD && err != ENOTRECOVERABLE &&
	    err != ETIMEDOUT)
		mp_die_en(err, "pthread_mutex_clocklock");
	return err;
}

/* sem_wait, bounded the same way: true when we got it. */
static bool sem_wait_bounded(sem_t *sem)
{
	struct timespec t = deadline();
	int rc;

	while ((rc = sem_clockwait(sem, CLOCK_MONOTONIC, &t)) == -1 &&
	       errno == EINTR)
		;
	if (rc == -1 && errno != ETIMEDOUT)
		mp_die("sem_clockwait");
	return rc == 0;
}

/* Lock the robust mutex: 0, EOWNERDEAD, ENOTRECOVERABLE or ETIMEDOUT. */
static int lock_robust(struct shared *sh)
{
	return lock_bounded(&sh->robust);
}

static void add(struct shared *sh, sem_t *sem, enum mode m, long iters)
{
	for (long i = 0; i < iters; i++) {
		/* A lock not had within BOUND_S: stop; the count comes out
		 * short and the verdict says MISMATCH. */
		if (m == MUTEX && lock_bounded(&sh->mutex) != 0)
			return;
		if (m == SEMAPHORE && !sem_wait_bounded(sem))
			return;
		/* counter.value += 1 is a load and a store, as in Python: a
		 * process preempted between them stores a stale value.  The
		 * sched_yield() forces such a preemption now and then, so the
		 * race shows on an idle machine too.  (_Atomic only stops the
		 * compiler merging the loop into one add.) */
		long v = atomic_load_explicit(&sh->counter,
					      memory_order_relaxed);
		if (i % 1024 == 0)
			sched_yield();
		atomic_store_explicit(&sh->counter, v + 1,
				      memory_order_relaxed);
		if (m == MUTEX)
			MP_CHECK_PT(pthread_mutex_unlock(&sh->mutex));
		else if (m == SEMAPHORE)
			MP_CHECK(sem_post(sem));
	}
}

/* Fork procs workers that start together, so that they overlap. */
static long run_phase(struct shared *sh, sem_t *sem, enum mode m,
		      long procs, long iters)
{
	atomic_store(&sh->counter, 0);
	atomic_store(&sh->ready, 0);
	int64_t t0 = mp_now_ns();

	for (long p = 0; p < procs; p++) {
		if (mp_fork() == 0) {
			alarm(10); /* a parent that failed mid-fork: give up */
			atomic_fetch_add(&sh->ready, 1);
			while (atomic_load(&sh->ready) < procs)
				sched_yield();
			alarm(0);
			add(sh, sem, m, iters);
			_exit(EXIT_SUCCESS);
		}
	}
	mp_wait_all(); /* Process.join() for each */
	long got = atomic_load(&sh->counter), want = procs * iters;

	mp_say("parent", "%s: counter=%ld expected=%ld, %ld lost (%.1f ms)",
	       mode_name[m], got, want, want - got, mp_elapsed_s(t0) * 1e3);
	return got;
}

/* A child takes the robust mutex (and the semaphore, if given), gets
 * halfway through a transfer and is killed.  Python's Pool workers read
 * tasks from a SimpleQueue whose get() holds a Lock (_rlock): a worker killed
 * there (OOM killer, kill -9) leaves it taken, and the other workers wait on
 * it forever. */
static bool kill_a_holder(struct shared *sh, sem_t *sem)
{
	int ready[2];
	char c;

	MP_CHECK(pipe(ready));
	pid_t pid = mp_fork();

	if (pid == 0) {
		alarm(10); /* never outlive a parent that failed */
		MP_CHECK(close(ready[0]));
		if (sem && !sem_wait_bounded(sem))
			_exit(EXIT_FAILURE); /* EOF: the parent says so */
		if (lock_robust(sh) != 0)
			_exit(EXIT_FAILURE);
		sh->from -= MOVED; /* half a transfer ...          */
		MP_CHECK(write(ready[1], "h", 1));
		pause();           /* ... the other half never comes */
		_exit(EXIT_FAILURE);
	}
	MP_CHECK(close(ready[1])); /* so a child that dies early gives EOF */
	ssize_t got = read(ready[0], &c, 1);

	if (got == -1)
		mp_die("read");
	MP_CHECK(close(ready[0]));
	if (got == 0) { /* it could not take the locks: a broken lock */
		mp_waitpid(pid);
		mp_say("parent", "child %jd could not take %s within %d s",
		       (intmax_t)pid, sem ? "both locks" : "the robust mutex",
		       BOUND_S);
		return false;
	}
	MP_CHECK(kill(pid, SIGKILL));
	int st = mp_waitpid(pid);

	if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGKILL)
		mp_die("child %jd was not killed by SIGKILL", (intmax_t)pid);
	mp_say("parent", "child %jd was killed by SIGKILL while holding %s",
	       (intmax_t)pid, sem ? "both locks" : "the robust mutex");
	return true;
}

int main(int argc, char *argv[])
{
	long procs = 4, iters = 200000;
	const struct mp_opt opts[] = {
		MP_OPT_L("procs", &procs, 1, 64, "worker processes"),
		MP_OPT_L("iters", &iters, 1, 1000000000,
			 "increments per worker"),
	};

	mp_parse_options(argc, argv, "A counter shared by N processes: no "
			 "lock, a mutex, a semaphore; then a robust mutex "
			 "whose holder dies.",
			 opts, sizeof opts / sizeof opts[0]);
	mp_stop_on_signals();

	/* 1. Shared memory, a process-shared mutex, and a named semaphore
	 *    made as CPython makes Lock() under fork: open, unlink at once
	 *    (nothing in between can fail and leave the name behind). */
	struct shared *sh = mp_shm_alloc(sizeof *sh);
	char name[64], path[96];

	if (!sh)
		mp_die("mp_shm_alloc");
	init_mutex(&sh->mutex, false);
	mp_ipc_name(name, sizeof name, "lock");
	/* glibc keeps a named semaphore in a file: /dev/shm/sem.<name> */
	snprintf(path, sizeof path, "/dev/shm/sem.%s", name + 1);
	MP_CHECK(mp_atcleanup(mp_cleanup_sem, name));
	/* sem_open writes a temporary /dev/shm/sem.XXXXXX first and renames
	 * it: a Ctrl-C in between would strand that file, so hold the stop
	 * signals for the call. */
	sigset_t old;

	MP_CHECK(mp_block_stop_signals(&old));
	sem_t *sem = sem_open(name, O_CREAT | O_EXCL, 0600, 1);

	if (sem == SEM_FAILED)
		mp_die("sem_open(%s)", name);
	MP_CHECK(mp_restore_signals(&old));
	bool made = access(path, F_OK) == 0;

	MP_CHECK(sem_unlink(name)); /* the open semaphore lives on, nameless */
	MP_CHECK(mp_cancel_cleanup(mp_cleanup_sem, name));
	bool gone = made && access(path, F_OK) == -1 && errno == ENOENT;

	/* 2. The same read-then-write by every worker: no lock, each lock. */
	long want = procs * iters;

	run_phase(sh, sem, NO_LOCK, procs, iters);
	long by_mutex = run_phase(sh, sem, MUTEX, procs, iters);

	mp_say("parent", "sem_open made %s; sem_unlink %s", path,
	       gone ? "removed it" : "did NOT remove it");
	long by_sem = run_phase(sh, sem, SEMAPHORE, procs, iters);

	/* 3. The holder dies.  A semaphore has no owner: nobody can tell the
	 *    lock is orphaned, and Python's acquire() blocks forever. */
	init_mutex(&sh->robust, true);
	sh->from = TOTAL;
	sh->to = 0;
	kill_a_holder(sh, sem); /* false: the next steps say MISMATCH */
	int stuck = sem_trywait(sem) == -1 ? errno : 0;

	if (stuck != 0 && stuck != EAGAIN)
		mp_die_en(stuck, "sem_trywait");
	mp_say("parent", "sem_trywait: %s, the dead child's semaphore stays "
	       "taken: Python's acquire() would block forever",
	       mp_errname(stuck));

	/* 4. A robust mutex knows its owner: the kernel marks it when the owner
	 *    dies, and the next locker gets it with EOWNERDEAD. */
	int dead = lock_robust(sh);
	long half = sh->from + sh->to; /* TOTAL - MOVED: the dead one's work */

	mp_say("parent", "pthread_mutex_lock: %s, the data is half-updated: "
	       "from=%ld to=%ld", mp_errname(dead), sh->from, sh->to);
	if (dead == EOWNERDEAD) {
		sh->to = TOTAL - sh->from; /* repair: finish the transfer */
		MP_CHECK_PT(pthread_mutex_consistent(&sh->robust));
	}
	/* ETIMEDOUT: a mutex that is not robust stays the dead one's. */
	if (dead == 0 || dead == EOWNERDEAD)
		MP_CHECK_PT(pthread_mutex_unlock(&sh->robust));
	int again = dead == ETIMEDOUT ? ETIMEDOUT : lock_robust(sh);
	long from = sh->from, to = sh->to;

	if (again == 0) {
		MP_CHECK_PT(pthread_mutex_unlock(&sh->robust));
	} else if (again == ENOTRECOVERABLE) { /* destroy + init is left */
		MP_CHECK_PT(pthread_mutex_destroy(&sh->robust));
		init_mutex(&sh->robust, true);
	}
	mp_say("parent", "repaired to from=%ld to=%ld; "
	       "pthread_mutex_consistent; unlock; lock again: %s", from, to,
	       mp_errname(again));

	/* 5. The same death, but the next locker unlocks without repairing:
	 *    the mutex is then unusable for good; only destroy is left. */
	int dead2 = ETIMEDOUT, unrec = ETIMEDOUT; /* unless it runs */

	if (again != ETIMEDOUT && kill_a_holder(sh, NULL)) {
		dead2 = lock_robust(sh);
		if (dead2 == 0 || dead2 == EOWNERDEAD) /* no repair */
			MP_CHECK_PT(pthread_mutex_unlock(&sh->robust));
		unrec = lock_robust(sh);
		if (unrec == 0 || unrec == EOWNERDEAD)
			MP_CHECK_PT(pthread_mutex_unlock(&sh->robust));
	}
	mp_say("parent", "unlocked without repair; next pthread_mutex_lock: %s",
	       mp_errname(unrec));

	/* 6. Clean up and check.  A mutex that is not robust and still
	 *    held by a dead process cannot be destroyed (EBUSY): leave it to
	 *    the unmapping. */
	if (dead != ETIMEDOUT && unrec != ETIMEDOUT)
		MP_CHECK_PT(pthread_mutex_destroy(&sh->robust));
	bool freed = mp_mutex_destroy(&sh->mutex);
	MP_CHECK(sem_close(sem));
	MP_CHECK(mp_shm_free(sh, sizeof *sh));

	bool repaired = half == TOTAL - MOVED && again == 0 &&
			from + to == TOTAL;
	/* Every child joined: none left running, none left a zombie. */
	bool reaped = waitpid(-1, NULL, WNOHANG) == -1 && errno == ECHILD;

	if (!reaped)
		mp_say("parent", "a child was never joined (no waitpid)");
	bool ok = by_mutex == want && by_sem == want && gone &&
		  stuck == EAGAIN && dead == EOWNERDEAD && repaired &&
		  dead2 == EOWNERDEAD && unrec == ENOTRECOVERABLE && reaped &&
		  freed;

	printf("result: mutex=%ld semaphore=%ld expected=%ld, robust: %s %s, "
	       "unrepaired %s %s\n", by_mutex, by_sem, want, mp_errname(dead),
	       repaired ? "repaired" : "NOT repaired", mp_errname(unrec),
	       ok ? "OK" : "MISMATCH");
	return ok ? EXIT_SUCCESS : EXIT_FAILURE;
}
