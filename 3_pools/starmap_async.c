/* 3_pools/starmap_async.c -- several arguments per task, starmap_async, and
 * what reaches the caller when a task fails or kills its worker
 *
 * Python:  pool.starmap(powmod, [(base, exp, mod), ...])  # powmod(*args)
 *          r = pool.starmap_async(powmod, args, callback=ok,
 *                                 error_callback=bad)
 *          r.get()          # re-raises the task's exception, e.g. ValueError
 *          # a worker killed mid-task (OOM killer, segfault in a C extension):
 *          # get() without a timeout waits forever
 * CPython: Lib/multiprocessing/pool.py.  starmap() is _map_async(func, args,
 *          starmapstar): each chunk travels pickled as (func, tuple of
 *          argument tuples) through _inqueue, and the worker runs
 *          itertools.starmap over it and sends the list back on _outqueue.
 *          worker() catches the task's Exception, wraps it with its traceback
 *          as text (ExceptionWithTraceback) and sends (False, exc) back;
 *          MapResult keeps the first failure to *arrive* (not the lowest
 *          index), drops every result, runs error_callback once all chunks
 *          are in, and get() raises the exception with a RemoteTraceback as
 *          its __cause__.  A worker that dies sends nothing: _worker_handler
 *          forks a replacement, but no one sends the lost chunk again, so the
 *          MapResult never completes (bpo-22393 from 2014, now gh-66587; the
 *          fixes proposed, PRs 10441 and 16103, were closed unmerged).
 *          concurrent.futures.ProcessPoolExecutor fails with
 *          BrokenProcessPool instead.
 * C:       mp_pool_starmap, mp_pool_starmap_async with an mp_pool_callback,
 *          an errno-style return code from the task, mp_pool_last_error()
 *          (index, code, signal, pid); kill(getpid(), SIGKILL) and abort()
 *          inside a task; mp_pool_stats (workers_died, retried_items); the
 *          Python twin starmap_async.py, run with fork + execl.
 * Usage:   starmap_async [--workers N (0 = CPUs we may run on, 0..256)]
 *                        [--items N (1000, 10..1000000)]
 *                        [--work N (100, 1..10^10): multiplications a task]
 * Output:  [parent 11317 +3.4ms] 3. starmap_async with mod=0 at
 *                                   items 300 and 700: get() = -1, errno EDOM;
 *                                   last error: item 300, code EDOM,
 *                                   from the task: yes
 *          [parent 11317 +4.0ms] 4. item 500 SIGKILLed its worker once:
 *                                   1000/1000 right in 0.5 ms; workers died 1,
 *                                   items run again 125
 *          [parent 11317 +5.1ms] 5. item 500 aborts every time: starmap = -1,
 *                                   errno EOWNERDEAD after 1.1 ms; item 500,
 *                                   killed by SIGABRT, last pid 11322;
 *                                   3 workers died; others 999/999 right
 *          [python 11324] 4. item 500 SIGKILLed its worker: get(timeout=0.5)
 *                            raised TimeoutError after 0.50 s; a new apply() on
 *                            the same pool gives 1024, and the starmap is still
 *                            ready()=False: ...
 *          result: starmap 1000/1000, error EDOM at item 300 via get and
 *                  callback yes, killed worker retried 1000/1000,
 *                  abort -> EOWNERDEAD at item 500 after 3 deaths yes,
 *                  python's get() timed out yes OK
 * Try this: --items 20 --work 100000000 (about a second a task) and, during
 *          step 2, kill -9 a worker (pgrep -P <parent pid>): starmap still
 *          returns every result, as in step 4.  python3 starmap_async.py
 *          100 5 waits 5 s for a call that will never complete.
 */
#define _GNU_SOURCE /* sigabbrev_np */
#include "mp.h"

#include <sys/resource.h>

enum { MOD = 1000003, KILL_FIRST_TRY = 1, ABORT_ALWAYS = 2 };

/* A task's argument tuple (base, exp, mod) is a struct in C: plain bytes,
 * copied into the pool's shared memory at submission. */
struct powmod {
	int64_t base, exp, mod;
};

/* The same call plus a fault to inject.  armed points into a MAP_SHARED page
 * mapped before the pool forked: the same address and the same page in every
 * worker, replacements included.  (A pointer into the parent's heap would
 * reach each worker's private copy of it instead.) */
struct faulty {
	struct powmod call;
	int64_t fault;
	_Atomic int64_t *armed;
};

/* The task: base^exp mod mod by exp multiplications (deliberately slow: the
 * cost of a task is its exp).  Returns EDOM for mod 0, where Python's
 * pow(b, e, 0) raises ValueError. */
static int powmod_slow(const void *arg, void *res)
{
	const struct powmod *p = arg;

	if (p->mod <= 0)
		return EDOM;
	uint64_t r = 1 % (uint64_t)p->mod,
		 b = (uint64_t)p->base % (uint64_t)p->mod;

	for (int64_t e = 0; e < p->exp; e++)
		r = r * b % (uint64_t)p->mod; /* both < 2^20: no overflow */
	*(int64_t *)res = (int64_t)r;
	return 0;
}

/* powmod_slow, unless the item says to die first. */
static int powmod_faulty(const void *arg, void *res)
{
	const struct faulty *f = arg;

	if (f->fault == KILL_FIRST_TRY && atomic_exchange(f->armed, 0) == 1 &&
	    kill(getpid(), SIGKILL) == -1) /* as the OOM killer would */
		return errno;
	if (f->fault == ABORT_ALWAYS) { /* as a failed assert() would */
		if (setrlimit(RLIMIT_CORE, &(struct rlimit){ 0, 0 }) == -1)
			return errno; /* (no core file for a planned crash) */
		abort();
	}
	return powmod_slow(&f->call, res);
}

/* The parent's own check: square-and-multiply, another algorithm. */
static int64_t powmod_fast(struct powmod p)
{
	uint64_t r = 1, b = (uint64_t)p.base % (uint64_t)p.mod;

	for (uint64_t e = (uint64_t)p.exp; e;
	     e >>= 1, b = b * b % (uint64_t)p.mod)
		if (e & 1)
			r = r * b % (uint64_t)p.mod;
	return (int64_t)(r % (uint64_t)p.mod);
}

/* How many results match, skipping the items listed in skip[0..nskip-1]. */
static long count_good(const struct powmod *args, const int64_t *out, long n,
		       const long *skip, int nskip)
{
	long good = 0;

	for (long i = 0; i < n; i++) {
		bool skipped = false;

		for (int s = 0; s < nskip; s++)
			skipped |= i == skip[s];
		good += !skipped && out[i] == powmod_fast(args[i]);
	}
	return good;
}

/* starmap_async's callback (Python's callback and error_callback in one). */
struct outcome {
	long calls;
	int code;
	size_t index;
};

static void on_done(void *arg, const void *result,
		    const struct mp_pool_error *err)
{
	struct outcome *o = arg;

	/* result: the caller's results array, complete when err is NULL */
	(void)result;
	o->calls++;
	o->code = err ? err->code : 0;
	o->index = err ? err->index : MP_POOL_NO_INDEX;
}

/* "KILL" for SIGKILL, "(none)" for 0. */
static const char *sname(int sig)
{
	const char *n = sig ? sigabbrev_np(sig) : "(none)";

	return n ? n : "?";
}

/* Each line of the twin, printed as it comes; "4. ... raised TimeoutError"
 * is Python's Pool still waiting for the chunk its dead worker took. */
static void twin_line(const char *line, void *arg)
{
	bool *python_hung = arg;

	if (printf("%s\n", line) < 0 || fflush(stdout) == EOF)
		mp_die("stdout");
	if (strstr(line, "4. item") && strstr(line, "raised TimeoutError"))
		*python_hung = true;
}

/* Steps 3 and 4 in Python: the twin beside this file prints what it sees.
 * Returns "yes" when Python's get() timed out on the killed worker's call
 * (where mp_pool completed), "no" when it did not, "skipped" without
 * python3. */
static const char *python_twin(long n)
{
	char items[32];
	bool python_hung = false;

	if (!mp_python3()) {
		mp_say("parent", "7. python3 was not found at configure time: "
				 "no Python side by side");
		return "skipped";
	}
	snprintf(items, sizeof items, "%ld", n);
	mp_say("parent",
	       "7. steps 3 and 4 in Python (starmap_async.py %s):", items);
	int st =
	    mp_run_twin(MP_LESSON_DIR "/starmap_async.py",
			(char *[]){ items, NULL }, 60, twin_line, &python_hung);

	if (st == -1)
		mp_die("python twin");
	return WIFEXITED(st) && WEXITSTATUS(st) == 0 && python_hung ? "yes"
								    : "no";
}

int main(int argc, char *argv[])
{
	long workers = 0, n = 1000, work = 100;
	const struct mp_opt opts[] = {
		MP_OPT_L("workers", &workers, 0, MP_POOL_MAX_WORKERS,
			 "worker processes, 0 = the CPUs we may run on"),
		MP_OPT_L("items", &n, 10, 1000000, "tasks per call"),
		MP_OPT_L("work", &work, 1, 10000000000,
			 "multiplications per task (its exponent)"),
	};

	mp_parse_options(argc, argv,
			 "starmap, starmap_async, failing and crashing tasks.",
			 opts, sizeof opts / sizeof opts[0]);
	mp_stop_on_signals();

	/* 1. Shared memory for the fault flag, then the pool (which forks). */
	_Atomic int64_t *armed = mp_shm_alloc(sizeof *armed);
	struct powmod *args = malloc(sizeof *args * (size_t)n);
	struct faulty *fargs = malloc(sizeof *fargs * (size_t)n);
	int64_t *out = malloc(sizeof *out * (size_t)n);

	if (!armed || !args || !fargs || !out)
		mp_die("allocating");
	struct mp_pool *pool = mp_pool_create(
	    &(struct mp_pool_options){ .workers = (int)workers });

	if (!pool)
		mp_die("mp_pool_create");
	const struct mp_pool_error *e = mp_pool_last_error(pool);

	mp_say("parent",
	       "1. pool of %d workers; the fault flag is at %p in every one of "
	       "them",
	       mp_pool_workers(pool), (void *)armed);

	/* 2. starmap(powmod, [(base, exp, mod), ...]): one struct per task. */
	for (long i = 0; i < n; i++)
		args[i] = (struct powmod){ i + 2, work + i % 7, MOD };
	int64_t t0 = mp_now_ns();

	if (mp_pool_starmap(pool, powmod_slow, args, (size_t)n, sizeof *args,
			    out, sizeof *out, 0) == -1)
		mp_die("mp_pool_starmap");
	long good1 = count_good(args, out, n, NULL, 0);

	mp_say("parent",
	       "2. starmap(powmod, [(base, exp, mod), ...]): %ld/%ld right in "
	       "%.1f ms",
	       good1, n, mp_elapsed_s(t0) * 1e3);

	/* 3. starmap_async with a callback, two items with mod 0 among them:
	 *    every other item still runs, and the error names the lowest
	 *    one. */
	long bad[2] = { n * 3 / 10, n * 7 / 10 };
	struct outcome o = { 0 };

	args[bad[1]].mod = 0;
	args[bad[0]].mod = 0;
	struct mp_pool_async *h = mp_pool_starmap_async(
	    pool, powmod_slow, args, (size_t)n, sizeof *args, out, sizeof *out,
	    0, on_done, &o);

	if (!h)
		mp_die("mp_pool_starmap_async");
	int rc = mp_pool_get(h, NULL, MP_POOL_FOREVER);
	int err = errno;

	mp_pool_async_free(h);
	bool fail_ok = rc == -1 && err == EDOM && e->code == EDOM && e->task &&
		       e->index == (size_t)bad[0] && o.calls == 1 &&
		       o.code == EDOM && o.index == (size_t)bad[0];
	long good3 = count_good(args, out, n, bad, 2);

	mp_say("parent",
	       "3. starmap_async with mod=0 at items %ld and %ld: get() = %d, "
	       "errno %s; "
	       "last error: item %zu, code %s, from the task: %s",
	       bad[0], bad[1], rc, mp_errname(err), e->index,
	       mp_errname(e->code), e->task ? "yes" : "no");
	mp_say("parent",
	       "   callback ran %ld time(s) with item %zu, %s; the other "
	       "%ld/%ld results "
	       "are there (Python: ValueError from whichever chunk failed "
	       "first, results dropped)",
	       o.calls, o.index, mp_errname(o.code), good3, n - 2);
	args[bad[0]].mod = args[bad[1]].mod = MOD;

	/* 4. A task whose worker is SIGKILLed the first time it runs it.  The
	 *    pool sees the death (a pidfd turns readable), forks a replacement
	 *    and runs the unfinished part again.  Python: hangs here for
	 *    good. */
	struct mp_pool_stats before, after;
	long mid = n / 2;

	for (long i = 0; i < n; i++)
		fargs[i] =
		    (struct faulty){ args[i], i == mid ? KILL_FIRST_TRY : 0,
				     armed };
	atomic_store(armed, 1);
	mp_pool_stats(pool, &before);
	t0 = mp_now_ns();
	/* -1 here (EOWNERDEAD: the item killed every worker that ran it) is
	 * what step 5 provokes on purpose; here it is a MISMATCH. */
	rc = mp_pool_starmap(pool, powmod_faulty, fargs, (size_t)n,
			     sizeof *fargs, out, sizeof *out, 0);
	err = errno;
	if (rc == -1)
		mp_say("parent", "4. starmap failed: %s", mp_errname(err));
	mp_pool_stats(pool, &after);
	long good4 = rc == -1 ? 0 : count_good(args, out, n, NULL, 0);
	uint64_t died4 = after.workers_died - before.workers_died;

	mp_say(
	    "parent",
	    "4. item %ld SIGKILLed its worker once: %ld/%ld right in %.1f ms; "
	    "workers died %" PRIu64 ", items run again %" PRIu64,
	    mid, good4, n, mp_elapsed_s(t0) * 1e3, died4,
	    after.retried_items - before.retried_items);

	/* 5. A task that aborts every time: retried MP_POOL_DEFAULT_RETRIES
	 *    times on fresh workers, then the call fails with EOWNERDEAD. */
	fargs[mid].fault = ABORT_ALWAYS;
	before = after;
	t0 = mp_now_ns();
	rc = mp_pool_starmap(pool, powmod_faulty, fargs, (size_t)n,
			     sizeof *fargs, out, sizeof *out, 0);
	err = errno;
	mp_pool_stats(pool, &after);
	uint64_t died5 = after.workers_died - before.workers_died;
	long good5 = count_good(args, out, n, &mid, 1);
	bool crash_ok = rc == -1 && err == EOWNERDEAD &&
			e->code == EOWNERDEAD && e->task &&
			e->index == (size_t)mid && e->signal == SIGABRT &&
			died5 == 1 + MP_POOL_DEFAULT_RETRIES;

	mp_say("parent",
	       "5. item %ld aborts every time: starmap = %d, errno %s after "
	       "%.1f ms; item %zu, "
	       "killed by SIG%s, last pid %jd; %" PRIu64
	       " workers died; others %ld/%ld right",
	       mid, rc, mp_errname(err), mp_elapsed_s(t0) * 1e3, e->index,
	       sname(e->signal), (intmax_t)e->pid, died5, good5, n - 1);

	/* 6. close + join: the pool is still whole after all that. */
	MP_CHECK(mp_pool_close(pool));
	MP_CHECK(mp_pool_join(pool));
	mp_pool_stats(pool, &after);
	mp_say("parent",
	       "6. close + join: every worker exited normally; %" PRIu64
	       " were started "
	       "in all, %" PRIu64 " died",
	       after.workers_started, after.workers_died);
	mp_pool_destroy(pool);
	MP_CHECK(mp_shm_free(armed, sizeof *armed));
	free(args);
	free(fargs);
	free(out);
	const char *python_hung = python_twin(n);

	bool ok = good1 == n && fail_ok && good3 == n - 2 && good4 == n &&
		  died4 == 1 && crash_ok && good5 == n - 1 &&
		  strcmp(python_hung, "no") != 0;

	printf("result: starmap %ld/%ld, error EDOM at item %zu via get and "
	       "callback %s, "
	       "killed worker retried %ld/%ld, abort -> EOWNERDEAD at item %ld "
	       "after %" PRIu64 " deaths %s, python's get() timed out %s %s\n",
	       good1, n, o.index, fail_ok ? "yes" : "no", good4, n, mid, died5,
	       crash_ok ? "yes" : "no", python_hung, ok ? "OK" : "MISMATCH");
	return ok ? EXIT_SUCCESS : EXIT_FAILURE;
}
