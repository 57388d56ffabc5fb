/* tests/test_pool_throughput.c -- lib/mp_pool: exact results, recovery from
 * dead workers, and a throughput floor
 *
 * Every test makes its own pool and destroys it.  Task functions reach test
 * state through `g`, a MAP_SHARED region mapped before any pool forks (the
 * Python idiom: a global the workers inherit).  Every wait is bounded: the
 * waits that take a timeout get one (map_async + get(timeout) where a bug
 * could hang), and a watchdog (alarm) ends the run, naming the cause, if
 * a test still takes longer than WATCHDOG_S -- join(), apply() and the
 * initializer wait of create() have no timeout of their own.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <math.h>

#include "mp.h"

enum { BIG = 1000000, MAXPIDS = 1024 };
#define WAIT_S 60.0  /* far above any correct run, even under ASan */
enum { WATCHDOG_S = 120 };
#include "watchdog.h"

struct shared {
	_Atomic int gate;          /* blocked tasks run once it is 1 */
	_Atomic int armed;         /* 1: the next task at `victim_item` ... */
	_Atomic int64_t victim_item;
	_Atomic pid_t victim;      /* ... stores its pid here and blocks */
	_Atomic int ninit, nfin;
	_Atomic int poison;        /* 1: every initializer kills its worker */
	_Atomic pid_t init_pids[MAXPIDS], fin_pids[MAXPIDS];
	_Atomic uint8_t hits[BIG]; /* how many times each item ran */
};

static struct shared *g;

/* ---- task functions (they run in workers) ------------------------- */

/* result = x * x + 1, and count the call: hits[] proves "exactly once". */
static int square(const void *arg, void *result)
{
	int64_t x = *(const int64_t *)arg;

	atomic_fetch_add(&g->hits[x % BIG], 1);
	*(int64_t *)result = x * x + 1;
	return 0;
}

static int64_t want(int64_t x)
{
	return x * x + 1;
}

/* Wait (bounded: 20 s) for the gate; ETIMEDOUT if it never opens. */
static int wait_gate(void)
{
	for (int i = 0; i < 20000 && !atomic_load(&g->gate); i++)
		usleep(1000);
	return atomic_load(&g->gate) ? 0 : ETIMEDOUT;
}

/* square(), but item victim_item blocks on the gate when armed (once). */
static int square_gated(const void *arg, void *result)
{
	int64_t x = *(const int64_t *)arg;
	int one = 1;

	if (x == atomic_load(&g->victim_item) &&
	    atomic_compare_exchange_strong(&g->armed, &one, 0)) {
		atomic_store(&g->victim, getpid());
		int rc = wait_gate();

		if (rc)
			return rc;
	}
	return square(arg, result);
}

static int my_pid(const void *arg, void *result)
{
	(void)arg;
	*(pid_t *)result = getpid();
	return 0;
}

static int crash_on_77(const void *arg, void *result)
{
	int64_t x = *(const int64_t *)arg;

	if (x == 77)
		raise(SIGKILL);  /* every time: the item kills its worker */
	*(int64_t *)result = x;
	return 0;
}

static int fail_999(const void *arg, void *result)
{
	int64_t x = *(const int64_t *)arg;

	*(int64_t *)result = x;
	if (x % 1000 == 999)
		return EDOM;
	return x == 5 ? -7 : 0;  /* out of range: reported as ERANGE */
}

/* square(), but item 100000 (once) poisons every later initializer and
 * kills its own worker; from then on tasks wait for the gate (which stays
 * shut), so the map cannot finish before the pool breaks. */
static int square_poisoning(const void *arg, void *result)
{
	int64_t x = *(const int64_t *)arg;
	int one = 1;

	if (x == 100000 && atomic_compare_exchange_strong(&g->armed, &one, 0)) {
		atomic_store(&g->poison, 1);
		raise(SIGKILL);
	}
	if (atomic_load(&g->poison)) {
		int rc = wait_gate();

		if (rc)
			return rc;
	}
	return square(arg, result);
}

static void poisoned_init(void *arg)
{
	(void)arg;
	if (atomic_load(&g->poison))
		raise(SIGKILL);
}

struct pair { int64_t a, b; };

static int add_pair(const void *arg, void *result)
{
	const struct pair *pr = arg;

	*(int64_t *)result = pr->a + pr->b;
	return 0;
}

static void record_init(void *arg)
{
	(void)arg;
	int i = atomic_fetch_add(&g->ninit, 1);

	if (i < MAXPIDS)
		atomic_store(&g->init_pids[i], getpid());
}

static void record_fin(void *arg)
{
	(void)arg;
	int i = atomic_fetch_add(&g->nfin, 1);

	if (i < MAXPIDS)
		atomic_store(&g->fin_pids[i], getpid());
}

/* ---- helpers (parent) --------------------------------------------- */

static void reset_shared(void)
{
	atomic_store(&g->gate, 0);
	atomic_store(&g->armed, 0);
	atomic_store(&g->victim_item, -1);
	atomic_store(&g->victim, 0);
	atomic_store(&g->ninit, 0);
	atomic_store(&g->nfin, 0);
	atomic_store(&g->poison, 0);
	memset((void *)g->hits, 0, sizeof g->hits);
}

static struct mp_pool *make_pool(int workers)
{
	struct mp_pool *p = mp_pool_create(&(struct mp_pool_options){
		.workers = workers });

	assert_non_null(p);
	return p;
}

static int64_t *iota(size_t n)
{
	int64_t *v = malloc((n ? n : 1) * sizeof *v);

	assert_non_null(v);
	for (size_t i = 0; i < n; i++)
		v[i] = (int64_t)i;
	return v;
}

/* map through map_async + get(timeout): a hang becomes a failure. */
static int map_bounded(struct mp_pool *p, mp_pool_fn fn, const int64_t *in,
		       size_t n, int64_t *out, size_t chunk)
{
	struct mp_pool_async *h = mp_pool_map_async(p, fn, in, n, sizeof *in,
						    out, sizeof *out, chunk,
						    NULL, NULL);

	assert_non_null(h);
	int r = mp_pool_get(h, NULL, WAIT_S);
	int e = errno;

	assert_false(r == -1 && e == ETIMEDOUT);  /* would be a hang */
	mp_pool_async_free(h);
	errno = e;
	return r;
}

static void check_squares(const int64_t *out, size_t n)
{
	size_t bad = 0;

	for (size_t i = 0; i < n; i++)
		if (out[i] != want((int64_t)i) || g->hits[i] != 1)
			bad++;
	assert_int_equal(bad, 0);
}

/* Children of this process right now (every thread's list). */
static int count_children(void)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *e;
	int n = 0;

	assert_non_null(d);
	while ((e = readdir(d)) != NULL) {
		char path[300], buf[4096];

		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof path, "/proc/self/task/%s/children",
			 e->d_name);
		FILE *f = fopen(path, "r");

		if (!f)
			continue;
		size_t len = fread(buf, 1, sizeof buf - 1, f);

		fclose(f);
		buf[len] = '\0';
		for (char *s = strtok(buf, " \n"); s; s = strtok(NULL, " \n"))
			n++;
	}
	closedir(d);
	return n;
}

/* ---- exactness ---------------------------------------------------- */

/* map of 10^6 items: every result exactly once, in order, for chunksize 1,
 * 7 (does not divide 10^6) and auto (0). */
static void test_map_million_exact_for_each_chunksize(void **state)
{
	(void)state;
	struct mp_pool *p = make_pool(2);
	int64_t *in = iota(BIG), *out = malloc(BIG * sizeof *out);
	size_t chunks[] = { 1, 7, 0 };

	assert_non_null(out);
	for (size_t k = 0; k < sizeof chunks / sizeof *chunks; k++) {
		reset_shared();
		memset(out, 0, BIG * sizeof *out);
		assert_int_equal(map_bounded(p, square, in, BIG, out,
					     chunks[k]), 0);
		check_squares(out, BIG);
	}
	assert_int_equal(mp_pool_auto_chunksize(p, BIG),
			 BIG / 8);  /* ceil(10^6 / (4 * 2)) */
	assert_int_equal(mp_pool_auto_chunksize(p, 9), 2);
	mp_pool_destroy(p);
	free(in);
	free(out);
}

/* Item and result sizes that are not powers of two (3 and 5 bytes), in
 * arrays that start one byte past an aligned address: every result exact
 * and nothing written outside the results (the window copies stream
 * large blocks and must get their unaligned head and tail right). */
static int odd_sizes(const void *arg, void *result)
{
	const uint8_t *a = arg;
	uint64_t v = a[0] | (uint64_t)a[1] << 8 | (uint64_t)a[2] << 16;
	uint64_t r = v * 7 + 1;

	memcpy(result, &r, 5);  /* the low 5 bytes: little-endian here */
	return 0;
}

static void test_map_odd_sizes_unaligned(void **state)
{
	(void)state;
	enum { N = 300001, ISZ = 3, RSZ = 5 };
	struct mp_pool *p = make_pool(2);
	uint8_t *inb = malloc(1 + (size_t)N * ISZ);
	uint8_t *outb = malloc(2 + (size_t)N * RSZ);
	size_t chunks[] = { 7, 0 };

	assert_non_null(inb);
	assert_non_null(outb);
	for (uint64_t i = 0; i < N; i++)
		for (int b = 0; b < ISZ; b++)
			inb[1 + i * ISZ + (size_t)b] = (uint8_t)(i >> (8 * b));
	for (size_t k = 0; k < sizeof chunks / sizeof *chunks; k++) {
		size_t bad = 0;

		memset(outb, 0xAB, 2 + (size_t)N * RSZ);
		assert_int_equal(mp_pool_map(p, odd_sizes, inb + 1, N, ISZ,
					     outb + 1, RSZ, chunks[k]), 0);
		for (uint64_t i = 0; i < N; i++) {
			uint64_t r = 0, want = (i & 0xffffff) * 7 + 1;

			memcpy(&r, outb + 1 + i * RSZ, RSZ);
			bad += r != want;
		}
		assert_int_equal(bad, 0);
		assert_int_equal(outb[0], 0xAB);  /* nothing before... */
		assert_int_equal(outb[1 + (size_t)N * RSZ], 0xAB);  /* after */
	}
	mp_pool_destroy(p);
	free(inb);
	free(outb);
}

/* Fewer items than workers, and no items at all. */
static void test_map_small_and_empty(void **state)
{
	(void)state;
	struct mp_pool *p = make_pool(4);
	int64_t *in = iota(3), out[3] = { 0 }, canary = 12345;

	reset_shared();
	assert_int_equal(map_bounded(p, square, in, 3, out, 0), 0);
	check_squares(out, 3);
	assert_int_equal(mp_pool_map(p, square, in, 0, sizeof *in, &canary,
				     sizeof canary, 0), 0);
	assert_int_equal(canary, 12345);  /* nothing written */
	assert_int_equal(mp_pool_workers(p), 4);
	mp_pool_destroy(p);
	free(in);
}

/* starmap: a struct of arguments per task; starmap_async with callback. */
static int64_t cb_sum;
static int cb_calls;
static pid_t cb_pid;

static void on_map_done(void *arg, const void *result,
			const struct mp_pool_error *err)
{
	const int64_t *r = result;

	(void)arg;
	cb_calls++;
	cb_pid = getpid();
	cb_sum = err ? -1 : r[0] + r[99];
}

static void test_starmap_and_map_async_callback(void **state)
{
	(void)state;
	struct mp_pool *p = make_pool(2);
	struct pair args[100];
	int64_t out[100];

	for (int i = 0; i < 100; i++)
		args[i] = (struct pair){ i, 1000 * i };
	assert_int_equal(mp_pool_starmap(p, add_pair, args, 100, sizeof *args,
					 out, sizeof *out, 3), 0);
	for (int i = 0; i < 100; i++)
		assert_int_equal(out[i], 1001 * i);

	memset(out, 0, sizeof out);
	cb_calls = 0;
	struct mp_pool_async *h = mp_pool_starmap_async(
		p, add_pair, args, 100, sizeof *args, out, sizeof *out, 0,
		on_map_done, NULL);

	assert_non_null(h);
	assert_int_equal(mp_pool_wait(h, WAIT_S), 0);
	assert_true(mp_pool_ready(h));
	assert_int_equal(mp_pool_successful(h), 1);
	assert_int_equal(cb_calls, 1);               /* exactly once */
	assert_int_equal(cb_pid, getpid());          /* in the parent */
	assert_int_equal(cb_sum, 0 + 1001 * 99);
	mp_pool_async_free(h);
	mp_pool_destroy(p);
}

/* imap: results in item order, and streamed: items 0..4 arrive while item 5
 * is still blocked (and the items after it are done), and none of those
 * later items may overtake it. */
static void test_imap_ordered_and_streaming(void **state)
{
	(void)state;
	struct mp_pool *p = make_pool(2);
	size_t n = 2000;
	int64_t *in = iota(n), v;
	size_t idx;

	reset_shared();
	atomic_store(&g->victim_item, 5);
	atomic_store(&g->armed, 1);
	struct mp_pool_iter *it = mp_pool_imap(p, square_gated, in, n,
					       sizeof *in, sizeof v, 1);

	assert_non_null(it);
	for (size_t i = 0; i < 5; i++) {
		assert_int_equal(mp_pool_next(it, &v, &idx, WAIT_S), 1);
		assert_int_equal(idx, i);
		assert_int_equal(v, want((int64_t)i));
	}
	/* Wait until the other worker has run everything after item 5. */
	for (int t = 0; t < 20000 && g->hits[n - 1] == 0; t++)
		usleep(1000);
	assert_int_equal(g->hits[n - 1], 1);
	assert_int_equal(mp_pool_next(it, &v, &idx, 0.05), -1);
	assert_int_equal(errno, ETIMEDOUT);  /* 6.. are done, 5 is not */
	atomic_store(&g->gate, 1);
	for (size_t i = 5; i < n; i++) {
		assert_int_equal(mp_pool_next(it, &v, &idx, WAIT_S), 1);
		assert_int_equal(idx, i);
		assert_int_equal(v, want((int64_t)i));
	}
	assert_int_equal(mp_pool_next(it, &v, &idx, WAIT_S), 0);  /* end */
	assert_int_equal(mp_pool_next(it, &v, &idx, WAIT_S), 0);
	mp_pool_iter_free(it);
	mp_pool_destroy(p);
	free(in);
}

/* imap_unordered: every item exactly once, none missing, none twice. */
static void test_imap_unordered_complete(void **state)
{
	(void)state;
	struct mp_pool *p = make_pool(3);
	size_t n = 50000, got = 0, idx;
	int64_t *in = iota(n), v;
	uint8_t *seen = calloc(n, 1);
	int r;

	assert_non_null(seen);
	reset_shared();
	struct mp_pool_iter *it = mp_pool_imap_unordered(p, square, in, n,
							 sizeof *in, sizeof v,
							 13);

	assert_non_null(it);
	while ((r = mp_pool_next(it, &v, &idx, WAIT_S)) == 1) {
		assert_true(idx < n);
		assert_int_equal(seen[idx], 0);
		assert_int_equal(v, want((int64_t)idx));
		seen[idx] = 1;
		got++;
	}
	assert_int_equal(r, 0);
	assert_int_equal(got, n);
	mp_pool_iter_free(it);
	mp_pool_destroy(p);
	free(in);
	free(seen);
}

/* apply_async: get with a timeout expires while the task is blocked, then
 * succeeds; the callback runs once, in the parent; apply() blocks. */
static int64_t apply_cb_value;
static pid_t apply_cb_pid;

static void on_apply(void *arg, const void *result,
		     const struct mp_pool_error *err)
{
	*(int *)arg += 1;
	apply_cb_pid = getpid();
	apply_cb_value = err ? -1 : *(const int64_t *)result;
}

static void test_apply_async_get_timeout(void **state)
{
	(void)state;
	struct mp_pool *p = make_pool(2);
	int64_t x = 12, v = 0;
	int calls = 0;

	reset_shared();
	atomic_store(&g->victim_item, 12);
	atomic_store(&g->armed, 1);
	struct mp_pool_async *h = mp_pool_apply_async(p, square_gated, &x,
						      sizeof x, sizeof v,
						      on_apply, &calls);

	assert_non_null(h);
	assert_int_equal(mp_pool_get(h, &v, 0.1), -1);
	assert_int_equal(errno, ETIMEDOUT);
	assert_int_equal(mp_pool_last_error(p)->code, ETIMEDOUT);
	assert_false(mp_pool_ready(h));
	assert_int_equal(mp_pool_successful(h), -1);
	assert_int_equal(errno, EAGAIN);
	assert_int_equal(mp_pool_wait(h, 0), -1);
	assert_int_equal(calls, 0);
	atomic_store(&g->gate, 1);
	assert_int_equal(mp_pool_get(h, &v, WAIT_S), 0);
	assert_int_equal(v, want(12));
	assert_int_equal(calls, 1);
	assert_int_equal(apply_cb_pid, getpid());
	assert_int_equal(apply_cb_value, want(12));
	assert_int_equal(mp_pool_get(h, &v, 0), 0);  /* again: same answer */
	assert_int_equal(calls, 1);
	mp_pool_async_free(h);

	x = 30;
	assert_int_equal(mp_pool_apply(p, square, &x, sizeof x, &v, sizeof v),
			 0);
	assert_int_equal(v, want(30));
	/* Fire and forget: the handle is freed at once, the callback runs. */
	mp_pool_async_free(mp_pool_apply_async(p, square, &x, sizeof x,
					       sizeof v, on_apply, &calls));
	mp_pool_close(p);
	assert_int_equal(mp_pool_join(p), 0);
	assert_int_equal(calls, 2);
	mp_pool_destroy(p);
}

/* The initializer runs exactly once in every worker, including each one
 * that replaces a worker retired by maxtasksperchild; the finalizer runs
 * once in each at exit. */
static void test_initializer_once_per_worker_with_maxtasks(void **state)
{
	(void)state;
	enum { N = 64, MAXT = 4 };
	int64_t *in = iota(N);
	pid_t out[N];
	struct mp_pool_stats st;

	reset_shared();
	struct mp_pool *p = mp_pool_create(&(struct mp_pool_options){
		.workers = 2, .initializer = record_init,
		.finalizer = record_fin, .maxtasksperchild = MAXT });

	assert_non_null(p);
	assert_int_equal(atomic_load(&g->ninit), 2);  /* create waits */
	struct mp_pool_async *h = mp_pool_map_async(p, my_pid, in, N,
						    sizeof *in, out,
						    sizeof *out, 1, NULL, NULL);
	assert_non_null(h);
	assert_int_equal(mp_pool_get(h, NULL, WAIT_S), 0);
	mp_pool_async_free(h);
	assert_int_equal(mp_pool_close(p), 0);
	assert_int_equal(mp_pool_join(p), 0);
	mp_pool_stats(p, &st);

	int ninit = atomic_load(&g->ninit);

	assert_int_equal((uint64_t)ninit, st.workers_started);
	assert_int_equal(atomic_load(&g->nfin), ninit);
	assert_int_equal(st.workers_died, 0);
	/* Each retired worker ran exactly MAXT tasks; the 2 alive at join
	 * ran fewer (maybe none). */
	assert_true(st.workers_retired >= (N - 2 * (MAXT - 1)) / MAXT);
	assert_true(st.workers_retired <= N / MAXT);
	assert_int_equal(st.tasks, N);
	/* Every pid initialized once, and every task ran in such a pid. */
	for (int i = 0; i < ninit; i++)
		for (int k = i + 1; k < ninit; k++)
			assert_int_not_equal(g->init_pids[i], g->init_pids[k]);
	int distinct = 0;

	for (int i = 0; i < ninit; i++) {
		int tasks = 0;

		for (int k = 0; k < N; k++)
			tasks += out[k] == g->init_pids[i];
		assert_true(tasks <= MAXT);
		distinct += tasks > 0;
	}
	int covered = 0;

	for (int k = 0; k < N; k++)
		for (int i = 0; i < ninit; i++)
			if (out[k] == g->init_pids[i]) {
				covered++;
				break;
			}
	assert_int_equal(covered, N);
	/* 4 tasks each, then out (the last ones may run fewer). */
	assert_true(distinct >= N / MAXT && distinct <= N / MAXT + 2);
	mp_pool_destroy(p);
	free(in);
}

/* A task error: the call fails with its code and the lowest failing index;
 * every other item still ran; imap reports it at its place and goes on. */
static void test_task_error_reports_index(void **state)
{
	(void)state;
	struct mp_pool *p = make_pool(2);
	size_t n = 10000, idx;
	int64_t *in = iota(n), *out = calloc(n, sizeof *out), v;

	assert_non_null(out);
	in[5] = 6;  /* keep the ERANGE item out of the first test */
	assert_int_equal(map_bounded(p, fail_999, in, n, out, 3), -1);
	assert_int_equal(errno, EDOM);
	const struct mp_pool_error *e = mp_pool_last_error(p);

	assert_int_equal(e->code, EDOM);
	assert_int_equal(e->index, 999);
	assert_true(e->task);
	assert_int_equal(out[998], 998);
	assert_int_equal(out[n - 2], (int64_t)n - 2);  /* all others ran */

	in[5] = 5;  /* returns -7: not an errno value, reported as ERANGE */
	assert_int_equal(map_bounded(p, fail_999, in, n, out, 0), -1);
	assert_int_equal(errno, ERANGE);
	assert_int_equal(mp_pool_last_error(p)->index, 5);

	struct mp_pool_iter *it = mp_pool_imap(p, fail_999, in + 990, 20,
					       sizeof *in, sizeof v, 4);
	assert_non_null(it);
	for (size_t i = 0; i < 20; i++) {
		int r = mp_pool_next(it, &v, &idx, WAIT_S);

		assert_int_equal(idx, i);
		if (i == 9) {
			assert_int_equal(r, -1);
			assert_int_equal(errno, EDOM);
			assert_int_equal(mp_pool_last_error(p)->index, 9);
		} else {
			assert_int_equal(r, 1);
			assert_int_equal(v, 990 + (int64_t)i);
		}
	}
	assert_int_equal(mp_pool_next(it, &v, &idx, WAIT_S), 0);
	mp_pool_iter_free(it);

	int64_t x = 1999;

	assert_int_equal(mp_pool_apply(p, fail_999, &x, sizeof x, &v,
				       sizeof v), -1);
	assert_int_equal(errno, EDOM);
	assert_int_equal(mp_pool_last_error(p)->index, 0);
	mp_pool_destroy(p);
	free(in);
	free(out);
}

/* ---- dead workers ------------------------------------------------- */

static void *killer(void *arg)
{
	(void)arg;
	for (int i = 0; i < 20000 && !atomic_load(&g->victim); i++)
		usleep(1000);
	pid_t v = atomic_load(&g->victim);

	if (v > 0)
		kill(v, SIGKILL);
	return NULL;
}

/* SIGKILL a worker from outside while it runs an item in the middle of a
 * map: the map still returns the complete, correct result, soon; only the
 * killed item ran twice, every other item exactly once. */
static void test_sigkill_mid_map_still_complete(void **state)
{
	(void)state;
	size_t n = 100000;
	int64_t k = 54321;
	struct mp_pool *p = make_pool(2);
	int64_t *in = iota(n), *out = calloc(n, sizeof *out);
	pthread_t t;
	struct mp_pool_stats st;

	assert_non_null(out);
	reset_shared();
	atomic_store(&g->victim_item, k);
	atomic_store(&g->armed, 1);
	MP_CHECK_PT(pthread_create(&t, NULL, killer, NULL));
	int64_t t0 = mp_now_ns();

	assert_int_equal(map_bounded(p, square_gated, in, n, out, 7), 0);
	double took = mp_elapsed_s(t0);

	MP_CHECK_PT(pthread_join(t, NULL));
	assert_true(atomic_load(&g->victim) > 0);
	assert_true(took < 20.0);  /* bounded: no 20 s gate timeout */
	/* Every item ran exactly once: the killed worker died inside item k
	 * before square() counted it, its replacement ran k and the rest of
	 * its chunk, and nothing finished before the kill ran again. */
	check_squares(out, n);
	mp_pool_stats(p, &st);
	assert_int_equal(st.workers_died, 1);
	assert_true(st.retried_items >= 1);
	assert_int_equal(mp_pool_workers(p), 2);
	assert_int_equal(mp_pool_pids(p, NULL, 0), 2);
	mp_pool_destroy(p);
	free(in);
	free(out);
}

/* A caller that only polls -- ready() in a loop, or get() with timeout 0 --
 * still sees a worker that died mid-task replaced and its item run again:
 * a look that does not wait must look at the workers too. */
static void test_polling_caller_sees_dead_worker(void **state)
{
	(void)state;
	size_t n = 1000;
	struct mp_pool *p = make_pool(2);
	int64_t *in = iota(n), *out = calloc(n, sizeof *out);
	struct mp_pool_stats st;

	assert_non_null(out);
	for (int round = 0; round < 2; round++) {
		reset_shared();
		atomic_store(&g->victim_item, 500);
		atomic_store(&g->armed, 1);
		struct mp_pool_async *h = mp_pool_map_async(
			p, square_gated, in, n, sizeof *in, out, sizeof *out,
			10, NULL, NULL);

		assert_non_null(h);
		for (int i = 0; i < 20000 && !atomic_load(&g->victim); i++)
			usleep(1000);
		assert_int_equal(kill(atomic_load(&g->victim), SIGKILL), 0);
		bool done = false;

		for (int i = 0; i < 20000 && !done; i++) {
			done = round == 0 ? mp_pool_ready(h) :
				mp_pool_get(h, NULL, 0) == 0;
			if (!done)
				usleep(1000);
		}
		assert_true(done);  /* not 20 s of polls for nothing */
		assert_int_equal(mp_pool_get(h, NULL, 0), 0);
		check_squares(out, n);
		mp_pool_async_free(h);
	}
	mp_pool_stats(p, &st);
	assert_int_equal(st.workers_died, 2);
	assert_int_equal(mp_pool_pids(p, NULL, 0), 2);
	mp_pool_destroy(p);
	free(in);
	free(out);
}

/* The pool breaks (replacement workers keep dying in their initializer)
 * while a map much larger than the arena is still being submitted: the
 * map fails with ECHILD, and no window is published into the dead pool
 * (where nothing would ever run it). */
static void test_pool_breaking_during_submission_fails_map(void **state)
{
	(void)state;
	struct mp_pool *p;
	int64_t *in = iota(BIG), *out = calloc(BIG, sizeof *out), x = 1, v;

	assert_non_null(out);
	reset_shared();
	atomic_store(&g->armed, 1);
	p = mp_pool_create(&(struct mp_pool_options){
		.workers = 2, .initializer = poisoned_init,
		.arena_bytes = 1 << 20 });  /* a few windows at a time */
	assert_non_null(p);
	assert_int_equal(map_bounded(p, square_poisoning, in, BIG, out, 0),
			 -1);
	assert_int_equal(errno, ECHILD);
	assert_int_equal(mp_pool_pids(p, NULL, 0), 0);
	assert_null(mp_pool_apply_async(p, square, &x, sizeof x, sizeof v,
					NULL, NULL));
	assert_int_equal(errno, ECHILD);  /* and so does every later call */
	mp_pool_destroy(p);
	free(in);
	free(out);
}

/* An item that kills its worker on every try fails the call with
 * EOWNERDEAD naming it (after 1 + retries deaths), instead of hanging the
 * caller (Python's Pool waits forever here); the pool stays usable. */
static void test_always_crashing_task_fails_call(void **state)
{
	(void)state;
	size_t n = 1000;
	struct mp_pool *p = make_pool(2);
	int64_t *in = iota(n), *out = calloc(n, sizeof *out);
	struct mp_pool_stats st;

	assert_non_null(out);
	assert_int_equal(map_bounded(p, crash_on_77, in, n, out, 10), -1);
	assert_int_equal(errno, EOWNERDEAD);
	const struct mp_pool_error *e = mp_pool_last_error(p);

	assert_int_equal(e->code, EOWNERDEAD);
	assert_int_equal(e->index, 77);
	assert_int_equal(e->signal, SIGKILL);
	assert_true(e->task);
	assert_true(e->pid > 0);
	mp_pool_stats(p, &st);
	assert_int_equal(st.workers_died, 1 + MP_POOL_DEFAULT_RETRIES);
	for (size_t i = 0; i < n; i++)
		if (i != 77)
			assert_int_equal(out[i], (int64_t)i);

	/* apply: the same error, index 0. */
	int64_t x = 77, v;

	assert_int_equal(mp_pool_apply(p, crash_on_77, &x, sizeof x, &v,
				       sizeof v), -1);
	assert_int_equal(errno, EOWNERDEAD);
	assert_int_equal(mp_pool_last_error(p)->index, 0);

	/* Still a working pool of 2. */
	reset_shared();
	assert_int_equal(map_bounded(p, square, in, n, out, 0), 0);
	check_squares(out, n);
	assert_int_equal(mp_pool_pids(p, NULL, 0), 2);
	mp_pool_destroy(p);

	/* retries < 0: the first death fails the call. */
	p = mp_pool_create(&(struct mp_pool_options){ .workers = 2,
						      .retries = -1 });
	assert_non_null(p);
	assert_int_equal(map_bounded(p, crash_on_77, in, n, out, 1), -1);
	assert_int_equal(errno, EOWNERDEAD);
	mp_pool_stats(p, &st);
	assert_int_equal(st.workers_died, 1);
	mp_pool_destroy(p);
	free(in);
	free(out);
}

/* terminate: every worker is killed and reaped at once, even one stuck in
 * a task; outstanding calls fail with ECANCELED; nothing is left. */
static void test_terminate_leaves_no_worker(void **state)
{
	(void)state;
	int before = count_children();
	struct mp_pool *p = make_pool(3);
	pid_t pids[3];
	int64_t x = 1, v;
	int calls = 0;

	reset_shared();
	atomic_store(&g->victim_item, 1);
	atomic_store(&g->armed, 1);
	assert_int_equal(mp_pool_pids(p, pids, 3), 3);
	assert_int_equal(count_children(), before + 3);
	struct mp_pool_async *h = mp_pool_apply_async(p, square_gated, &x,
						      sizeof x, sizeof v,
						      on_apply, &calls);
	assert_non_null(h);
	for (int i = 0; i < 20000 && !atomic_load(&g->victim); i++)
		usleep(1000);  /* the task is running (and stuck) */
	assert_true(atomic_load(&g->victim) > 0);

	assert_int_equal(mp_pool_terminate(p), 0);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(kill(pids[i], 0), -1);  /* gone, reaped */
		assert_int_equal(errno, ESRCH);
	}
	assert_int_equal(count_children(), before);
	assert_int_equal(mp_pool_pids(p, NULL, 0), 0);
	assert_int_equal(mp_pool_get(h, &v, 0), -1);
	assert_int_equal(errno, ECANCELED);
	assert_int_equal(calls, 1);
	assert_null(mp_pool_apply_async(p, square, &x, sizeof x, sizeof v,
					NULL, NULL));
	assert_int_equal(errno, EINVAL);
	assert_int_equal(mp_pool_join(p), 0);  /* allowed after terminate */
	mp_pool_destroy(p);
	/* A handle outlives its pool: still ready, still ECANCELED. */
	assert_true(mp_pool_ready(h));
	assert_int_equal(mp_pool_get(h, &v, 0), -1);
	assert_int_equal(errno, ECANCELED);
	mp_pool_async_free(h);

	/* destroy without join terminates too. */
	p = make_pool(2);
	assert_int_equal(mp_pool_pids(p, pids, 2), 2);
	mp_pool_destroy(p);
	assert_int_equal(count_children(), before);
}

/* Bad arguments give EINVAL and change nothing. */
static void test_bad_arguments_einval(void **state)
{
	(void)state;
	struct mp_pool_options o = { .workers = MP_POOL_MAX_WORKERS + 1 };
	int64_t in[4] = { 1, 2, 3, 4 }, out[4] = { -1, -1, -1, -1 }, v = 0;
	struct mp_pool_stats a, b;

	errno = 0;
	assert_null(mp_pool_create(&o));
	assert_int_equal(errno, EINVAL);
	o.workers = -1;
	assert_null(mp_pool_create(&o));
	assert_int_equal(errno, EINVAL);
	o = (struct mp_pool_options){ .maxtasksperchild = -1 };
	assert_null(mp_pool_create(&o));
	assert_int_equal(errno, EINVAL);

	struct mp_pool *p = make_pool(2);

	mp_pool_stats(p, &a);
	assert_int_equal(mp_pool_map(p, NULL, in, 4, 8, out, 8, 0), -1);
	assert_int_equal(errno, EINVAL);
	assert_int_equal(mp_pool_map(p, square, in, 4, 0, out, 8, 0), -1);
	assert_int_equal(errno, EINVAL);
	assert_int_equal(mp_pool_map(p, square, NULL, 4, 8, out, 8, 0), -1);
	assert_int_equal(errno, EINVAL);
	assert_false(mp_pool_last_error(p)->task);
	assert_null(mp_pool_imap(p, NULL, in, 4, 8, 8, 0));
	assert_int_equal(errno, EINVAL);
	assert_null(mp_pool_apply_async(p, NULL, in, 8, 8, NULL, NULL));
	assert_int_equal(errno, EINVAL);
	assert_int_equal(mp_pool_join(p), -1);  /* not closed */
	assert_int_equal(errno, EINVAL);
	for (int i = 0; i < 4; i++)
		assert_int_equal(out[i], -1);
	mp_pool_stats(p, &b);
	assert_memory_equal(&a, &b, sizeof a);  /* no task ran */

	struct mp_pool_async *h = mp_pool_apply_async(p, square, in, 8, 8,
						      NULL, NULL);
	assert_non_null(h);
	assert_int_equal(mp_pool_wait(h, NAN), -1);
	assert_int_equal(errno, EINVAL);
	assert_int_equal(mp_pool_get(h, &v, WAIT_S), 0);
	mp_pool_async_free(h);

	assert_int_equal(mp_pool_close(p), 0);
	assert_int_equal(mp_pool_map(p, square, in, 4, 8, out, 8, 0), -1);
	assert_int_equal(errno, EINVAL);  /* closed: no more submissions */
	assert_int_equal(mp_pool_join(p), 0);
	mp_pool_destroy(p);
	mp_pool_destroy(NULL);
}

/* Items and results in the pool's shared heap: the same exact results
 * (workers read and write the blocks themselves); the heap is a stack whose
 * top comes down as blocks are freed; bad pointers are refused. */
static void test_shared_heap_map_without_copies(void **state)
{
	(void)state;
	struct mp_pool *p = mp_pool_create(&(struct mp_pool_options){
		.workers = 2, .heap_bytes = 64 << 20 });
	size_t n = 300000, idx;
	int64_t v, local = 0;

	assert_non_null(p);
	int64_t *in = mp_pool_alloc(p, n * sizeof *in);
	int64_t *out = mp_pool_alloc(p, n * sizeof *out);

	assert_non_null(in);
	assert_non_null(out);
	assert_int_equal((uintptr_t)in % 64, 0);
	assert_true(out >= in + n || in >= out + n);  /* no overlap */
	for (size_t i = 0; i < n; i++) {
		in[i] = (int64_t)i;
		out[i] = -1;
	}
	reset_shared();
	assert_int_equal(map_bounded(p, square, in, n, out, 0), 0);
	check_squares(out, n);
	reset_shared();
	struct mp_pool_iter *it = mp_pool_imap(p, square, in, 100, sizeof *in,
					       sizeof v, 7);
	assert_non_null(it);
	for (size_t i = 0; i < 100; i++) {
		assert_int_equal(mp_pool_next(it, &v, &idx, WAIT_S), 1);
		assert_int_equal(v, want((int64_t)idx));
	}
	mp_pool_iter_free(it);
	assert_int_equal(mp_pool_apply(p, square, &in[77], sizeof *in, &v,
				       sizeof v), 0);
	assert_int_equal(v, want(77));

	/* The top block's bytes come back at once, a lower block's once the
	 * blocks above it are gone too; the heap has a limit. */
	assert_int_equal(mp_pool_free(p, out), 0);
	int64_t *again = mp_pool_alloc(p, n * sizeof *again);

	assert_ptr_equal(again, out);
	assert_int_equal(mp_pool_free(p, in), 0);
	assert_int_equal(mp_pool_free(p, in), -1);  /* twice */
	assert_int_equal(errno, EINVAL);
	assert_null(mp_pool_alloc(p, 60 << 20));    /* `again` is on top */
	assert_int_equal(errno, ENOMEM);
	assert_int_equal(mp_pool_free(p, again), 0);
	assert_non_null(in = mp_pool_alloc(p, 60 << 20));  /* all free */
	assert_null(mp_pool_alloc(p, 60 << 20));
	assert_int_equal(errno, ENOMEM);
	assert_null(mp_pool_alloc(p, 0));
	assert_int_equal(errno, EINVAL);
	assert_int_equal(mp_pool_free(p, &local), -1);
	assert_int_equal(errno, EINVAL);
	assert_int_equal(mp_pool_free(p, in + 1), -1);  /* not a block */
	assert_int_equal(errno, EINVAL);
	assert_int_equal(mp_pool_free(p, in), 0);
	assert_int_equal(mp_pool_free(p, NULL), 0);
	mp_pool_destroy(p);
}

/* ---- throughput: a floor only ------------------------------------- */

static int square_plain(const void *arg, void *result)
{
	int64_t x = *(const int64_t *)arg;

	*(int64_t *)result = x * x;
	return 0;
}

/* Tasks per second at chunksize 1 and auto, printed; asserted only against
 * a floor far below the goal (200 thousand at chunksize 1), so that a
 * collapse (a lock or a system call per task) fails, noise does not. */
static void test_throughput_floor(void **state)
{
	(void)state;
	struct mp_pool *p = make_pool(2);
	int64_t *in = iota(BIG), *out = malloc(BIG * sizeof *out);
	size_t chunks[] = { 1, 0 };
	double rate[2];

	assert_non_null(out);
	assert_int_equal(map_bounded(p, square_plain, in, BIG, out, 0), 0);
	for (int k = 0; k < 2; k++) {
		double best = 1e9;

		for (int rep = 0; rep < 3; rep++) {
			int64_t t0 = mp_now_ns();

			assert_int_equal(map_bounded(p, square_plain, in, BIG,
						     out, chunks[k]), 0);
			double s = mp_elapsed_s(t0);

			best = s < best ? s : best;
		}
		rate[k] = BIG / best;
		assert_int_equal(out[BIG - 1], (int64_t)(BIG - 1) * (BIG - 1));
	}
	printf("pool map throughput: chunksize 1: %.0f tasks/s, "
	       "auto (%zu): %.0f tasks/s (floor: 200000 at chunksize 1)\n",
	       rate[0], mp_pool_auto_chunksize(p, BIG), rate[1]);
	assert_true(rate[0] >= 200000);
	mp_pool_destroy(p);
	free(in);
	free(out);
}


static int setup(void **state)
{
	(void)state;
	g = mp_shm_alloc(sizeof *g);
	return g ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	return mp_shm_free(g, sizeof *g);
}


int main(void)
{
	const struct CMUnitTest tests[] = {
		WATCHED(test_map_million_exact_for_each_chunksize),
		WATCHED(test_map_odd_sizes_unaligned),
		WATCHED(test_map_small_and_empty),
		WATCHED(test_starmap_and_map_async_callback),
		WATCHED(test_imap_ordered_and_streaming),
		WATCHED(test_imap_unordered_complete),
		WATCHED(test_apply_async_get_timeout),
		WATCHED(test_initializer_once_per_worker_with_maxtasks),
		WATCHED(test_task_error_reports_index),
		WATCHED(test_sigkill_mid_map_still_complete),
		WATCHED(test_polling_caller_sees_dead_worker),
		WATCHED(test_pool_breaking_during_submission_fails_map),
		WATCHED(test_always_crashing_task_fails_call),
		WATCHED(test_terminate_leaves_no_worker),
		WATCHED(test_bad_arguments_einval),
		WATCHED(test_shared_heap_map_without_copies),
		WATCHED(test_throughput_floor),
	};

	if (watchdog_init() == -1)
		return EXIT_FAILURE;
	return cmocka_run_group_tests(tests, setup, teardown);
}
