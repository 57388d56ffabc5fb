/* 4_patterns/worker_pool_pattern.c -- a worker pool built by hand, a worker
 * killed mid-task, and what one dispatch costs
 *
 * Python:  with ProcessPoolExecutor() as ex:
 *              results = list(ex.map(f, items, chunksize=B))
 *          Lib/concurrent/futures/process.py: a call queue, a result queue,
 *          one None sentinel per worker at shutdown (shutdown_workers), a
 *          manager thread waiting on the result pipe and every worker's
 *          sentinel.  A worker that dies breaks the executor: every pending
 *          future raises BrokenProcessPool (_terminate_broken), nothing is
 *          retried.  multiprocessing.Pool replaces the worker but never sends
 *          its task again: map() waits forever (bpo-22393, gh-66587).  Both
 *          default to os.process_cpu_count() workers since 3.13; before, to
 *          os.cpu_count(), the whole machine whatever the affinity.
 * C:       lib/mp_queue for tasks and results, fork, a slot per worker in a
 *          MAP_SHARED page naming the task it holds, pidfd_open + poll to see
 *          a worker die, waitpid, pidfd_send_signal for a straggler,
 *          sched_getaffinity; then mp_pool_map on the same job.
 * Usage:   worker_pool_pattern [--workers N (0 = the CPUs we may run on)]
 *            [--tasks N (2000)] [--us N (10): microseconds a task spins]
 *            [--batch N (1)] [--no-kill] [--batch-tasks N (10000)]
 *            [--no-python] [--csv]
 * Output:  (trimmed; 2 cores shared with other jobs)
 *   $ worker_pool_pattern
 *   [parent 13106 +17.8ms] pidfd of worker 0 readable: killed by SIGKILL
 *                          holding task 1000, re-queued; replacement pid 13114
 *   [parent 13106 +23.9ms] 2000 of 2000 results, each item once and exact,
 *                          put in task order (6 came before an earlier one)
 *   [python 13258] item 1000 SIGKILLed its worker: 1000 of 2000 futures
 *       done, 1000 raised BrokenProcessPool; a new submit: BrokenProcessPool
 *   engine   task_us  batch   items   seconds     items/s
 *   hand          10      1    2000  0.027229       73452
 *   mp_pool       10      1    2000  0.028961       69057
 *   python        10      1    2000  0.087381       22888
 *   python         0      1   10000  0.542427       18436
 *   python         0   1000   10000  0.006248     1600512
 *   python   one dispatch costs about 53.7 us of wall time (batch 1 vs 1000)
 *   result: hand 166000 items, each once and exact: yes, 1 death(s), 1
 *           re-queued; mp_pool exact: yes; python exact: yes OK  (one line)
 * Try this: delete the RE-QUEUE block: the task never comes back, the
 *   parent gives up after 1 s without a result: MISMATCH.  --batch 100 (a
 *   whole batch runs again); --no-kill (nobody dies); taskset -c 0 (one
 *   worker by default); python3 -c 'import os; print(os.cpu_count())' under
 *   taskset -c 0 still says 2, which Pool used before Python 3.13.
 */
#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT, sigabbrev_np */
#include "mp.h"

#include <poll.h>
#include <sched.h>

enum { MAXW = 64, MAXB = 1000, NROW = 6, HAND = 0, LIB = 1, PY = 2 };

/* A task travels by value: the workers were forked before the job was
 * chosen and know only what a task tells them. */
struct task { int64_t first, count, us; };  /* count 0: the sentinel */
struct result { int64_t index; uint64_t value; };

struct shared {                  /* mapped before the first fork */
	_Atomic int64_t holds[MAXW]; /* first item of a worker's task, or -1 */
	_Atomic int64_t kill_at;     /* the item to die on, or -1 */
};

struct pool {                    /* what the parent knows */
	struct mp_queue *tasks, *results;
	struct shared *sh;
	int workers, pidfd[MAXW];
	pid_t pid[MAXW];
	int64_t n, us, batch, got, late, high;  /* the job running now */
	uint8_t *seen;   /* results received, per item */
	uint64_t *out;   /* the results, in task order */
	long deaths, requeued, extra;
	bool quiet;      /* --csv: no narration */
};

static uint64_t splitmix64(uint64_t x)
{
	uint64_t z = x + 0x9E3779B97F4A7C15u;

	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9u;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBu;
	return z ^ (z >> 31);
}

/* The task: spin us microseconds (the same cost in Python), then return a
 * value the parent can check. */
static uint64_t work(int64_t i, int64_t us)
{
	int64_t end = mp_now_ns() + us * 1000;

	while (mp_now_ns() < end)
		;
	return splitmix64((uint64_t)i);
}

static _Noreturn void worker(struct pool *p, int w)
{
	struct task t;
	struct result r[MAXB];
	int got;

	for (int k = 0; k < p->workers; k++)  /* the siblings' pidfds */
		if (p->pidfd[k] >= 0)
			MP_CHECK(close(p->pidfd[k]));
	while ((got = mp_queue_get(p->tasks, &t)) == 1 && t.count > 0) {
		atomic_store(&p->sh->holds[w], t.first);
		for (int64_t k = 0; k < t.count; k++) {
			/* Die mid-task, as the OOM killer would
			 * kill us (not inside a queue call, where a death can
			 * wedge the queue: see lib/mp_queue.h). */
			if (t.first + k == atomic_load(&p->sh->kill_at))
				MP_CHECK(kill(getpid(), SIGKILL));
			r[k] = (struct result){ t.first + k,
						work(t.first + k, t.us) };
		}
		if (mp_queue_put_many(p->results, r, (size_t)t.count) !=
		    t.count)
			mp_die("mp_queue_put_many");
		atomic_store(&p->sh->holds[w], -1);
	}
	if (got == -1)
		mp_die("mp_queue_get");
	_exit(EXIT_SUCCESS);
}

static void spawn(struct pool *p, int w)
{
	atomic_store(&p->sh->holds[w], -1);
	p->pidfd[w] = -1;
	p->pid[w] = mp_fork();
	if (p->pid[w] == 0)
		worker(p, w);
	/* A pidfd names this process, not a pid number that may be reused
	 * (where pidfd_open is missing, an fd that turns readable at exit). */
	MP_CHECK(p->pidfd[w] = mp_pidfd_open(p->pid[w]));
}

static void record(struct pool *p, struct result r)
{
	if (r.index < 0 || r.index >= p->n || p->seen[r.index]++) {
		p->extra++;  /* a duplicate or a stray: never expected */
		return;
	}
	p->out[r.index] = r.value;  /* back in task order */
	p->got++;
	p->late += r.index < p->high;
	p->high = r.index > p->high ? r.index : p->high;
}

static void drain(struct pool *p)
{
	struct result r;
	int k;

	while ((k = mp_queue_try_get(p->results, &r)) == 1)
		record(p, r);
	if (k == -1 && errno != EAGAIN)
		mp_die("mp_queue_try_get");
}

/* Worker w's pidfd is readable: it has died mid-job.  Results it queued
 * count; the task its slot names goes back in the queue if still owed. */
static void replace(struct pool *p, int w)
{
	int st = mp_waitpid(p->pid[w]);  /* does not block: it has exited */

	MP_CHECK(close(p->pidfd[w]));
	p->deaths++;
	atomic_store(&p->sh->kill_at, -1);  /* once is enough */
	drain(p);
	int64_t f = atomic_exchange(&p->sh->holds[w], -1);
	bool lost = f >= 0 && !p->seen[f];
	long before = p->requeued;

	if (lost) {  /* RE-QUEUE: another worker runs it again */
		struct task t = { f, p->n - f < p->batch ? p->n - f :
				  p->batch, p->us };

		if (mp_queue_put(p->tasks, &t) == -1)
			mp_die("mp_queue_put");
		p->requeued++;
	}
	spawn(p, w);
	if (!p->quiet)
		mp_say("parent", "pidfd of worker %d readable: %s%s holding "
		       "task %" PRId64 "%s; replacement pid %jd", w,
		       WIFSIGNALED(st) ? "killed by SIG" : "exited with ",
		       WIFSIGNALED(st) ? sigabbrev_np(WTERMSIG(st)) :
		       WEXITSTATUS(st) ? "an error" : "0", f,
		       p->requeued > before ? ", re-queued" : lost ?
		       ", LOST" : "", (intmax_t)p->pid[w]);
}

/* One job: items 0..n-1 in tasks of `batch` items.  The queue sleeps on a
 * futex, which poll() cannot watch, so the parent alternates: a get with a
 * 1 ms timeout, then a look at the pidfds.  Returns the seconds it took, or
 * -1 after 1 s (plus two tasks' time) without any result: one is never
 * coming. */
static double run_job(struct pool *p, int64_t n, int64_t us, int64_t batch,
		      bool kill)
{
	struct pollfd pfd[MAXW];
	struct result r;
	int64_t t0 = mp_now_ns(), quiet = t0, shown = t0;

	p->n = n, p->us = us, p->batch = batch;
	p->got = p->late = p->high = 0;
	memset(p->seen, 0, (size_t)n);
	atomic_store(&p->sh->kill_at, kill ? n / 2 : -1);
	for (int64_t f = 0; f < n; f += batch)  /* the queue has room */
		if (mp_queue_put(p->tasks, &(struct task){
				 f, n - f < batch ? n - f : batch, us }) == -1)
			mp_die("mp_queue_put");
	while (p->got < n) {
		int k = mp_queue_get_timeout(p->results, &r, 0.001);

		if (k == 1)
			record(p, r), quiet = mp_now_ns();
		else if (errno != ETIMEDOUT)
			mp_die("mp_queue_get_timeout");
		if (k != 1 || p->got % 256 == 0) {
			for (int w = 0; w < p->workers; w++)
				pfd[w] = (struct pollfd){ .fd = p->pidfd[w],
							  .events = POLLIN };
			MP_CHECK(poll(pfd, (nfds_t)p->workers, 0));
			for (int w = 0; w < p->workers; w++)
				if (pfd[w].revents & POLLIN)
					replace(p, w);
		}
		if (mp_now_ns() - quiet > 1000000000 + 2000 * us * batch)
			return -1;
		if (!p->quiet && mp_now_ns() - shown > 1000000000) {
			shown = mp_now_ns();  /* a long run shows progress */
			mp_say("parent", "%" PRId64 " of %" PRId64 " results",
			       p->got, n);
		}
	}
	return mp_elapsed_s(t0);
}

/* Sentinels only at the end: a task re-queued behind them would never
 * run.  Each worker gets 2 s to leave, then SIGKILL (one sentinel too few
 * shows there; one too many stays in the queue). */
static bool stop_workers(struct pool *p)
{
	bool ok = true;
	int r;

	for (int w = 0; w < p->workers; w++)
		if (mp_queue_put(p->tasks, &(struct task){ 0 }) == -1)
			mp_die("mp_queue_put");
	for (int w = 0; w < p->workers; w++) {
		MP_CHECK(r = poll(&(struct pollfd){ p->pidfd[w], POLLIN, 0 },
				  1, 2000));
		if (r == 0)
			MP_CHECK(mp_pidfd_send_signal(p->pidfd[w], p->pid[w],
						      SIGKILL));
		int st = mp_waitpid(p->pid[w]);

		ok &= r == 1 && WIFEXITED(st) && WEXITSTATUS(st) == 0;
		MP_CHECK(close(p->pidfd[w]));
	}
	drain(p);  /* anything still queued is a duplicate */
	ok &= mp_queue_qsize(p->tasks) == 0;  /* one sentinel per worker */
	return ok && p->extra == 0;
}

/* Every item of the last job exactly once, with its right value? */
static bool exact(const struct pool *p)
{
	bool ok = p->got == p->n && p->extra == 0;

	for (int64_t i = 0; i < p->n && ok; i++)
		ok = p->seen[i] == 1 && p->out[i] == splitmix64((uint64_t)i);
	return ok;
}

/* ---- the same job on lib/mp_pool, in Python, and the table ----------- */

struct item { int64_t i, us; };
struct row { int64_t us, batch, n; double s; };  /* s < 0: not run */
static const char *const engine[3] = { "hand", "mp_pool", "python" };

static int pool_task(const void *arg, void *res)
{
	const struct item *it = arg;

	*(uint64_t *)res = work(it->i, it->us);
	return 0;
}

static double run_lib(struct mp_pool *pool, struct item *in, uint64_t *out,
		      const struct row *r, bool *ok)
{
	for (int64_t i = 0; i < r->n; i++)
		in[i] = (struct item){ i, r->us };
	int64_t t0 = mp_now_ns();

	if (mp_pool_map(pool, pool_task, in, (size_t)r->n, sizeof *in, out,
			sizeof *out, (size_t)r->batch) == -1)
		mp_die("mp_pool_map");
	double s = mp_elapsed_s(t0);

	for (int64_t i = 0; i < r->n; i++)
		*ok &= out[i] == splitmix64((uint64_t)i);
	return s;
}

/* The twin prints its rows in our order, each with a checksum, and its
 * own narration ("[python ...]"), which we pass on. */
struct twin { struct row *rows; int k; bool ok, csv; };

static void twin_line(const char *line, void *arg)
{
	struct twin *t = arg;
	long long us, b, n;
	unsigned long long sum;
	uint64_t want = 0;
	double s;

	if (sscanf(line, "python,%lld,%lld,%lld,%lf,%*f,%llu", &us, &b, &n,
		   &s, &sum) == 5 && t->k < NROW) {
		for (int64_t i = 0; i < n; i++)
			want += splitmix64((uint64_t)i);
		t->ok &= sum == want;
		t->rows[t->k++] = (struct row){ us, b, n, s };
	} else if (!t->csv) {
		printf("%s\n", line);
	}
}

static void print_table(struct row r[3][NROW], bool csv)
{
	printf(csv ? "engine,task_us,batch,items,seconds,items_per_s\n" :
	       "engine   task_us  batch   items   seconds     items/s\n");
	for (int e = 0; e < 3; e++)
		for (int k = 0; k < NROW && r[e][k].s >= 0; k++)
			printf(csv ? "%s,%" PRId64 ",%" PRId64 ",%" PRId64
			       ",%.6f,%.0f\n" : "%-8s %7" PRId64 " %6" PRId64
			       " %7" PRId64 " %9.6f %11.0f\n", engine[e],
			       r[e][k].us, r[e][k].batch, r[e][k].n, r[e][k].s,
			       (double)r[e][k].n / r[e][k].s);
	for (int e = 0; e < 3 && !csv; e++) {
		/* Batches of 1000 make n - n/1000 fewer dispatches: the time
		 * that saves, per dispatch saved, is what one costs. */
		struct row *one = &r[e][3], *big = &r[e][5];
		double saved = (double)one->n - (double)one->n / 1000;

		if (big->s >= 0 && one->s > 1.25 * big->s)
			printf("%-8s one dispatch costs about %.3g us of wall "
			       "time (batch 1 vs 1000)\n", engine[e],
			       (one->s - big->s) / saved * 1e6);
		else if (one->s >= 0)
			printf("%-8s batching gains nothing measurable here: "
			       "a dispatch is lost in the noise\n", engine[e]);
	}
}

int main(int argc, char *argv[])
{
	long workers = 0, tasks = 2000, us = 10, batch = 1, btasks = 10000;
	bool nokill = false, nopy = false, csv = false, lib_ok = true;
	const struct mp_opt opts[] = {
		MP_OPT_L("workers", &workers, 0, MAXW,
			 "workers (0 = the CPUs we may run on)"),
		MP_OPT_L("tasks", &tasks, 1, 1000000, "items of the job"),
		MP_OPT_L("us", &us, 0, 1000000, "microseconds a task spins"),
		MP_OPT_L("batch", &batch, 1, MAXB, "items per task"),
		MP_OPT_F("no-kill", &nokill,
			 "do not SIGKILL a worker mid-task"),
		MP_OPT_L("batch-tasks", &btasks, 1, 1000000,
			 "tiny items for the batching rows"),
		MP_OPT_F("no-python", &nopy, "skip the Python twin"),
		MP_OPT_F("csv", &csv, "print the table as CSV only"),
	};

	mp_parse_options(argc, argv, "A worker pool built by hand (queues, "
			 "forked workers, pidfds), then lib/mp_pool and "
			 "ProcessPoolExecutor on the same job.", opts,
			 sizeof opts / sizeof *opts);
	mp_stop_on_signals();
	bool kill = !nokill;

	/* 1. As many workers as CPUs we may run on (taskset, cpusets), not
	 *    as many as the machine has. */
	if (workers == 0) {
		cpu_set_t set;

		MP_CHECK(sched_getaffinity(0, sizeof set, &set));
		workers = CPU_COUNT(&set) < MAXW ? CPU_COUNT(&set) : MAXW;
	}

	/* 2. Queues and slots before the first fork; the task queue holds
	 *    every task of a job plus the sentinels.  Then the workers. */
	int64_t maxn = tasks > btasks ? tasks : btasks;
	struct pool p = { .workers = (int)workers, .quiet = csv };

	p.tasks = mp_queue_create(sizeof(struct task),
				  (size_t)(maxn + workers));
	p.results = mp_queue_create(sizeof(struct result), 4096);
	p.sh = mp_shm_alloc(sizeof *p.sh);
	p.seen = malloc((size_t)maxn);
	p.out = malloc((size_t)maxn * sizeof *p.out);
	if (!p.tasks || !p.results || !p.sh || !p.seen || !p.out)
		mp_die("allocating the pool");
	for (int w = 0; w < p.workers; w++)
		p.pidfd[w] = -1;
	for (int w = 0; w < p.workers; w++)
		spawn(&p, w);
	if (!csv)
		mp_say("parent", "%d workers forked, each watched through a "
		       "pidfd; %ld tasks of %ld us, %ld item(s) each",
		       p.workers, tasks, us, batch);

	/* 3. The job: results arrive in any order, each goes to its index. */
	double s = run_job(&p, tasks, us, batch, kill);
	bool hand_ok = s >= 0 && exact(&p) && p.requeued == kill;
	int64_t items = p.got;

	if (!csv)
		mp_say("parent", "%" PRId64 " of %ld results, %s, put in task "
		       "order (%" PRId64 " came before an earlier one)", p.got,
		       tasks, hand_ok ? "each item once and exact" :
		       "MISSING OR WRONG", p.late);
	if (!csv && kill)
		mp_say("parent", "multiprocessing.Pool replaces a dead worker "
		       "too, but never sends its task again: its map() would "
		       "wait forever (bpo-22393)");

	/* 4. The table, hand pool and mp_pool side by side: task sizes one
	 *    by one, then tiny tasks in batches (best of 5: 1 ms a run). */
	struct mp_pool *pool = mp_pool_create(&(struct mp_pool_options){
		.workers = (int)workers });
	struct item *in = malloc((size_t)maxn * sizeof *in);
	struct row r[3][NROW];

	if (!pool || !in)
		mp_die("mp_pool_create");
	for (int k = 0; k < NROW; k++) {
		int64_t ks[NROW] = { 0, 10, 100, 0, 0, 0 };
		int64_t kb[NROW] = { 1, 1, 1, 1, 100, 1000 };

		for (int e = 0; e < 3; e++)
			r[e][k] = (struct row){ ks[k], kb[k],
						k < 3 ? tasks : btasks, -1 };
		for (int rep = 0; rep < (ks[k] ? 1 : 5); rep++) {
			double h = run_job(&p, r[HAND][k].n, ks[k], kb[k],
					   false);
			double l = run_lib(pool, in, p.out, &r[LIB][k],
					   &lib_ok);

			hand_ok &= h >= 0 && exact(&p);
			items += p.got;
			if (rep == 0 || h < r[HAND][k].s)
				r[HAND][k].s = h;
			if (rep == 0 || l < r[LIB][k].s)
				r[LIB][k].s = l;
		}
	}
	mp_pool_destroy(pool);
	hand_ok &= stop_workers(&p) && p.deaths == kill;

	/* 5. ProcessPoolExecutor on the same items, in the twin. */
	struct twin t = { .rows = r[PY], .ok = true, .csv = csv };
	char a[4][24];
	bool py = !nopy && mp_python3();

	snprintf(a[0], sizeof a[0], "%ld", workers);
	snprintf(a[1], sizeof a[1], "%ld", tasks);
	snprintf(a[2], sizeof a[2], "%ld", btasks);
	snprintf(a[3], sizeof a[3], "%ld", kill ? tasks : 0);
	if (py) {
		int st = mp_run_twin(MP_LESSON_DIR "/worker_pool_pattern.py",
				     (char *[]){ "--workers", a[0], "--tasks",
						 a[1], "--batch-tasks", a[2],
						 "--kill-tasks", a[3], NULL },
				     120, twin_line, &t);

		t.ok &= st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0 &&
			t.k == NROW;
	}

	/* 6. The figures, and the verdict: every result exact, each once. */
	bool ok = hand_ok && lib_ok && (!py || t.ok);

	print_table(r, csv);
	if (!csv && !py)
		printf("python: skipped (%s)\n", nopy ? "--no-python" :
		       "python3 was not found at configure time");
	if (!csv)
		printf("result: hand %" PRId64 " items, each once and exact: "
		       "%s, %ld death(s), %ld re-queued; mp_pool exact: %s; "
		       "python exact: %s %s\n", items, hand_ok ? "yes" : "no",
		       p.deaths, p.requeued, lib_ok ? "yes" : "no", !py ?
		       "skipped" : t.ok ? "yes" : "no", ok ? "OK" : "MISMATCH");
	else if (!ok)
		fprintf(stderr, "worker_pool_pattern: a result was wrong\n");
	MP_CHECK(mp_queue_destroy(p.tasks));
	MP_CHECK(mp_queue_destroy(p.results));
	MP_CHECK(mp_shm_free(p.sh, sizeof *p.sh));
	free(p.seen);
	free(p.out);
	free(in);
	return ok ? EXIT_SUCCESS : EXIT_FAILURE;
}
