/* 7_integration/ray_comparison.c -- Ray's model (remote tasks, futures, a
 * stateful actor) on one machine with mp_pool, and across machines with MPI
 *
 * Python:  @ray.remote
 *          def f(i): ...
 *          refs = [f.remote(i) for i in range(n)]; values = ray.get(refs)
 *          @ray.remote
 *          class Summer:                 # an actor: a process with state
 *              def add(self, v): self.count += 1; self.sum += v
 *          s = Summer.remote(); [s.add.remote(v) for v in values]
 *          ray.get(s.state.remote())     # calls run in submission order
 *          Ray's own figures, from its release microbenchmark
 *          (github.com/ray-project/ray, release/release_logs/2.10.0/
 *          microbenchmark.json, on Ray's test machines):
 *          single_client_tasks_async 8051 tasks/s, single_client_tasks_sync
 *          1046/s (a 956 us round trip), 1_1_actor_calls_sync 2051/s
 *          (488 us).  Its docs (docs.ray.io, "Optimizing Performance"): "You
 *          will be unlikely to see speedups if your tasks take less than
 *          ten milliseconds."
 * C:       one machine: mp_pool_apply_async handles are the futures
 *          (mp_pool_get is ray.get); the actor is a pool of ONE worker whose
 *          state is a global set by its initializer: calls run one at a
 *          time, in order, in that process.  Many machines:
 *          ray_comparison_mpi.c, started here with fork + exec of mpirun
 *          (its own process group, TMPDIR and Open MPI's shared-memory
 *          files in a private directory removed afterwards, this process a
 *          child subreaper so no rank can outlive us), read through a pipe.
 * Usage:   ray_comparison [--tasks N (20000, 1..10^6)] [--work N (100,
 *            0..10^9): xorshift steps a task] [--workers N (0 = CPUs)]
 *            [--np N (4, 3..64): MPI ranks] [--hostfile FILE]
 *          On several machines: list them in FILE ("host1 slots=4" per
 *          line), build the tree at the same path on each (or share it),
 *          and run ray_comparison --np 16 --hostfile FILE.
 * Output:  (2 CPUs shared with other jobs; MPI's 4 ranks oversubscribe them)
 *          [parent 29095 +14.0ms] 2. 20000 futures resolved in 8.9 ms,
 *                                 20000 exact
 *          [parent 29095 +20.9ms] 3. actor: count 20000 sum
 *            7187838850979536217 (exact); this process's copy of the
 *            global: count 0
 *          [parent 29095 +538.2ms] 5. mpirun -np 4: exit 0, 4 ranks on 1
 *            host(s), 20000 of 20000 tasks answered once, checksum exact,
 *            actor exact
 *          engine                tasks/s   task round trip   actor call
 *          mp_pool               2253798            6.6 us       4.8 us
 *          MPI, 4 ranks           302265            5.5 us       5.4 us
 *          Ray (its figures)        8051          955.7 us     487.7 us
 *          result: mp_pool 20000/20000 exact, actor exact; MPI exact OK
 *          MPI's tasks/s has one task in flight per worker; mp_pool's has
 *          all of them submitted at once (as Ray's "async" figure).
 * Try this: make the actor a pool of 2 workers (step 1): the state is
 *          split between two processes and the verdict says MISMATCH;
 *          in ray_comparison_mpi.c, drop a worker's DONE to the actor (the
 *          driver waits 3 s for the final state, then aborts the ranks:
 *          MISMATCH); keep the write end of the pipe from mpirun open
 *          in run_mpi() (drop close(fd[1])): no EOF a second after mpirun
 *          exits, MISMATCH; --tasks 200 --work 10000000 (10 ms tasks, where
 *          Ray's overhead stops mattering; about 10 s here); --np 3 (a
 *          single MPI worker).
 */
#define _GNU_SOURCE /* pipe2 */
#include "mp.h"
#include "ray_task.h"

#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>

enum { PROBES = 200 };

struct targ { int64_t i, work; };
struct state { uint64_t count, sum; };

static int remote_f(const void *arg, void *res)  /* f.remote(i) */
{
	const struct targ *t = arg;

	*(uint64_t *)res = task_value(t->i, t->work);
	return 0;
}

/* The actor's state: this global exists in every process, but only the
 * actor's worker ever changes its copy. */
static struct state actor_state;

static void actor_init(void *arg)
{
	(void)arg;
	actor_state = (struct state){ 0, 0 };
}

static int actor_add(const void *arg, void *res)
{
	(void)res;
	actor_state.count++;
	actor_state.sum += *(const uint64_t *)arg;
	return 0;
}

static int actor_get(const void *arg, void *res)
{
	(void)arg;
	memcpy(res, &actor_state, sizeof actor_state);
	return 0;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* Median microseconds of a blocking call (ray.get(f.remote(i))). */
static double round_trip(struct mp_pool *pool, mp_pool_fn fn, void *res)
{
	double t[PROBES];
	struct targ a = { 7, 0 };

	for (int k = 0; k < PROBES; k++) {
		int64_t t0 = mp_now_ns();

		if (mp_pool_apply(pool, fn, &a, sizeof a, res, 16) == -1)
			mp_die("mp_pool_apply");
		t[k] = (double)(mp_now_ns() - t0) / 1e3;
	}
	qsort(t, PROBES, sizeof *t, cmp_double);
	return t[PROBES / 2];
}

/* What ray_comparison_mpi printed (see its header). */
struct mpi_figs {
	int ranks, hosts, lines;
	double task_us, actor_us, secs, stuck;  /* stuck: the driver gave up */
	bool eof;  /* the pipe from mpirun ended, as it must */
	unsigned long long checksum, count, sum;
	long long tasks, once;
};

#ifdef MP_HAVE_MPI
static void mpi_line(char *line, struct mpi_figs *f)
{
	f->lines += sscanf(line, "mpi,ranks,%d,%d", &f->ranks,
			   &f->hosts) == 2 ||
		    sscanf(line, "mpi,latency,%lf,%lf", &f->task_us,
			   &f->actor_us) == 2 ||
		    sscanf(line, "mpi,tasks,%lld,%lf,%llu,%lld", &f->tasks,
			   &f->secs, &f->checksum, &f->once) == 4 ||
		    sscanf(line, "mpi,actor,%llu,%llu", &f->count,
			   &f->sum) == 2;
	if (sscanf(line, "mpi,stuck,%lf", &f->stuck) == 1)
		mp_say("parent", "5. the MPI driver waited %.1f s for a "
		       "message that never came and aborted the ranks",
		       f->stuck);
}

/* SIGKILL every child of this process (the kernel lists them). */
static void kill_children(void)
{
	char path[64], list[4096], *p = list, *end;
	int fd;

	snprintf(path, sizeof path, "/proc/self/task/%jd/children",
		 (intmax_t)getpid());
	MP_CHECK(fd = open(path, O_RDONLY | O_CLOEXEC));
	ssize_t len = read(fd, list, sizeof list - 1);

	MP_CHECK(len);
	MP_CHECK(close(fd));
	list[len] = '\0';
	for (long c; (c = strtol(p, &end, 10)) > 0; p = end)
		if (kill((pid_t)c, SIGKILL) == -1 && errno != ESRCH)
			mp_die("kill %ld", c);
}

static int remove_entry(const char *path, const struct stat *sb, int type,
			struct FTW *ftw)
{
	(void)sb, (void)type, (void)ftw;
	return remove(path);
}

/* Step 5: mpirun -np N [--oversubscribe] [--hostfile F] the MPI program,
 * its lines parsed as they come.  Ctrl-C meanwhile arrives on a signalfd:
 * mpirun gets SIGTERM (it stops its ranks), then SIGKILL after 2 s.
 * Returns mpirun's wait status; exits 128 + signal after a Ctrl-C. */
static int run_mpi(long np, const char *hostfile, long tasks, long work,
		   struct mpi_figs *f)
{
	char dir[] = "/tmp/mpp-ray_comparison-XXXXXX", nt[24], nw[24], nr[24];
	char *argv[16] = { MP_MPIRUN, "-np", nr };
	int argc = 3, fd[2], sfd, st = 0, sig = 0;
	sigset_t stops;

	snprintf(nr, sizeof nr, "%ld", np);
	snprintf(nt, sizeof nt, "%ld", tasks);
	snprintf(nw, sizeof nw, "%ld", work);
	if (np > sysconf(_SC_NPROCESSORS_ONLN) && !hostfile[0])
		argv[argc++] = "--oversubscribe";  /* more ranks than cores */
	if (hostfile[0]) {
		argv[argc++] = "--hostfile";
		argv[argc++] = (char *)hostfile;
	}
	memcpy(argv + argc, (char *[]){ MP_MPI_PROGRAM, "--tasks", nt,
					"--work", nw, NULL },
	       6 * sizeof(char *));
	char cmd[512] = "";

	for (int i = 0; argv[i]; i++)
		snprintf(cmd + strlen(cmd), sizeof cmd - strlen(cmd), " %s",
			 argv[i]);
	if (geteuid() == 0)
		mp_say("parent", "5. running as root: "
		       "OMPI_ALLOW_RUN_AS_ROOT=1 and "
		       "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 are set for mpirun "
		       "only (Open MPI refuses root otherwise)");
	mp_say("parent", "5.%s, with TMPDIR a directory of our own", cmd);
	/* (Narration first: under `| head` a write may kill us with SIGPIPE;
	 * from here to the end of the step nothing is written.) */
	if (!mkdtemp(dir))
		mp_die("mkdtemp");
	MP_CHECK(sigemptyset(&stops));
	MP_CHECK(sigaddset(&stops, SIGINT));
	MP_CHECK(sigaddset(&stops, SIGTERM));
	MP_CHECK(sigprocmask(SIG_BLOCK, &stops, NULL));
	MP_CHECK(sfd = signalfd(-1, &stops, SFD_CLOEXEC));
	/* Ranks whose mpirun dies are re-parented to us, not to init. */
	MP_CHECK(prctl(PR_SET_CHILD_SUBREAPER, 1));
	MP_CHECK(pipe2(fd, O_CLOEXEC));
	pid_t pid = mp_fork();

	if (pid == 0) {
		if (setpgid(0, 0) == -1 || dup2(fd[1], 1) == -1 ||
		    setenv("TMPDIR", dir, 1) == -1 ||
		    setenv("OMPI_MCA_btl_vader_backing_directory", dir, 1) ||
		    /* The ranks' own choice (no leak check: Open MPI keeps
		     * memory to the end on purpose) would lose to an
		     * ASAN_OPTIONS from outside; this says it again. */
		    setenv("ASAN_OPTIONS", "detect_leaks=0", 1) == -1 ||
		    (geteuid() == 0 &&
		     (setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1) == -1 ||
		      setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1",
			     1) == -1)) ||
		    sigprocmask(SIG_UNBLOCK, &stops, NULL) == -1)
			mp_die("setting up mpirun");
		execv(MP_MPIRUN, argv);
		mp_die("execv %s", MP_MPIRUN);
	}
	setpgid(pid, pid);  /* (also in the child: whichever runs first) */
	MP_CHECK(close(fd[1]));
	char buf[4096];
	size_t len = 0;
	int64_t deadline = mp_now_ns() +
			   (int64_t)(12 + (double)tasks * (work + 1e4) * 1e-8) *
				   1000000000;

	bool reaped = false;
	int64_t gone = 0;

	while (mp_now_ns() < deadline) {
		struct pollfd p[2] = { { fd[0], POLLIN, 0 },
				       { sfd, POLLIN, 0 } };

		if (poll(p, 2, 100) == -1 && errno != EINTR)
			mp_die("poll");
		/* mpirun gone a second ago and still no EOF: some process
		 * (this one?) holds a write end of the pipe. */
		if (reaped && mp_now_ns() - gone > 1000000000)
			break;
		if (!reaped) {
			pid_t w = waitpid(pid, &st, WNOHANG);

			if (w == -1 && errno != EINTR)
				mp_die("waitpid mpirun");
			if ((reaped = w == pid))
				gone = mp_now_ns();
		}
		if (p[1].revents) {
			struct signalfd_siginfo si;

			if (read(sfd, &si, sizeof si) != sizeof si)
				mp_die("read signalfd");
			sig = (int)si.ssi_signo;
			break;
		}
		if (!p[0].revents)
			continue;
		ssize_t got = read(fd[0], buf + len, sizeof buf - 1 - len);

		if (got == -1 && errno == EINTR)
			continue;
		if ((f->eof = got == 0))
			break;  /* EOF: mpirun and its ranks are done */
		if (got == -1)
			mp_die("read from mpirun");
		len += (size_t)got;
		buf[len] = '\0';
		char *line = buf, *nl;

		for (; (nl = strchr(line, '\n')); line = nl + 1) {
			*nl = '\0';
			mpi_line(line, f);
		}
		len = strlen(line);
		memmove(buf, line, len + 1);
	}
	if (!f->eof && !sig)
		mp_say("parent", "5. mpirun %s, but its pipe gave no EOF: a "
		       "write end is still open somewhere", reaped ? "exited" :
		       "ran past its deadline");
	if (!reaped && (sig || !f->eof)) {  /* stop it: TERM, then KILL */
		kill(-pid, SIGTERM);
		for (int i = 0; i < 200 && !reaped; i++) {
			pid_t w = waitpid(pid, &st, WNOHANG);

			if (w == -1 && errno != EINTR)
				mp_die("waitpid mpirun");
			reaped = w == pid;
			if (!reaped)
				nanosleep(&(struct timespec){ 0, 10000000 },
					  NULL);
		}
		if (!reaped)
			kill(-pid, SIGKILL);
	}
	if (!reaped)
		st = mp_waitpid(pid);
	/* Any rank left (re-parented to us): a second, then SIGKILL. */
	for (int i = 0;; i++) {
		pid_t r = waitpid(-1, NULL, WNOHANG);

		if (r == -1 && errno == ECHILD)
			break;
		if (r == 0 && i == 100)
			kill_children();
		if (r == 0)
			nanosleep(&(struct timespec){ 0, 10000000 }, NULL);
	}
	MP_CHECK(prctl(PR_SET_CHILD_SUBREAPER, 0));
	MP_CHECK(close(fd[0]));
	MP_CHECK(nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS));
	MP_CHECK(close(sfd));
	if (sig) {
		mp_say("parent", "SIG%s: mpirun and its ranks stopped, %s "
		       "removed", sigabbrev_np(sig), dir);
		exit(128 + sig);
	}
	MP_CHECK(sigprocmask(SIG_UNBLOCK, &stops, NULL));
	return st;
}
#endif

int main(int argc, char *argv[])
{
	long tasks = 20000, work = 100, workers = 0, np = 4;
	const char *hostfile = "";
	const struct mp_opt opts[] = {
		MP_OPT_L("tasks", &tasks, 1, 1000000, "remote tasks"),
		MP_OPT_L("work", &work, 0, 1000000000,
			 "xorshift steps per task (a few ns each)"),
		MP_OPT_L("workers", &workers, 0, MP_POOL_MAX_WORKERS,
			 "pool workers, 0 = the CPUs we may run on"),
		MP_OPT_L("np", &np, 3, 64,
			 "MPI ranks: a driver, an actor, np - 2 workers"),
		MP_OPT_S("hostfile", &hostfile,
			 "Open MPI hostfile, passed to mpirun"),
	};

	mp_parse_options(argc, argv, "Ray's tasks, futures and actor on "
			 "mp_pool, and as MPI ranks.", opts,
			 sizeof opts / sizeof opts[0]);
	if (hostfile[0] && access(hostfile, R_OK) == -1) {
		fprintf(stderr, "ray_comparison: --hostfile %s: %s\n", hostfile,
			strerror(errno));
		return 2;
	}
	mp_stop_on_signals();

	/* 1. The "cluster" (a pool) and the actor (a pool of ONE worker: its
	 *    state is a global of that process, set by the initializer). */
	struct mp_pool *pool = mp_pool_create(&(struct mp_pool_options){
		.workers = (int)workers });
	struct mp_pool *actor = mp_pool_create(&(struct mp_pool_options){
		.workers = 1, .initializer = actor_init });
	struct mp_pool_async **refs = malloc(sizeof *refs * (size_t)tasks);
	uint64_t *values = malloc(sizeof *values * (size_t)tasks);

	if (!pool || !actor || !refs || !values)
		mp_die("mp_pool_create / malloc");
	mp_say("parent", "1. %d workers for tasks, 1 actor process, %ld tasks "
	       "of %ld steps", mp_pool_workers(pool), tasks, work);

	/* 2. refs = [f.remote(i) ...]; ray.get(refs): futures, then values. */
	int64_t t0 = mp_now_ns();

	for (long i = 0; i < tasks; i++) {
		struct targ a = { i, work };

		refs[i] = mp_pool_apply_async(pool, remote_f, &a, sizeof a,
					      sizeof(uint64_t), NULL, NULL);
		if (!refs[i])
			mp_die("mp_pool_apply_async");
	}
	for (long i = 0; i < tasks; i++) {
		if (mp_pool_get(refs[i], &values[i], 60.0) == -1)
			mp_die("mp_pool_get %ld", i);
		mp_pool_async_free(refs[i]);
	}
	double pool_s = mp_elapsed_s(t0);
	long exact = 0;
	struct state want = { 0, 0 }, got;

	for (long i = 0; i < tasks; i++) {
		uint64_t v = task_value(i, work);

		exact += values[i] == v;
		want.count++;
		want.sum += v;
	}
	mp_say("parent", "2. %ld futures resolved in %.1f ms, %ld exact",
	       tasks, pool_s * 1e3, exact);

	/* 3. The actor: fire-and-forget add() calls, then one state() call.
	 *    One worker runs them in submission order, as Ray does for the
	 *    calls of one caller. */
	for (long i = 0; i < tasks; i++) {
		struct mp_pool_async *h = mp_pool_apply_async(
			actor, actor_add, &values[i], sizeof values[i], 0,
			NULL, NULL);

		if (!h)
			mp_die("mp_pool_apply_async (actor)");
		mp_pool_async_free(h);
	}
	if (mp_pool_apply(actor, actor_get, NULL, 0, &got, sizeof got) == -1)
		mp_die("mp_pool_apply (actor)");
	bool actor_ok = got.count == want.count && got.sum == want.sum;

	mp_say("parent", "3. actor: count %" PRIu64 " sum %" PRIu64 " (%s); "
	       "this process's copy of the global: count %" PRIu64,
	       got.count, got.sum, actor_ok ? "exact" : "WRONG",
	       actor_state.count);

	/* 4. Latency: one blocking call at a time, median of PROBES. */
	uint64_t res[2];
	double task_us = round_trip(pool, remote_f, res);
	double actor_us = round_trip(actor, actor_get, res);

	MP_CHECK(mp_pool_close(pool));
	MP_CHECK(mp_pool_join(pool));
	mp_pool_destroy(pool);
	MP_CHECK(mp_pool_close(actor));
	MP_CHECK(mp_pool_join(actor));
	mp_pool_destroy(actor);

	/* 5. The same workload as MPI ranks, when Open MPI was found. */
	struct mpi_figs f = { 0 };
	bool mpi_ok = true;
	uint64_t checksum = 0;

	for (long i = 0; i < tasks; i++)
		checksum += values[i] * (uint64_t)(2 * i + 1);
#ifdef MP_HAVE_MPI
	int st = run_mpi(np, hostfile, tasks, work, &f);

	mpi_ok = WIFEXITED(st) && WEXITSTATUS(st) == 0 && f.lines == 4 &&
		 f.eof &&
		 f.tasks == tasks && f.once == tasks &&
		 f.checksum == checksum && f.count == want.count &&
		 f.sum == want.sum;
	mp_say("parent", "5. mpirun -np %ld: exit %d, %d ranks on %d host(s), "
	       "%lld of %ld tasks answered once, checksum %s, actor %s", np,
	       WIFEXITED(st) ? WEXITSTATUS(st) : -1, f.ranks, f.hosts, f.once,
	       tasks, f.checksum == checksum ? "exact" : "WRONG",
	       f.count == want.count && f.sum == want.sum ? "exact" : "WRONG");
#else
	mp_say("parent", "5. no MPI at configure time: install libopenmpi-dev "
	       "for the MPI half");
#endif

	/* 6. One table: measured here, and Ray's published figures. */
	printf("%-18s %10s %17s %12s\n", "engine", "tasks/s",
	       "task round trip", "actor call");
	printf("%-18s %10.0f %14.1f us %9.1f us\n", "mp_pool",
	       (double)tasks / pool_s, task_us, actor_us);
#ifdef MP_HAVE_MPI
	char name[32];

	snprintf(name, sizeof name, "MPI, %d ranks", f.ranks);
	printf("%-18s %10.0f %14.1f us %9.1f us\n", name,
	       f.secs > 0 ? (double)f.tasks / f.secs : 0, f.task_us,
	       f.actor_us);
#endif
	printf("%-18s %10.0f %14.1f us %9.1f us\n", "Ray (its figures)",
	       8050.8, 1e6 / 1046.3, 1e6 / 2050.5);

	/* 7. The verdict: every value exact in both engines, actor exact. */
	bool ok = exact == tasks && actor_ok && mpi_ok;

	printf("result: mp_pool %ld/%ld exact, actor %s; MPI %s %s\n",
	       exact, tasks, actor_ok ? "exact" : "WRONG",
	       !mpi_ok ? "WRONG" : f.lines ? "exact" : "not built",
	       ok ? "OK" : "MISMATCH");
	free(refs);
	free(values);
	return ok ? EXIT_SUCCESS : EXIT_FAILURE;
}
