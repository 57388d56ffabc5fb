/* 3_pools/imap_async.c -- results as they come: imap, imap_unordered,
 * map_async and apply_async with callbacks, and a wait that times out
 *
 * Python:  for r in pool.imap(slow, jobs): print(r)       # in order, streamed
 *          for r in pool.imap_unordered(slow, jobs): ...  # as they finish
 *          pool.map_async(slow, jobs, callback=done).get()
 *          r = pool.apply_async(slow, (job,))
 *          r.get(timeout=0.05)                            # TimeoutError
 *          for j in jobs: pool.apply_async(slow, (j,), callback=acc.append)
 *          pool.close(); pool.join()                       # every callback ran
 * CPython: Lib/multiprocessing/pool.py.  imap() returns an IMapIterator and
 *          puts a generator of one-item tasks (chunksize 1 by default) on
 *          _taskqueue; the _task_handler thread pickles them one by one into
 *          _inqueue (a pipe); the _result_handler thread reads _outqueue and
 *          calls _set(i, obj), which appends to a deque if i is the next
 *          index and parks it in an _unsorted dict otherwise; next(timeout)
 *          waits on a Condition.  IMapUnorderedIterator._set() just
 *          appends.  map_async() and apply_async() return a MapResult /
 *          ApplyResult whose _set() runs callback (or error_callback) in the
 *          result-handler thread, then sets a threading.Event; wait(timeout)
 *          waits on it, get(timeout) raises multiprocessing.TimeoutError if
 *          it is still unset.
 * C:       mp_pool_imap, mp_pool_imap_unordered, mp_pool_next (timeout),
 *          mp_pool_map_async, mp_pool_apply_async with an mp_pool_callback,
 *          mp_pool_ready, mp_pool_wait (ETIMEDOUT), mp_pool_get, and
 *          CLOCK_MONOTONIC, which every process reads on the same scale.
 * Usage:   imap_async [--workers N (4, 2..64)] [--tasks N (8, 3..64)]
 *                     [--step-ms N (20, 5..60000): the unit of task sleep]
 * Output:  [parent 8133 +0.8ms] 2. imap over 8 tasks of 20..160 ms
 *          [parent 8133 +40.9ms]    #0 = 0, done at 40.1 ms, read at 40.2 ms
 *          [parent 8133 +41.0ms]    #1 = 1, done at 20.1 ms, read at 40.2 ms
 *                                   (done before the one above: held back)
 *          [parent 8133 +61.0ms]    #2 = 4, done at 60.2 ms, read at 60.2 ms
 *          ...
 *          [parent 8133 +241.2ms]    #7 = 49, done at 240.4 ms,
 *                                    read at 240.5 ms
 *          [parent 8133 +241.3ms]    first result read at 40.2 ms,
 *                                    last task done at 240.4 ms: streamed while
 *                                    work remained
 *          [parent 8133 +421.7ms] 3. imap_unordered: completion order
 *                                 3 2 1 0 5 6 7 4; 8/8 items, each once
 *          [parent 8133 +463.8ms] 4. map_async: 20 ready() polls meanwhile;
 *                                 callback ran 1 time(s) at 42.0 ms, ...
 *          [parent 8133 +514.0ms] 5. apply_async(slow 42):
 *                                 wait(0.050) returned -1 ETIMEDOUT at 50.2 ms,
 *                                 ready()=false
 *          [parent 8133 +664.0ms]    get() then gave 1764 at 200.2 ms
 *          [parent 8133 +667.8ms] 6. 32 apply_async, handles freed;
 *                                 after close+join the callback had run
 *                                 32 times, ...
 *          result: imap 8/8 in order and streamed yes, imap_unordered
 *                  8/8 reordered yes, map_async callback yes,
 *                  wait ETIMEDOUT then get yes, 32/32 callbacks OK
 * Try this: --workers 64: every task starts at once, and imap_unordered
 *          comes out in exact reverse order (7 6 5 ... 0).  --workers 2
 *          --tasks 16: two at a time, neighbours swap places, e.g. 1 0 2 3 5
 *          4 7 6 ... (the pairs that swap vary from run to run).
 */
#include "mp.h"

struct job {
	int64_t index, sleep_ms;
}; /* the argument bytes of a task */
struct done {
	int64_t value, done_ns;
}; /* its result bytes */

/* What the callbacks collect.  They run in this thread, inside a pool call,
 * so plain fields do: no lock, unlike a Python callback, which runs in the
 * result-handler thread while the main thread does something else. */
struct tally {
	long calls, errors, n;
	int64_t sum, at_ns;
};

/* The task: sleep, then report index^2 and when it finished. */
static int slow(const void *arg, void *res)
{
	const struct job *j = arg;
	struct timespec t = { j->sleep_ms / 1000,
			      j->sleep_ms % 1000 * 1000000 };

	while (nanosleep(&t, &t) == -1)
		if (errno != EINTR)
			return errno;
	*(struct done *)res = (struct done){ j->index * j->index, mp_now_ns() };
	return 0;
}

/* map_async's callback: result is the whole results array. */
static void on_map(void *arg, const void *result,
		   const struct mp_pool_error *err)
{
	struct tally *t = arg;
	const struct done *d = result;

	t->calls++;
	t->at_ns = mp_now_ns();
	if (err) {
		t->errors++;
		return;
	}
	for (long i = 0; i < t->n; i++)
		t->sum += d[i].value;
}

/* apply_async's callback: result is one struct done. */
static void on_apply(void *arg, const void *result,
		     const struct mp_pool_error *err)
{
	struct tally *t = arg;

	t->calls++;
	if (err)
		t->errors++;
	else
		t->sum += ((const struct done *)result)->value;
}

static double ms_since(int64_t t0, int64_t t)
{
	return (double)(t - t0) / 1e6;
}

int main(int argc, char *argv[])
{
	long workers = 4, n = 8, step = 20;
	const struct mp_opt opts[] = {
		MP_OPT_L("workers", &workers, 2, 64, "worker processes"),
		/* 3 at least: with 2 tasks the first result is also the
		 * last to finish, so nothing could stream. */
		MP_OPT_L("tasks", &n, 3, 64, "tasks per call"),
		MP_OPT_L("step-ms", &step, 5, 60000,
			 "the unit of task sleep, in ms"),
	};

	mp_parse_options(argc, argv, "imap, imap_unordered, map_async, "
			 "apply_async, timeouts.", opts,
			 sizeof opts / sizeof opts[0]);
	mp_stop_on_signals();

	/* 1. The pool. */
	struct mp_pool *pool = mp_pool_create(
	    &(struct mp_pool_options){ .workers = (int)workers });

	if (!pool)
		mp_die("mp_pool_create");
	mp_say("parent", "1. pool of %d workers", mp_pool_workers(pool));
	struct job jobs[64];
	struct done d;
	size_t idx;

	/* 2. imap: task i sleeps i + 1 steps, so item 0 is done long before the
	 *    last one -- except that items 0 and 1 swap: 1 is done first, and
	 *    next() holds it back until #0 is out, as results come in item
	 *    order.  Times are ms since the submission. */
	for (long i = 0; i < n; i++)
		jobs[i] = (struct job){ i, (i < 2 ? 2 - i : i + 1) * step };
	int64_t t0 = mp_now_ns(), first_read = 0, last_done = 0, prev_done = 0;
	struct mp_pool_iter *it = mp_pool_imap(pool, slow, jobs, (size_t)n,
					       sizeof *jobs, sizeof d, 1);
	long in_order = 0;

	if (!it)
		mp_die("mp_pool_imap");
	mp_say("parent", "2. imap over %ld tasks of %ld..%ld ms", n, step,
	       n * step);
	int rc;

	for (long k = 0;
	     (rc = mp_pool_next(it, &d, &idx, MP_POOL_FOREVER)) == 1; k++) {
		int64_t now = mp_now_ns();

		if (k == 0)
			first_read = now;
		last_done = d.done_ns > last_done ? d.done_ns : last_done;
		in_order += idx == (size_t)k && d.value == k * k;
		mp_say("parent",
		       "   #%zu = %" PRId64
		       ", done at %.1f ms, read at %.1f ms%s",
		       idx, d.value, ms_since(t0, d.done_ns), ms_since(t0, now),
		       d.done_ns < prev_done
			   ? " (done before the one above: held back)"
			   : "");
		prev_done = d.done_ns;
	}
	if (rc == -1)
		mp_die("mp_pool_next(imap)");
	mp_pool_iter_free(it);
	bool streamed = first_read < last_done;

	mp_say("parent",
	       "   first result read at %.1f ms, last task done at %.1f ms: %s",
	       ms_since(t0, first_read), ms_since(t0, last_done),
	       streamed ? "streamed while work remained" : "NOT streamed");

	/* 3. imap_unordered: now task i sleeps (n - i) steps; results come in
	 *    the order they finish, and each tells which item it is. */
	for (long i = 0; i < n; i++)
		jobs[i] = (struct job){ i, (n - i) * step };
	bool seen[64] = { false };
	long got = 0, sorted = 0;
	char order[256];
	int len = 0;

	if (!(it = mp_pool_imap_unordered(pool, slow, jobs, (size_t)n,
					  sizeof *jobs, sizeof d, 1)))
		mp_die("mp_pool_imap_unordered");
	for (long k = 0;
	     (rc = mp_pool_next(it, &d, &idx, MP_POOL_FOREVER)) == 1; k++) {
		if (idx < (size_t)n && !seen[idx] &&
		    d.value == (int64_t)(idx * idx)) {
			seen[idx] = true;
			got++;
		}
		sorted += idx == (size_t)k;
		len += snprintf(order + len, sizeof order - (size_t)len, " %zu",
				idx);
	}
	if (rc == -1)
		mp_die("mp_pool_next(imap_unordered)");
	mp_pool_iter_free(it);
	bool unordered_ok = got == n && sorted < n;

	mp_say(
	    "parent",
	    "3. imap_unordered: completion order%s; %ld/%ld items, each once%s",
	    order, got, n,
	    sorted < n ? "" : " (in order: no worker overtook another?)");

	/* 4. map_async with a callback: the parent goes on with its own work
	 *    (here: a 2 ms nap and a ready() check) while the pool works. */
	for (long i = 0; i < n; i++)
		jobs[i] = (struct job){ i, step };
	struct done results[64];
	struct tally mt = { .n = n };
	long polls = 0;

	t0 = mp_now_ns();
	struct mp_pool_async *h =
	    mp_pool_map_async(pool, slow, jobs, (size_t)n, sizeof *jobs,
			      results, sizeof *results, 0, on_map, &mt);

	if (!h)
		mp_die("mp_pool_map_async");
	while (!mp_pool_ready(h)) {
		polls++;
		MP_CHECK(nanosleep(&(struct timespec){ 0, 2000000 }, NULL));
	}
	if (mp_pool_get(h, NULL, MP_POOL_FOREVER) == -1)
		mp_die("mp_pool_get(map_async)");
	mp_pool_async_free(h);
	int64_t want = 0;

	for (long i = 0; i < n; i++)
		want += i * i;
	bool map_ok = mt.calls == 1 && mt.errors == 0 && mt.sum == want;

	mp_say("parent",
	       "4. map_async: %ld ready() polls meanwhile; callback ran %ld "
	       "time(s) at "
	       "%.1f ms, in this thread: sum of squares %" PRId64
	       " (want %" PRId64 ")",
	       polls, mt.calls, ms_since(t0, mt.at_ns), mt.sum, want);

	/* 5. A wait with a timeout: the task takes 10 steps, the wait allows
	 *    2.5.  ETIMEDOUT loses nothing: the task runs on; get() later. */
	double timeout = 2.5 * (double)step / 1e3;

	t0 = mp_now_ns();
	if (!(h = mp_pool_apply_async(
		  pool, slow, &(struct job){ 42, 10 * step },
		  sizeof(struct job), sizeof d, NULL, NULL)))
		mp_die("mp_pool_apply_async");
	rc = mp_pool_wait(h, timeout);
	int wait_err = errno;
	bool was_ready = mp_pool_ready(h);

	mp_say("parent",
	       "5. apply_async(slow 42): wait(%.3f) returned %d %s at %.1f ms, "
	       "ready()=%s",
	       timeout, rc, rc == -1 ? mp_errname(wait_err) : "",
	       ms_since(t0, mp_now_ns()), was_ready ? "true" : "false");
	if (mp_pool_get(h, &d, MP_POOL_FOREVER) == -1)
		mp_die("mp_pool_get(apply_async)");
	int success = mp_pool_successful(h);  /* AsyncResult.successful() */

	mp_pool_async_free(h);
	bool timeout_ok = rc == -1 && wait_err == ETIMEDOUT && !was_ready &&
			  d.value == 42 * 42 && success == 1;

	mp_say("parent", "   get() then gave %" PRId64 " at %.1f ms, "
	       "successful()=%d", d.value, ms_since(t0, mp_now_ns()), success);

	/* 6. Fire and forget: apply_async with a callback, the handle freed at
	 *    once; close() + join() wait for everything, running the
	 *    callbacks. */
	struct tally at = { 0 };
	long calls = 4 * n;

	for (long i = 0; i < calls; i++) {
		if (!(h = mp_pool_apply_async(pool, slow, &(struct job){ i, 0 },
					      sizeof(struct job), sizeof d,
					      on_apply, &at)))
			mp_die("mp_pool_apply_async");
		mp_pool_async_free(h);
	}
	MP_CHECK(mp_pool_close(pool));
	MP_CHECK(mp_pool_join(pool));
	mp_pool_destroy(pool);
	want = (calls - 1) * calls * (2 * calls - 1) / 6;
	bool apply_ok = at.calls == calls && at.errors == 0 && at.sum == want;

	mp_say("parent",
	       "6. %ld apply_async, handles freed; after close+join the "
	       "callback had run "
	       "%ld times, sum %" PRId64 " (want %" PRId64 ")",
	       calls, at.calls, at.sum, want);

	bool ok = in_order == n && streamed && unordered_ok && map_ok &&
		  timeout_ok && apply_ok;

	printf("result: imap %ld/%ld in order and streamed %s, imap_unordered "
	       "%ld/%ld reordered %s, "
	       "map_async callback %s, wait ETIMEDOUT then get %s, %ld/%ld "
	       "callbacks %s\n",
	       in_order, n, streamed ? "yes" : "no", got, n,
	       sorted < n ? "yes" : "no", map_ok ? "yes" : "no",
	       timeout_ok ? "yes" : "no", at.calls, calls,
	       ok ? "OK" : "MISMATCH");
	return ok ? EXIT_SUCCESS : EXIT_FAILURE;
}
