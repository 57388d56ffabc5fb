/* tests/test_pool_burst.c -- lib/mp_pool: a burst of apply_async calls on
 * an idle pool reaches every sleeping worker
 *
 * Python's Pool(W) hands K >= W queued tasks to all W workers at once.  A
 * pool that saves wake-up system calls must not save parallelism with them:
 * K tasks that each sleep D ms on an idle pool of W workers must run on
 * min(K, W) distinct workers and take about ceil(K / W) * D ms.  The bound
 * asserted is twice that ideal (room for a loaded machine: a sleeping task
 * needs no CPU), and the same burst runs once more in a child pinned to a
 * single CPU, where sleeping tasks must still overlap.
 *
 * Every wait is bounded: mp_pool_get() with a timeout, and a watchdog
 * (alarm) that ends the run, naming the cause.  Assertions stay in the
 * parent's main thread; the pinned child reports through its exit status.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <sched.h>
#include <time.h>

#include "mp.h"

enum { WATCHDOG_S = 60, MAXK = 64 };
#include "watchdog.h"
#define GET_S 20.0  /* far above any correct run */

/* The task: sleep the milliseconds it is given, return the worker's pid. */
static int nap(const void *arg, void *result)
{
	long ms = *(const long *)arg;
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) == -1)
		;
	*(pid_t *)result = getpid();
	return 0;
}

/* Submit k naps of ms each to a fresh, idle pool of w workers, collect
 * them, and report how many distinct pids ran them and how long the burst
 * took.  0, or -1 with errno (usable in a child: no assertion here). */
static int burst(int w, int k, long ms, int *distinct, int64_t *elapsed_ns)
{
	struct mp_pool *p = mp_pool_create(&(struct mp_pool_options){
		.workers = w });
	struct mp_pool_async *h[MAXK];
	pid_t pids[MAXK];
	int rc = 0;

	if (!p || k > MAXK)
		return -1;
	/* Let every worker finish its spin and fall asleep on the futex. */
	struct timespec idle = { 0, 50000000 };

	nanosleep(&idle, NULL);
	int64_t t0 = mp_now_ns();

	for (int i = 0; i < k; i++) {
		h[i] = mp_pool_apply_async(p, nap, &ms, sizeof ms,
					   sizeof(pid_t), NULL, NULL);
		if (!h[i])
			rc = -1;
	}
	for (int i = 0; i < k; i++)
		if (h[i] && mp_pool_get(h[i], &pids[i], GET_S) == -1)
			rc = -1;
	*elapsed_ns = mp_now_ns() - t0;
	for (int i = 0; i < k; i++)
		mp_pool_async_free(h[i]);
	*distinct = 0;
	for (int i = 0; i < k; i++) {
		bool seen = false;

		for (int j = 0; j < i; j++)
			seen = seen || pids[j] == pids[i];
		*distinct += !seen;
	}
	mp_pool_destroy(p);
	return rc;
}

/* The bursts tried: W workers, K tasks, D ms each. */
static const struct { int w, k; long ms; } cases[] = {
	{ 4, 8, 100 }, { 4, 4, 100 }, { 3, 7, 100 }, { 8, 8, 100 },
};
enum { NCASES = sizeof cases / sizeof cases[0] };

/* Run case c: 0 right, 1 too few workers, 2 too slow, -1 a call failed.
 * Too slow gets one more try: on a shared machine a stall of everything
 * (not the pool) can eat the margin once; too few workers never does. */
static int try_case(int c, const char *label)
{
	int w = cases[c].w, k = cases[c].k, rc = 2;
	long ms = cases[c].ms;
	int64_t ideal = (int64_t)((k + w - 1) / w) * ms * 1000000;

	for (int attempt = 0; attempt < 2 && rc == 2; attempt++) {
		int distinct = 0;
		int64_t ns = 0;

		if (burst(w, k, ms, &distinct, &ns) == -1)
			return -1;
		printf("  %sW=%d K=%d %ld ms: %d workers, %.0f ms (ideal "
		       "%.0f)\n", label, w, k, ms, distinct, ns / 1e6,
		       ideal / 1e6);
		fflush(stdout);
		rc = distinct != (k < w ? k : w) ? 1 : ns >= 2 * ideal ? 2 : 0;
	}
	return rc;
}

static void test_burst_reaches_every_sleeper(void **state)
{
	(void)state;
	for (int c = 0; c < NCASES; c++)
		assert_int_equal(try_case(c, ""), 0);
}

/* The same bursts in a child pinned to one CPU before the pool starts (the
 * workers inherit the affinity).  Exit status: 0 right, 10 + c if case c
 * ran on too few workers, 20 + c if it was too slow, 4 if a call failed. */
static void test_burst_on_one_cpu(void **state)
{
	(void)state;
	pid_t pid = mp_fork();

	if (pid == 0) {
		cpu_set_t all, one;

		CPU_ZERO(&one);
		if (sched_getaffinity(0, sizeof all, &all) == -1)
			_exit(4);
		for (int c = 0; c < CPU_SETSIZE; c++)
			if (CPU_ISSET(c, &all)) {
				CPU_SET(c, &one);
				break;
			}
		if (sched_setaffinity(0, sizeof one, &one) == -1)
			_exit(4);
		for (int c = 0; c < NCASES; c++) {
			int rc = try_case(c, "one CPU, ");

			if (rc)
				_exit(rc == -1 ? 4 : 10 * rc + c);
		}
		_exit(0);
	}
	assert_true(pid > 0);
	assert_int_equal(mp_waitpid(pid), 0);
}



int main(void)
{
	const struct CMUnitTest tests[] = {
		WATCHED(test_burst_reaches_every_sleeper),
		WATCHED(test_burst_on_one_cpu),
	};

	if (watchdog_init() == -1)
		return EXIT_FAILURE;
	return cmocka_run_group_tests(tests, NULL, NULL);
}
