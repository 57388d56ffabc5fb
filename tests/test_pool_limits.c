/* tests/test_pool_limits.c -- lib/mp_pool at the edges: no fork possible,
 * workers killed while they start, workers stopped, little address space
 *
 * Each case that could hang runs in a child process that owns the pool and
 * reports through its exit status; the parent waits for it through a pidfd
 * with a timeout, so a pool that hangs fails the test instead of hanging
 * it.  Assertions stay in the parent's main thread.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/pidfd.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>

#include "mp.h"
#include "pool_tasks.h"

enum { WATCHDOG_S = 120, CHILD_S = 30 };
#include "watchdog.h"
#define GET_S 20.0  /* far above any correct run */

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) == -1)
		;
}

/* Run fn in a child and return its exit status (0..255), or -1 if it did
 * not end within CHILD_S seconds (then it is killed) or was killed. */
static int in_child(int (*fn)(void))
{
	pid_t pid = mp_fork();

	if (pid == 0) {
		int rc = fn();

		fflush(stdout);
		_exit(rc);
	}
	int pfd = pidfd_open(pid, 0);
	struct pollfd q = { .fd = pfd, .events = POLLIN };
	int status = 0;

	if (pfd == -1 || poll(&q, 1, CHILD_S * 1000) != 1) {
		printf("  the child did not finish in %d s: killed\n",
		       CHILD_S);
		kill(pid, SIGKILL);
	}
	while (waitpid(pid, &status, 0) == -1 && errno == EINTR)
		;
	if (pfd != -1)
		close(pfd);
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* ---- no replacement worker can be forked --------------------------- */

/* Exit status: 0 right (EAGAIN, twice, promptly), 77 cannot set up, 8 the
 * call succeeded, 9 another errno. */
static int no_fork_child(void)
{
	/* RLIMIT_NPROC does not bind root: become nobody first. */
	if (getuid() == 0 && (setgid(65534) == -1 || setuid(65534) == -1))
		return 77;
	struct mp_pool *p = mp_pool_create(&(struct mp_pool_options){
		.workers = 2 });
	pid_t pids[2];
	struct rlimit one = { 1, 1 };

	if (!p || mp_pool_pids(p, pids, 2) != 2 ||
	    setrlimit(RLIMIT_NPROC, &one) == -1)
		return 77;
	if (kill(pids[0], SIGKILL) == -1 || kill(pids[1], SIGKILL) == -1)
		return 77;
	for (int round = 0; round < 2; round++) {
		int64_t x = 3, y = 0;
		int64_t t0 = mp_now_ns();
		int r = mp_pool_apply(p, square, &x, sizeof x, &y, sizeof y);
		int e = errno;

		printf("  round %d: apply -> %d (%s) after %.0f ms\n", round,
		       r, r ? mp_errname(e) : "ok", (mp_now_ns() - t0) / 1e6);
		if (r == 0)
			return 8;
		if (e != EAGAIN)
			return 9;
	}
	return mp_pool_destroy(p) == 0 ? 0 : 10;
}

static void test_no_fork_means_eagain_not_a_hang(void **state)
{
	(void)state;
	int rc = in_child(no_fork_child);

	if (rc == 77)
		skip();  /* could not drop root or set the limit */
	assert_int_equal(rc, 0);
}

/* ---- workers killed while they start ------------------------------- */

/* The fork handler below keeps a new worker "starting" (before its
 * initializer, before it is ready) for a while, so that the test can kill
 * it there.  It runs in every child this test forks; off by default. */
static volatile sig_atomic_t slow_start;

static void atfork_child(void)
{
	if (slow_start)
		sleep_ms(300);
}

/* Kill the worker of a 1-worker pool right after each start, five times in
 * a row, with no initializer: the pool must carry on, not fail with
 * ECHILD as if an initializer kept failing. */
static int killed_at_start_child(void)
{
	struct mp_pool *p = mp_pool_create(&(struct mp_pool_options){
		.workers = 1 });
	int64_t x = 7, y = 0;

	if (!p)
		return 77;
	slow_start = 1;
	struct mp_pool_async *h = mp_pool_apply_async(p, square, &x, sizeof x,
						      sizeof y, NULL, NULL);
	pid_t last = 0;

	if (!h)
		return 2;
	for (int kills = 0; kills < 5; kills++) {
		pid_t now = 0;

		/* Wait (bounded) for the replacement of the last one. */
		for (int i = 0; i < 2000; i++) {
			if (mp_pool_poll(p) == -1)  /* reaps, replaces */
				return 2;
			if (mp_pool_pids(p, &now, 1) == 1 && now != last)
				break;
			sleep_ms(1);
		}
		if (now == last || kill(now, SIGKILL) == -1) {
			printf("  kill %d: no new worker (last %jd, now %jd)"
			       "\n", kills, (intmax_t)last, (intmax_t)now);
			return 3;
		}
		last = now;
	}
	slow_start = 0;  /* the next replacement starts normally */
	int r = mp_pool_get(h, &y, GET_S);

	printf("  after 5 kills at start-up: get -> %d (%s), y = %jd\n", r,
	       r ? mp_errname(errno) : "ok", (intmax_t)y);
	if (r == -1)
		return errno == ECHILD ? 4 : 5;
	mp_pool_async_free(h);
	x = 8;
	r = mp_pool_apply(p, square, &x, sizeof x, &y, sizeof y);
	printf("  and a new call: apply -> %d (%s), y = %jd\n", r,
	       r ? mp_errname(errno) : "ok", (intmax_t)y);
	if (r == -1)
		return errno == ECHILD ? 4 : 5;
	return y == 65 && mp_pool_destroy(p) == 0 ? 0 : 6;
}

static void test_kills_at_start_are_not_initializer_failures(void **state)
{
	(void)state;
	assert_int_equal(in_child(killed_at_start_child), 0);
}

/* An initializer that kills its worker is still an initializer failure:
 * the pool gives up with ECHILD instead of forking forever. */
static void poisoned_init(void *arg)
{
	(void)arg;
	if (slow_start)
		raise(SIGKILL);
}

static int failing_initializer_child(void)
{
	struct mp_pool *p = mp_pool_create(&(struct mp_pool_options){
		.workers = 1, .initializer = poisoned_init });
	int64_t x = 7, y = 0;
	pid_t pid;

	if (!p || mp_pool_pids(p, &pid, 1) != 1)
		return 77;
	slow_start = 1;  /* every replacement now dies in its initializer */
	if (kill(pid, SIGKILL) == -1)
		return 77;
	int r = mp_pool_apply(p, square, &x, sizeof x, &y, sizeof y);

	printf("  initializer that kills: apply -> %d (%s)\n", r,
	       r ? mp_errname(errno) : "ok");
	return r == -1 && errno == ECHILD ? 0 : 1;
}

static void test_initializer_failures_still_give_up(void **state)
{
	(void)state;
	assert_int_equal(in_child(failing_initializer_child), 0);
}

/* ---- stopped workers ----------------------------------------------- */

static void test_stopped_workers_are_seen_and_timed_out(void **state)
{
	(void)state;
	struct mp_pool *p = mp_pool_create(&(struct mp_pool_options){
		.workers = 2 });
	struct mp_pool_stats st;
	pid_t pids[2];
	long ms = 300, got = 0;

	assert_non_null(p);
	assert_int_equal(mp_pool_pids(p, pids, 2), 2);
	struct mp_pool_async *h[2];

	for (int i = 0; i < 2; i++) {
		h[i] = mp_pool_apply_async(p, nap, &ms, sizeof ms, sizeof ms,
					   NULL, NULL);
		assert_non_null(h[i]);
	}
	sleep_ms(50);  /* both workers are in their nap */
	for (int i = 0; i < 2; i++)
		assert_int_equal(kill(pids[i], SIGSTOP), 0);
	sleep_ms(20);
	mp_pool_stats(p, &st);
	assert_int_equal(st.workers_stopped, 2);
	/* The way out: a timeout.  The call is not lost. */
	assert_int_equal(mp_pool_get(h[0], &got, 0.5), -1);
	assert_int_equal(errno, ETIMEDOUT);
	for (int i = 0; i < 2; i++)
		assert_int_equal(kill(pids[i], SIGCONT), 0);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(mp_pool_get(h[i], &got, GET_S), 0);
		assert_int_equal(got, 300);
		mp_pool_async_free(h[i]);
	}
	mp_pool_stats(p, &st);
	assert_int_equal(st.workers_stopped, 0);
	/* And terminate() ends stopped workers at once. */
	for (int i = 0; i < 2; i++)
		assert_int_equal(kill(pids[i], SIGSTOP), 0);
	int64_t t0 = mp_now_ns();

	assert_int_equal(mp_pool_terminate(p), 0);
	assert_true(mp_now_ns() - t0 < 2000000000);
	assert_int_equal(mp_pool_pids(p, NULL, 0), 0);
	assert_int_equal(mp_pool_destroy(p), 0);
}

/* ---- address space ------------------------------------------------- */

enum { AS_ITEMS = 2 << 20 };  /* 2 Mi items: 32 MiB in the heap */

#ifndef UNDER_ASAN
/* Under a 256 MiB address-space limit (ulimit -v 262144): a pool with the
 * default options, its heap used for a map of AS_ITEMS. */
static int small_as_child(void)
{
	struct rlimit as = { 256 << 20, 256 << 20 };

	if (setrlimit(RLIMIT_AS, &as) == -1)
		return 77;
	struct mp_pool *p = mp_pool_create(NULL);

	if (!p) {
		printf("  mp_pool_create under 256 MiB: %s\n",
		       mp_errname(errno));
		return 2;
	}
	int64_t *in = mp_pool_alloc(p, AS_ITEMS * sizeof *in);
	int64_t *out = mp_pool_alloc(p, AS_ITEMS * sizeof *out);

	if (!in || !out)
		return 3;
	for (int64_t i = 0; i < AS_ITEMS; i++)
		in[i] = i;
	if (mp_pool_map(p, square, in, AS_ITEMS, sizeof *in, out,
			sizeof *out, 0) == -1)
		return 4;
	for (int64_t i = 0; i < AS_ITEMS; i++)
		if (out[i] != i * i + 1)
			return 5;
	return mp_pool_destroy(p) == 0 ? 0 : 6;
}
#endif

static void test_pool_fits_in_256_mib_of_address_space(void **state)
{
	(void)state;
#ifdef UNDER_ASAN
	printf("  skipped under ASan: its shadow memory needs terabytes of "
	       "address space\n");
	skip();
#else
	assert_int_equal(in_child(small_as_child), 0);
#endif
}

/* The heap grows after the workers were forked: blocks allocated later,
 * in new mappings, are used by the workers in place. */
static void test_heap_grows_after_fork(void **state)
{
	(void)state;
	struct mp_pool *p = mp_pool_create(&(struct mp_pool_options){
		.workers = 2 });
	size_t sizes[] = { 1000, 100000, 1000000, 3000000, 10 };
	int64_t *blk[5];

	assert_non_null(p);
	for (int b = 0; b < 5; b++) {
		size_t n = sizes[b];

		blk[b] = mp_pool_alloc(p, 2 * n * sizeof(int64_t));
		assert_non_null(blk[b]);
		for (size_t i = 0; i < n; i++)
			blk[b][i] = (int64_t)i + b;
		assert_int_equal(mp_pool_map(p, square, blk[b], n,
					     sizeof(int64_t), blk[b] + n,
					     sizeof(int64_t), 0), 0);
		for (size_t i = 0; i < n; i++)
			assert_true(blk[b][n + i] ==
				    ((int64_t)i + b) * ((int64_t)i + b) + 1);
	}
	struct mp_pool_stats st;

	mp_pool_stats(p, &st);
	assert_int_equal(st.workers_died, 0);
	/* Freed in stack order, the space is handed out again. */
	for (int b = 4; b >= 0; b--)
		assert_int_equal(mp_pool_free(p, blk[b]), 0);
	int64_t *again = mp_pool_alloc(p, 8 * 3000000);

	assert_non_null(again);
	assert_int_equal(mp_pool_free(p, again), 0);
	assert_int_equal(mp_pool_destroy(p), 0);

	/* heap_bytes caps it. */
	p = mp_pool_create(&(struct mp_pool_options){ .workers = 1,
						      .heap_bytes = 4 << 20 });
	assert_non_null(p);
	void *a = mp_pool_alloc(p, 2 << 20);

	assert_non_null(a);
	errno = 0;
	assert_null(mp_pool_alloc(p, 3 << 20));
	assert_int_equal(errno, ENOMEM);
	assert_int_equal(mp_pool_destroy(p), 0);
}



int main(void)
{
	const struct CMUnitTest tests[] = {
		WATCHED(test_no_fork_means_eagain_not_a_hang),
		WATCHED(test_kills_at_start_are_not_initializer_failures),
		WATCHED(test_initializer_failures_still_give_up),
		WATCHED(test_stopped_workers_are_seen_and_timed_out),
		WATCHED(test_pool_fits_in_256_mib_of_address_space),
		WATCHED(test_heap_grows_after_fork),
	};

	if (watchdog_init() == -1 ||
	    pthread_atfork(NULL, NULL, atfork_child) != 0)
		return EXIT_FAILURE;
	return cmocka_run_group_tests(tests, NULL, NULL);
}
