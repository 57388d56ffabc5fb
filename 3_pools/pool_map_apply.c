/* 3_pools/pool_map_apply.c -- Pool.map and Pool.apply: results in order from
 * a pool of forked workers that is started once, used twice, closed, joined
 *
 * Python:  with Pool() as pool:                        # os.process_cpu_count()
 *              squares = pool.map(square, range(n))    # in order, chunked
 *              pid = pool.apply(os.getpid)             # one call, in a worker
 *              sums = pool.map(triangle, range(n))     # the same workers again
 *              pool.close(); pool.join()
 * CPython: Lib/multiprocessing/pool.py.  Pool() starts `processes` workers
 *          (os.process_cpu_count() since 3.13, os.cpu_count() before) and
 *          starts three threads in the parent.  map() (Pool._map_async)
 *          sets chunksize = ceil(n / (4 * workers)) and puts ONE task
 *          generator on _taskqueue for the whole call
 *          (_guarded_task_generation over Pool._get_tasks, which cuts the
 *          items into chunks of that size as it is iterated); the
 *          _task_handler thread iterates it and pickles each task,
 *          (job, i, mapstar, ((func, chunk),), {}) -- func by module and
 *          name -- into _inqueue, a SimpleQueue (a pipe and two locks,
 *          _rlock and _wlock); a worker runs
 *          the chunk and sends (job, i, (True, results)) back on _outqueue;
 *          the _result_handler thread unpickles it and MapResult._set() puts
 *          the slice at i * chunksize.  That is why results come back in item
 *          order whatever order the chunks finish in.  apply() is
 *          apply_async(...).get(); the _worker_handler thread replaces workers
 *          that exit.
 * C:       mp_pool_create (fork() x workers), mp_pool_map, mp_pool_apply,
 *          mp_pool_close, mp_pool_join; sched_getaffinity + CPU_COUNT for the
 *          default worker count; fork + execl("/proc/self/exe") to see a
 *          function's address change when the image is loaded anew.
 * Usage:   pool_map_apply [--workers N (0 = CPUs we may run on, 0..256)]
 *                         [--items N (100000, 1..10000000)]
 *                         [--delay-us N (0, 0..1000000): each task sleeps]
 * Output:  [parent 11308 +0.0ms] 1. CPUs online: 2 (os.cpu_count),
 *                                   CPUs we may run on: 2
 *                                   (os.process_cpu_count)
 *          [parent 11308 +3.7ms] 2. pool of 2 workers (the default),
 *                                   first worker pid 11309
 *          [parent 11308 +16.4ms] 3. map(square): 100000/100000 results
 *                                    in order in 12.3 ms, chunksize 12500
 *          [parent 11308 +16.5ms]    out[i] == i*i for every i,
 *                                    items per worker: 11309: 37500,
 *                                    11310: 62500
 *          [parent 11308 +16.5ms] 4. apply(where_am_i) ran in worker 11310
 *                                    (parent 11308); square() is at
 *                                    0x55e39989c100 there and
 *                                    0x55e39989c100 here
 *          [parent 11308 +35.6ms] 5. map(triangle) on the same pool:
 *                                    100000/100000 in order in 19.1 ms; ...
 *          [parent 11308 +39.8ms] 6. after close(), apply() gives EINVAL;
 *                                    after join(), children left: none
 *          [parent 11308 +41.5ms] 7. square() after exec: 0x55591ffbe100
 *                                    (another address: ...)
 *          result: map 100000/100000 and 100000/100000 in order,
 *                  apply in worker yes, 2 worker(s) reused yes,
 *                  closed+joined yes OK
 * Try this: taskset -c 0 ./pool_map_apply (one CPU: one worker by default);
 *          setarch -R ./pool_map_apply (ASLR off: exec keeps the address,
 *          by luck, not by contract).
 */
#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT */
#include "mp.h"

#include <sched.h>

/* One result of a map: the value and who computed it.  Two int64_t: no
 * padding bytes, so the bytes copied back are all meaningful. */
struct result {
	int64_t value, pid;
};

/* What apply() brings back from a worker. */
struct where {
	int64_t pid;
	uint64_t square_at;
};

/* Set once in main before the pool forks: every worker has its own copy with
 * that value (a module-level setting in Python under "fork" is the same). */
static long task_delay_us;

static int nap(void)
{
	struct timespec t = { task_delay_us / 1000000,
			      task_delay_us % 1000000 * 1000 };

	while (nanosleep(&t, &t) == -1)
		if (errno != EINTR)
			return errno; /* the task fails with this code */
	return 0;
}

/* The tasks: mp_pool_fn reads its argument bytes and writes its result bytes.
 * They run in the workers, never in the parent. */
static int square(const void *arg, void *res)
{
	int64_t x = *(const int64_t *)arg;

	*(struct result *)res = (struct result){ x * x, getpid() };
	return task_delay_us ? nap() : 0;
}

static int triangle(const void *arg, void *res)
{
	int64_t x = *(const int64_t *)arg;

	*(struct result *)res = (struct result){ x * (x + 1) / 2, getpid() };
	return task_delay_us ? nap() : 0;
}

static int where_am_i(const void *arg, void *res)
{
	(void)arg;
	*(struct where *)res = (struct where){ getpid(), (uintptr_t)square };
	return 0;
}

/* Check a map's results in order; count how many items each worker did. */
static long check(const struct result *r, long n, bool tri, const pid_t *pids,
		  int npids, long *per_worker)
{
	long good = 0;

	memset(per_worker, 0, sizeof *per_worker * (size_t)npids);
	for (long i = 0; i < n; i++) {
		good += r[i].value == (tri ? i * (i + 1) / 2 : i * i);
		for (int w = 0; w < npids; w++)
			if (r[i].pid == pids[w]) {
				per_worker[w]++;
				break;
			}
	}
	return good;
}

static void show_split(const char *what, const pid_t *pids, int n,
		       const long *per)
{
	char line[512];
	int len = 0;

	for (int w = 0; w < n && len < (int)sizeof line - 40; w++)
		len += snprintf(line + len, sizeof line - (size_t)len,
				"%s%jd: %ld", w ? ", " : "", (intmax_t)pids[w],
				per[w]);
	mp_say("parent", "   %s, items per worker: %s", what, line);
}

/* Run this program again through exec and read the address of square() that
 * the new image prints (hidden option --fn-address). */
static uint64_t square_after_exec(void)
{
	int fd[2];
	char buf[64] = "";
	ssize_t len, got = 0;

	MP_CHECK(pipe(fd));
	pid_t pid = mp_fork();

	if (pid == 0) {
		MP_CHECK(dup2(fd[1], STDOUT_FILENO));
		MP_CHECK(close(fd[0]));
		MP_CHECK(close(fd[1]));
		/* Our own path: readlink("/proc/self/exe"). */
		execl(mp_self_exe(), "pool_map_apply", "--fn-address",
		      (char *)NULL);
		mp_die("execl %s", mp_self_exe());
	}
	MP_CHECK(close(fd[1]));
	while ((len = read(fd[0], buf + got, sizeof buf - 1 - (size_t)got)) > 0)
		got += len;
	MP_CHECK(len);
	MP_CHECK(close(fd[0]));
	if (mp_waitpid(pid) != 0)
		mp_die_en(ECHILD, "the exec'd copy of this program failed");
	return strtoull(buf, NULL, 16);
}

int main(int argc, char *argv[])
{
	long workers = 0, items = 100000;
	bool fn_address = false;
	const struct mp_opt opts[] = {
		MP_OPT_L("workers", &workers, 0, MP_POOL_MAX_WORKERS,
			 "worker processes, 0 = the CPUs we may run on"),
		MP_OPT_L("items", &items, 1, 10000000, "items per map"),
		MP_OPT_L("delay-us", &task_delay_us, 0, 1000000,
			 "microseconds each task sleeps (simulated work)"),
		MP_OPT_F("fn-address", &fn_address,
			 NULL), /* hidden: the exec'd copy */
	};

	mp_parse_options(argc, argv,
			 "Pool.map and Pool.apply on a pool of forked workers.",
			 opts, sizeof opts / sizeof opts[0]);
	if (fn_address) {
		printf("%" PRIxPTR "\n", (uintptr_t)square);
		return EXIT_SUCCESS;
	}
	mp_stop_on_signals();

	/* 1. The default size: the CPUs this process may run on (its affinity
	 *    mask, which taskset and cgroups cpusets narrow), not the CPUs the
	 *    machine has: os.process_cpu_count() vs os.cpu_count(). */
	cpu_set_t cpus;

	MP_CHECK(sched_getaffinity(0, sizeof cpus, &cpus));
	long online = sysconf(_SC_NPROCESSORS_ONLN);

	MP_CHECK(online);
	mp_say("parent",
	       "1. CPUs online: %ld (os.cpu_count), CPUs we may run on: %d "
	       "(os.process_cpu_count)",
	       online, CPU_COUNT(&cpus));

	/* 2. Pool(processes): fork the workers once; they wait for work. */
	struct mp_pool *pool = mp_pool_create(
	    &(struct mp_pool_options){ .workers = (int)workers });

	if (!pool)
		mp_die("mp_pool_create");
	int nw = mp_pool_workers(pool);
	pid_t pids[MP_POOL_MAX_WORKERS], again[MP_POOL_MAX_WORKERS];
	int npids = mp_pool_pids(pool, pids, MP_POOL_MAX_WORKERS);
	bool default_ok = workers != 0 || nw == CPU_COUNT(&cpus);

	mp_say("parent", "2. pool of %d worker%s (%s), first worker pid %jd",
	       nw, nw == 1 ? "" : "s", workers ? "--workers" : "the default",
	       (intmax_t)pids[0]);

	/* 3. map(square, range(n)): items and results are arrays of fixed-size
	 *    items; chunksize 0 = Python's rule. */
	int64_t *in = malloc(sizeof *in * (size_t)items);
	struct result *out = malloc(sizeof *out * (size_t)items);
	long per[MP_POOL_MAX_WORKERS];

	if (!in || !out)
		mp_die("malloc");
	for (long i = 0; i < items; i++)
		in[i] = i;
	int64_t t0 = mp_now_ns();

	if (mp_pool_map(pool, square, in, (size_t)items, sizeof *in, out,
			sizeof *out, 0) == -1)
		mp_die("mp_pool_map(square)");
	long good1 = check(out, items, false, pids, npids, per);

	mp_say("parent",
	       "3. map(square): %ld/%ld results in order in %.1f ms, chunksize "
	       "%zu",
	       good1, items, mp_elapsed_s(t0) * 1e3,
	       mp_pool_auto_chunksize(pool, (size_t)items));
	show_split("out[i] == i*i for every i", pids, npids, per);

	/* 4. apply(f): one task, run in a worker, waited for.  The pool passed
	 *    the worker a function pointer, and it was valid there: the worker
	 *    is a fork of this process, the same image at the same
	 *    addresses. */
	struct where w;

	if (mp_pool_apply(pool, where_am_i, NULL, 0, &w, sizeof w) == -1)
		mp_die("mp_pool_apply");
	bool apply_ok = w.pid != getpid() && w.square_at == (uintptr_t)square;

	mp_say("parent",
	       "4. apply(where_am_i) ran in worker %jd (parent %jd); square() "
	       "is at "
	       "%#" PRIx64 " there and %#" PRIxPTR " here",
	       (intmax_t)w.pid, (intmax_t)getpid(), w.square_at,
	       (uintptr_t)square);

	/* 5. The same pool again, with another function: no new processes. */
	t0 = mp_now_ns();
	if (mp_pool_map(pool, triangle, in, (size_t)items, sizeof *in, out,
			sizeof *out, 0) == -1)
		mp_die("mp_pool_map(triangle)");
	long good2 = check(out, items, true, pids, npids, per);
	struct mp_pool_stats st;

	mp_pool_stats(pool, &st);
	bool same = mp_pool_pids(pool, again, MP_POOL_MAX_WORKERS) == npids &&
		    memcmp(pids, again, sizeof *pids * (size_t)npids) == 0 &&
		    st.workers_started == (uint64_t)nw;

	mp_say(
	    "parent",
	    "5. map(triangle) on the same pool: %ld/%ld in order in %.1f ms; "
	    "workers started so far: %" PRIu64 " (%s)",
	    good2, items, mp_elapsed_s(t0) * 1e3, st.workers_started,
	    same ? "the same ones" : "NEW ONES");
	show_split("out[i] == i*(i+1)/2", pids, npids, per);

	/* 6. close(): no more work (Python: ValueError "Pool not running");
	 *    join(): the workers finish, exit and are reaped. */
	MP_CHECK(mp_pool_close(pool));
	int late = mp_pool_apply(pool, where_am_i, NULL, 0, &w, sizeof w);
	int late_err = errno;
	/* join() before close() is refused (EINVAL; Python: ValueError "Pool
	 * is still running"): then close and join, and say MISMATCH. */
	int joined = mp_pool_join(pool);

	if (joined == -1 && errno != EINVAL)
		mp_die("mp_pool_join");
	if (joined == -1) {
		mp_say("parent", "6. join() refused: the pool was not closed");
		MP_CHECK(mp_pool_close(pool));
		MP_CHECK(mp_pool_join(pool));
	}
	bool reaped = waitpid(-1, NULL, WNOHANG) == -1 && errno == ECHILD;

	mp_say("parent",
	       "6. after close(), apply() gives %s; after join(), children "
	       "left: %s",
	       late == -1 ? mp_errname(late_err) : "success (!)",
	       reaped ? "none" : "some");
	mp_pool_destroy(pool);
	free(in);
	free(out);

	/* 7. After exec the image is loaded anew at a random base (PIE + ASLR):
	 *    the parent's address of square() means nothing there.  Python's
	 *    spawn pickles a function as module + name and imports it again. */
	uint64_t exec_at = square_after_exec();

	mp_say(
	    "parent", "7. square() after exec: %#" PRIx64 " (%s)", exec_at,
	    exec_at != (uintptr_t)square
		? "another address: a pointer sent there would be garbage"
		: "the same: ASLR is off here, which is luck, not a contract");

	bool ok = good1 == items && good2 == items && apply_ok && same &&
		  default_ok && late == -1 && late_err == EINVAL &&
		  joined == 0 && reaped;

	printf("result: map %ld/%ld and %ld/%ld in order, apply in worker %s, "
	       "%d worker(s) reused %s, "
	       "closed+joined %s %s\n",
	       good1, items, good2, items, apply_ok ? "yes" : "no", nw,
	       same ? "yes" : "no", reaped && joined == 0 ? "yes" : "no",
	       ok ? "OK" : "MISMATCH");
	return ok ? EXIT_SUCCESS : EXIT_FAILURE;
}
