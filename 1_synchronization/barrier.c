/* 1_synchronization/barrier.c -- N processes in lockstep, phase by phase;
 * then a barrier that can time out and be aborted
 *
 * Python:  b = multiprocessing.Barrier(parties, action=None, timeout=None)
 *          b.wait(timeout) -> arrival index; b.abort(); BrokenBarrierError
 *          Lib/multiprocessing/synchronize.py subclasses threading.Barrier:
 *          its condition is a multiprocessing Condition() (an RLock and three
 *          semaphores), its _state and _count two C ints in shared memory
 *          (heap.BufferWrapper).  The last to arrive runs action() before
 *          anyone leaves; a wait() that times out breaks the barrier, and
 *          every waiter, then and later, gets BrokenBarrierError.
 * C:       pthread_barrier_t, pthread_barrierattr_setpshared, in MAP_SHARED
 *          memory; the waiter told PTHREAD_BARRIER_SERIAL_THREAD plays
 *          action(), after the others are let go: a second wait publishes
 *          its result.  pthread barriers have no timeout, abort or arrival
 *          index: part 2 builds them from a mutex and a CLOCK_MONOTONIC cond.
 * Usage:   barrier [--procs N (4, 2..64)] [--phases N (200, 1..100000)]
 *                  [--timeout S (0.2, 0.01..600)]
 * Output:  [parent 24402 +10.5ms] pthread_barrier: 4 processes x 200 phases,
 *                                 200 serial waiters (one a phase),
 *                                 0 seen behind
 *          [parent 24402 +14.1ms] own barrier: 3 waits in 1.9 ms,
 *                                 action() ran 3 times, arrival indexes 0..N-1
 *                                 each time
 *          [parent 24402 +214.7ms] 4 of 5 parties, timeout 0.2 s (the others
 *                                  2.2 s): 4 got BrokenBarrierError after
 *                                  200.6 ms
 *          [parent 24402 +216.3ms] abort() with 4 asleep in wait():
 *                                  4 got BrokenBarrierError
 *          result: phases=200 serial=200 behind=0 total=1844 actions=3
 *                  broken=4+4 OK
 * Try this: delete the second pthread_barrier_wait of a phase: the serial
 *          process's sum races with the next phase, the total comes out
 *          wrong, and "seen behind" stays 0 (barrier one still holds).
 *          In bbar_wait() make the broadcasts signals, or drop the
 *          "b->broken = true": waiters leave at their own deadlines, late,
 *          and the verdict says MISMATCH.  Drop a setpshared: wake-ups are
 *          lost, and the watchdog ends the run after 3 s without progress.
 */
#include "mp.h"

enum { MAX_PROCS = 64, MOD = 1000003 };

struct bbar {                  /* threading.Barrier's state, in shared memory */
	pthread_mutex_t lock;
	pthread_cond_t cv;
	int parties, count;    /* count: arrived this round (n_waiting) */
	unsigned long round;   /* +1 each time the barrier opens */
	bool broken;
	int actions;           /* times the action ran */
};

struct shared {
	pthread_barrier_t bar;
	struct bbar bb;
	long partial[MAX_PROCS], total;
	_Atomic int done[MAX_PROCS];   /* phases each process has finished */
	_Atomic int serial;            /* PTHREAD_BARRIER_SERIAL_THREAD seen */
	_Atomic int behind;            /* seen not done after the barrier */
	_Atomic int broken;            /* BrokenBarrierError */
	_Atomic long index_sum;
	_Atomic long progress;         /* +1 for every wait that returns */
};

/* One process's phases: work, barrier, one process sums, barrier. */
static void lockstep(struct shared *sh, int id, int procs, int phases)
{
	for (int k = 0; k < phases; k++) {
		long x = k == 0 ? 1 : sh->total; /* last phase's result */

		/* this phase's work */
		sh->partial[id] = (x * (id + 2) + k) % MOD;
		sh->done[id] = k + 1;
		int rc = pthread_barrier_wait(&sh->bar);
		if (rc == PTHREAD_BARRIER_SERIAL_THREAD) { /* action() */
			long sum = 0;
			for (int j = 0; j < procs; j++)
				sum += sh->partial[j];
			sh->total = sum % MOD;
			sh->serial++;
		} else if (rc != 0) {
			mp_die_en(rc, "pthread_barrier_wait");
		}
		for (int j = 0; j < procs; j++) /* all done with phase k? */
			if (sh->done[j] < k + 1)
				sh->behind++;
		/* The serial process sums after everyone was let go, while
		 * Python's action runs before: a second wait publishes
		 * total. */
		rc = pthread_barrier_wait(&sh->bar);
		if (rc != 0 && rc != PTHREAD_BARRIER_SERIAL_THREAD)
			mp_die_en(rc, "pthread_barrier_wait");
		sh->progress++;
	}
}

/* s seconds from now on CLOCK_MONOTONIC, the clock of our condition. */
static struct timespec deadline_in(double s)
{
	return mp_deadline(CLOCK_MONOTONIC, s);
}

/* Barrier.wait(timeout): the arrival index, or -1 for BrokenBarrierError.
 * The last to arrive runs the action, then opens the barrier. */
static int bbar_wait(struct bbar *b, double timeout_s)
{
	struct timespec deadline = deadline_in(timeout_s);
	int rc = 0;

	MP_CHECK_PT(pthread_mutex_lock(&b->lock));
	unsigned long round = b->round;
	int index = b->broken ? -1 : b->count++;

	if (index == b->parties - 1) {
		b->actions++; /* the action, before anyone leaves */
		b->count = 0;
		b->round++;
	}
	/* Every arrival is news: for a watcher of n_waiting too. */
	MP_CHECK_PT(pthread_cond_broadcast(&b->cv));
	while (index >= 0 && b->round == round && !b->broken && rc == 0)
		rc = pthread_cond_timedwait(&b->cv, &b->lock, &deadline);
	if (rc != 0 && rc != ETIMEDOUT)
		mp_die_en(rc, "pthread_cond_timedwait");
	if (index >= 0 && b->round == round) { /* not opened: broken */
		b->broken = true; /* a timeout breaks it for everyone */
		MP_CHECK_PT(pthread_cond_broadcast(&b->cv));
		index = -1;
	}
	MP_CHECK_PT(pthread_mutex_unlock(&b->lock));
	return index;
}

/* Barrier.abort(), once n processes are waiting (or 10 s passed): how
 * many were waiting. */
static int bbar_abort_when(struct bbar *b, int n)
{
	struct timespec deadline = deadline_in(10);
	int rc = 0;

	MP_CHECK_PT(pthread_mutex_lock(&b->lock));
	while (b->count < n && rc == 0)
		rc = pthread_cond_timedwait(&b->cv, &b->lock, &deadline);
	int waiting = b->count;

	b->broken = true;
	MP_CHECK_PT(pthread_cond_broadcast(&b->cv));
	MP_CHECK_PT(pthread_mutex_unlock(&b->lock));
	return waiting;
}

static void bbar_init(struct bbar *b, int parties)
{
	pthread_mutexattr_t ma;
	pthread_condattr_t ca;

	MP_CHECK_PT(pthread_mutexattr_init(&ma));
	MP_CHECK_PT(pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED));
	MP_CHECK_PT(pthread_mutex_init(&b->lock, &ma));
	MP_CHECK_PT(pthread_mutexattr_destroy(&ma));
	MP_CHECK_PT(pthread_condattr_init(&ca));
	MP_CHECK_PT(pthread_condattr_setpshared(&ca, PTHREAD_PROCESS_SHARED));
	MP_CHECK_PT(pthread_condattr_setclock(&ca, CLOCK_MONOTONIC));
	MP_CHECK_PT(pthread_cond_init(&b->cv, &ca));
	MP_CHECK_PT(pthread_condattr_destroy(&ca));
	b->parties = parties;
	b->count = b->actions = 0;
	b->broken = false;
}

/* False with EBUSY: a process still uses it (one nobody joined). */
static bool bbar_destroy(struct bbar *b)
{
	MP_CHECK_PT(pthread_cond_destroy(&b->cv));
	int err = pthread_mutex_destroy(&b->lock);

	if (err != 0 && err != EBUSY)
		mp_die_en(err, "pthread_mutex_destroy");
	return err == 0;
}

/* procs children that each wait() rounds times, adding up their arrival
 * indexes (each round gives 0..procs-1 once) and counting broken waits. */
static void run_parties(struct shared *sh, int procs, int rounds, double t,
			double t_others)
{
	for (int i = 0; i < procs; i++)
		if (mp_fork() == 0) {
			for (int r = 0; r < rounds; r++) {
				int index = bbar_wait(&sh->bb,
						      i == 0 ? t : t_others);

				sh->progress++;
				if (index < 0) {
					sh->broken++;
					break;
				}
				sh->index_sum += index;
			}
			_exit(EXIT_SUCCESS);
		}
}

int main(int argc, char *argv[])
{
	long procs = 4, phases = 200;
	double timeout = 0.2;
	const struct mp_opt opts[] = {
		MP_OPT_L("procs", &procs, 2, MAX_PROCS,
			 "processes in lockstep"),
		MP_OPT_L("phases", &phases, 1, 100000, "phases of part 1"),
		MP_OPT_D("timeout", &timeout, 0.01, 600,
			 "seconds before a short barrier breaks"),
	};

	mp_parse_options(argc, argv, "N processes in lockstep with a "
			 "pthread barrier; a barrier with timeout and abort.",
			 opts, sizeof opts / sizeof opts[0]);
	mp_stop_on_signals();
	int n = (int)procs, p = (int)phases;

	/* 1. A process-shared pthread barrier in shared memory, and a
	 *    watchdog for the waits that have no timeout. */
	struct shared *sh = mp_shm_alloc(sizeof *sh);
	if (!sh)
		mp_die("mp_shm_alloc");
	/* The last bound (mp_watchdog): pthread_barrier_wait has no timeout,
	 * and a barrier, mutex or condition that is not process-shared loses
	 * its wake-ups across processes.  sh->progress standing still longer
	 * than any wait of the lesson may take ends the run in MISMATCH. */
	MP_CHECK_PT(mp_watchdog(3 + timeout, &sh->progress, "a lost wake-up"));
	pthread_barrierattr_t ba;
	MP_CHECK_PT(pthread_barrierattr_init(&ba));
	MP_CHECK_PT(pthread_barrierattr_setpshared(&ba,
						   PTHREAD_PROCESS_SHARED));
	MP_CHECK_PT(pthread_barrier_init(&sh->bar, &ba, (unsigned)n));
	MP_CHECK_PT(pthread_barrierattr_destroy(&ba));

	/* 2. N processes, phase after phase; each checks that nobody is
	 * behind, one sums per phase. */
	for (int i = 0; i < n; i++)
		if (mp_fork() == 0) {
			lockstep(sh, i, n, p);
			_exit(EXIT_SUCCESS);
		}
	mp_wait_all();
	long want = 1;
	for (int k = 0; k < p; k++) {
		long sum = 0;
		for (int i = 0; i < n; i++)
			sum += (want * (i + 2) + k) % MOD;
		want = sum % MOD;
	}
	mp_say("parent", "pthread_barrier: %d processes x %d phases, %d serial "
	       "waiters (one a phase), %d seen behind", n, p, sh->serial,
	       sh->behind);
	mp_say("parent", "total after phase %d: %ld (computed again alone: "
	       "%ld)", p, sh->total, want);
	MP_CHECK_PT(pthread_barrier_destroy(&sh->bar));

	bool destroyed = true; /* each barrier of ours free when destroyed */

	/* 3. Our own barrier: works as one, with Python's action.  Every
	 *    arrival wakes all: a waiter left asleep would leave only at its
	 *    2 s deadline. */
	bbar_init(&sh->bb, n);
	int64_t t3 = mp_now_ns();
	run_parties(sh, n, 3, 2, 2);
	mp_wait_all();
	double took3 = mp_elapsed_s(t3);
	int actions = sh->bb.actions;
	bool indexes = sh->broken == 0 &&
		       sh->index_sum == 3L * n * (n - 1) / 2;
	mp_say("parent", "own barrier: 3 waits in %.1f ms, action() ran %d "
	       "times, arrival indexes %s", took3 * 1e3, actions,
	       indexes ? "0..N-1 each time" : "WRONG");
	destroyed &= bbar_destroy(&sh->bb);

	/* 4. One party never comes: the first wait() to time out (the one
	 *    with the short timeout) breaks it for all, who wait up to 2 s
	 *    longer: they must leave with it, not at their own deadline. */
	bbar_init(&sh->bb, n + 1);
	sh->broken = 0;
	int64_t t0 = mp_now_ns();
	run_parties(sh, n, 1, timeout, timeout + 2);
	mp_wait_all();
	double took = mp_elapsed_s(t0);
	int broken_timeout = sh->broken;
	mp_say("parent", "%d of %d parties, timeout %g s (the others %g s): "
	       "%d got BrokenBarrierError after %.1f ms", n, n + 1, timeout,
	       timeout + 2, broken_timeout, took * 1e3);
	destroyed &= bbar_destroy(&sh->bb);

	/* 5. abort() wakes every waiter with BrokenBarrierError. */
	bbar_init(&sh->bb, n + 1);
	sh->broken = 0;
	run_parties(sh, n, 1, 30, 30);
	int asleep = bbar_abort_when(&sh->bb, n);
	mp_wait_all();
	int broken_abort = sh->broken;
	mp_say("parent", "abort() with %d asleep in wait(): %d got "
	       "BrokenBarrierError", asleep, broken_abort);
	destroyed &= bbar_destroy(&sh->bb);

	/* 6. Judge. */
	/* Every child joined: none left running, none left a zombie. */
	bool reaped = waitpid(-1, NULL, WNOHANG) == -1 && errno == ECHILD;

	if (!reaped)
		mp_say("parent", "a child was never joined (no waitpid)");
	bool ok = sh->serial == p && sh->behind == 0 && sh->total == want &&
		  actions == 3 && indexes && took3 < 2 && broken_timeout == n &&
		  took >= timeout && took < timeout + 1 && asleep == n &&
		  broken_abort == n && destroyed && reaped;
	printf("result: phases=%d serial=%d behind=%d total=%ld actions=%d "
	       "broken=%d+%d %s\n", p, (int)sh->serial, (int)sh->behind,
	       sh->total, actions, broken_timeout, broken_abort,
	       ok ? "OK" : "MISMATCH");
	MP_CHECK(mp_shm_free(sh, sizeof *sh));
	return ok ? EXIT_SUCCESS : EXIT_FAILURE;
}
