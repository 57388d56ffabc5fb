/* 5_advanced/initializer_finalizer.c -- per-worker setup and teardown in a
 * pool, an initializer that fails, and the C exit machinery beneath
 *
 * Python:  Pool(2, initializer=open_log, initargs=(path,), maxtasksperchild=5)
 *          runs open_log once in each worker (Lib/multiprocessing/pool.py,
 *          worker()).  There is no finalizer=: people register
 *          multiprocessing.util.Finalize(None, close_log, exitpriority=10) or
 *          (3.13+) atexit.register in the initializer; both run only when a
 *          worker ends normally.  An initializer that raises kills its
 *          worker, Pool._maintain_pool starts another, and so on: map()
 *          never returns.  Before 3.13 atexit handlers did not run in forked
 *          children at all (os._exit; gh-83856, Lib/multiprocessing/
 *          popen_fork.py).
 * C:       mp_pool's .initializer and .finalizer (lib/mp_pool.h); atexit(3)
 *          vs _exit(2); a FILE buffer copied by fork(); pthread_atfork(3).
 * Usage:   initializer_finalizer [--workers N (2, 1..16)]
 *                                [--tasks N (40, 0..1000000)]
 *                                [--maxtasks N (5, 0..1000)]
 *                                [--task-us N (0, 0..100000)]
 * Output:  [parent 30203 +2.7ms] map of 40 tasks: 0;
 *                                10 workers started (8 recycled), 10 opens,
 *                                40 tasks logged, 10 finalizers,
 *                                10 workers with one open and one bye
 *          [parent 30203 +4.2ms] a pool terminated instead of joined:
 *                                2 initializers, 0 finalizers
 *          [parent 30203 +4.8ms] every initializer dies: mp_pool_create
 *                                gives ECHILD (initializer runs: 2) in 0.7 ms
 *          [parent 30203 +10.6ms] replacements die in the initializer:
 *                                 map gives ECHILD after 4 failed starts
 *                                 in 5.8 ms (Python keeps starting them)
 *          [parent 30203 +11.7ms] atexit: the parent's handler ran 0 times in
 *                                 the pool workers (they leave with _exit);
 *                                 exit() in a child ran its own 1 and
 *                                 the parent's 1; _exit() none
 *          [parent 30203 +12.9ms] a line in a FILE buffer at fork:
 *                                 printed 2 times; with fflush() before fork: 1
 *          [parent 30203 +14.3ms] pthread_atfork after one fork() and
 *                                 one posix_spawn(): prepare 1, parent 1,
 *                                 child 1
 *          [parent ...] the same in Python (initializer_finalizer.py): ...
 *          [parent 30203 +737.9ms] Python 3.11: Finalize ran in 5 of 5 workers,
 *                                  atexit in 0 (gh-83856: 3.13+);
 *                                  a failing initializer: 105 workers started
 *                                  in 0.5 s, map still waiting
 *          result: workers=10 opens=10 byes=10 tasks=40/40
 *                  bad-init=ECHILD,ECHILD atexit=1/1 stdio=2,1 atfork=111
 *                  python=ok OK
 * Try this: drop .finalizer from the options (every "bye" goes missing);
 *          --maxtasks 1 (a fresh worker, and a fresh open(), per task).
 */
#define _GNU_SOURCE
#include "mp.h"

#include <fcntl.h>
#include <poll.h>
#include <spawn.h>

struct shared {
	_Atomic int inits, finals, failing;  /* initializer runs, finalizers */
	_Atomic int fail_after;  /* inits beyond this one _exit (0: none) */
	_Atomic int atexit_child, atexit_main, atexit_own;
	_Atomic int prepare, parent, child;  /* pthread_atfork handlers */
};

static struct shared *sh;  /* set before any fork: every worker has it */
static const char *log_path;
static int log_fd = -1;    /* the per-worker resource */
static long task_us;

static void note(const char *what)
{
	char line[64];
	int n = snprintf(line, sizeof line, "%s %jd\n", what,
			 (intmax_t)getpid());

	/* One write(2) per line on an O_APPEND fd: lines never interleave. */
	if (write(log_fd, line, (size_t)n) != n)
		mp_die("write %s", log_path);
}

/* Python's initializer: open the worker's resource once, keep it in a
 * global of this worker. */
static void open_log(void *arg)
{
	int n = atomic_fetch_add(&sh->inits, 1) + 1;
	int after = atomic_load(&sh->fail_after);

	(void)arg;
	if (after && n > after)
		_exit(3);  /* it cannot return an error: it dies, as Python's */
	log_fd = open(log_path, O_WRONLY | O_APPEND | O_CLOEXEC);
	if (log_fd == -1)
		mp_die("open %s", log_path);
	note("open");
}

/* What Python's Pool lacks: runs when the worker leaves normally. */
static void close_log(void *arg)
{
	(void)arg;
	if (log_fd == -1)
		return;  /* no initializer ran here: nothing to close */
	note("bye");
	MP_CHECK(close(log_fd));
	atomic_fetch_add(&sh->finals, 1);
}

static int task(const void *arg, void *result)
{
	(void)arg;
	(void)result;
	if (log_fd == -1)
		return EBADF;  /* the initializer did not run here */
	note("task");
	if (task_us)
		nanosleep(&(struct timespec){ 0, task_us * 1000 }, NULL);
	return 0;
}

/* Count the lines of the log: "open", "task" and "bye", and the workers
 * that have exactly one open and one bye. */
static void read_log(int max, int *open_n, int *task_n, int *bye_n,
		     int *paired)
{
	FILE *f = fopen(log_path, "r");
	char what[8];
	intmax_t pid, *opens = calloc((size_t)max + 1, sizeof *opens);
	int n = 0;

	if (!f || !opens)
		mp_die("fopen %s", log_path);
	*open_n = *task_n = *bye_n = *paired = 0;
	while (fscanf(f, "%7s %jd", what, &pid) == 2) {
		if (!strcmp(what, "open") && n < max)
			opens[n++] = pid;
		*open_n += !strcmp(what, "open");
		*task_n += !strcmp(what, "task");
		if (strcmp(what, "bye"))
			continue;
		++*bye_n;
		for (int i = 0; i < n; i++)
			if (opens[i] == pid) {
				++*paired;
				opens[i] = -1;  /* one bye per open */
				break;
			}
	}
	free(opens);
	if (fclose(f) == EOF)
		mp_die("fclose");
}

/* Our directory: our log, and the twin's three (it writes them there). */
struct paths { char dir[64], log[80], twin[3][80]; };

static void remove_files(void *arg)  /* async-signal-safe: a cleanup */
{
	struct paths *p = arg;

	unlink(p->log);
	unlink(p->twin[0]);
	unlink(p->twin[1]);
	unlink(p->twin[2]);
	rmdir(p->dir);
}

static void main_atexit(void)  /* registered by main, inherited by fork */
{
	if (sh && !mp_is_main_process())
		atomic_fetch_add(&sh->atexit_child, 1);
}

static void own_atexit(void)
{
	atomic_fetch_add(&sh->atexit_own, 1);
}

/* pthread_atfork: prepare runs before fork() in the parent, the others
 * after it, one on each side. */
static void on_prepare(void)
{
	atomic_fetch_add(&sh->prepare, 1);
}

static void on_parent(void)
{
	atomic_fetch_add(&sh->parent, 1);
}

static void on_child(void)
{
	atomic_fetch_add(&sh->child, 1);
}

/* A helper prints one line into a pipe through a FILE (fully buffered, as
 * stdout is under a pipe), forks with raw fork(), and both sides fclose():
 * without a flush first the line is in both copies of the buffer. */
static int lines_printed(bool flush_first)
{
	int p[2], lines = 0;
	char buf[256];
	ssize_t n;

	MP_CHECK(pipe2(p, O_CLOEXEC));
	pid_t pid = mp_fork();

	if (pid == 0) {
		FILE *out = fdopen(p[1], "w");

		if (!out || fputs("printed once?\n", out) == EOF)
			mp_die("fdopen");
		if (flush_first && fflush(out) == EOF)
			mp_die("fflush");
		pid_t g = fork();  /* not mp_fork: that flushes stdout only */

		if (g == -1 || fclose(out) == EOF)
			mp_die("fork/fclose");
		if (g > 0 && !WIFEXITED(mp_waitpid(g)))
			mp_die("grandchild");
		_exit(0);
	}
	MP_CHECK(close(p[1]));
	for (;;) {
		struct pollfd pf = { p[0], POLLIN, 0 };

		if (poll(&pf, 1, 2000) != 1 ||
		    (n = read(p[0], buf, sizeof buf)) <= 0)
			break;
		for (ssize_t i = 0; i < n; i++)
			lines += buf[i] == '\n';
	}
	MP_CHECK(close(p[0]));
	if (!WIFEXITED(mp_waitpid(pid)))
		mp_die("helper");
	return lines;
}

struct twin { char version[16]; int workers, fin, ax, tfin, starts, ready; };

static void twin_line(const char *line, void *arg)
{
	struct twin *t = arg;

	if (sscanf(line, "python: version=%15s workers=%d finalize=%d "
		   "atexit=%d terminated_finalize=%d failing_starts=%d "
		   "ready=%d", t->version, &t->workers, &t->fin, &t->ax,
		   &t->tfin, &t->starts, &t->ready) != 7)
		mp_say("parent", "  %s", line);
}

int main(int argc, char *argv[])
{
	long workers = 2, tasks = 40, maxtasks = 5;
	const struct mp_opt opts[] = {
		MP_OPT_L("workers", &workers, 1, 16, "pool workers"),
		MP_OPT_L("tasks", &tasks, 0, 1000000, "tasks in the map"),
		MP_OPT_L("maxtasks", &maxtasks, 0, 1000,
			 "maxtasksperchild (0: never recycle)"),
		MP_OPT_L("task-us", &task_us, 0, 100000, "each task sleeps"),
	};

	mp_parse_options(argc, argv, "A pool's initializer and finalizer, "
			 "a failing initializer, atexit, stdio and fork.",
			 opts, sizeof opts / sizeof opts[0]);
	mp_stop_on_signals();

	/* 1. Shared counters, the log file, and an atexit handler that every
	 *    forked child inherits. */
	struct paths p = { .dir = "/tmp/mpp-initializer_finalizer-XXXXXX" };
	int fd;

	if (!mkdtemp(p.dir))
		mp_die("mkdtemp");
	snprintf(p.log, sizeof p.log, "%s/c.log", p.dir);
	snprintf(p.twin[0], sizeof p.twin[0], "%s/log", p.dir);
	snprintf(p.twin[1], sizeof p.twin[1], "%s/log2", p.dir);
	snprintf(p.twin[2], sizeof p.twin[2], "%s/log3", p.dir);
	MP_CHECK(mp_atcleanup(remove_files, &p));
	MP_CHECK(fd = open(p.log, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
			   0600));
	MP_CHECK(close(fd));
	log_path = p.log;
	if (!(sh = mp_shm_alloc(sizeof *sh)))
		mp_die("mp_shm_alloc");
	MP_CHECK(atexit(main_atexit) == 0 ? 0 : -1);

	/* 2. A pool whose workers open the log once each and close it in the
	 *    finalizer; maxtasksperchild recycles them, join ends the rest. */
	struct mp_pool_stats st;
	struct mp_pool *pool = mp_pool_create(&(struct mp_pool_options){
		.workers = (int)workers, .initializer = open_log,
		.finalizer = close_log, .maxtasksperchild = maxtasks });

	if (!pool)
		mp_die("mp_pool_create");
	int *items = calloc((size_t)tasks + 1, sizeof *items);

	if (!items)
		mp_die("calloc");
	struct mp_pool_async *h = mp_pool_map_async(pool, task, items,
						    (size_t)tasks,
						    sizeof *items, NULL, 0,
						    1, NULL, NULL);

	if (!h)
		mp_die("mp_pool_map_async");
	while (mp_pool_wait(h, 1.0) == -1) {  /* a long run: progress */
		if (errno != ETIMEDOUT)
			mp_die("mp_pool_wait");
		mp_pool_stats(pool, &st);
		mp_say("parent", "  %ju of %ld tasks, %ju workers so far",
		       (uintmax_t)st.tasks, tasks,
		       (uintmax_t)st.workers_started);
	}
	int map = mp_pool_get(h, NULL, 0);
	int map_err = map == -1 ? errno : 0;

	mp_pool_async_free(h);
	free(items);
	MP_CHECK(mp_pool_close(pool));
	int joined = mp_pool_join(pool);  /* -1: a worker died */

	mp_pool_stats(pool, &st);
	mp_pool_destroy(pool);
	int opens, done, byes, paired, started = (int)st.workers_started;
	/* maxtasksperchild: each worker ran at most maxtasks tasks. */
	bool recycled = maxtasks ? started >= (tasks + maxtasks - 1) / maxtasks
				 : started == workers;

	read_log(started, &opens, &done, &byes, &paired);
	bool step2 = map == 0 && joined == 0 && recycled && opens == started &&
		     byes == started &&
		     paired == started && done == tasks &&
		     atomic_load(&sh->inits) == started &&
		     atomic_load(&sh->finals) == started;

	mp_say("parent", "map of %ld tasks: %s; %d workers started (%ju "
	       "recycled), %d opens, %d tasks logged, %d finalizers, %d "
	       "workers with one open and one bye", tasks,
	       mp_errname(map_err), started, (uintmax_t)st.workers_retired,
	       opens, done, byes, paired);

	/*    terminate() (mp_pool_terminate, no join) SIGKILLs the
	 *    workers: no finalizer runs.  (Python's terminate() first sends
	 *    sentinels, so idle workers may still leave normally: a race.) */
	int inits0 = atomic_load(&sh->inits);
	int finals0 = atomic_load(&sh->finals);

	pool = mp_pool_create(&(struct mp_pool_options){
		.workers = (int)workers, .initializer = open_log,
		.finalizer = close_log });
	if (!pool)
		mp_die("mp_pool_create");
	MP_CHECK(mp_pool_terminate(pool));
	mp_pool_destroy(pool);
	int killed_inits = atomic_load(&sh->inits) - inits0;
	int killed_finals = atomic_load(&sh->finals) - finals0;

	mp_say("parent", "a pool terminated instead of joined: %d "
	       "initializers, %d finalizers", killed_inits, killed_finals);
	step2 = step2 && killed_inits == workers && killed_finals == 0;

	/* 3. An initializer that fails: at the start, and in a replacement. */
	atomic_store(&sh->fail_after, atomic_load(&sh->inits));
	int before = atomic_load(&sh->inits);
	int64_t t0 = mp_now_ns();

	errno = 0;
	pool = mp_pool_create(&(struct mp_pool_options){
		.workers = (int)workers, .initializer = open_log });
	int create_err = pool ? 0 : errno, tries1 = atomic_load(&sh->inits) -
						     before;

	mp_pool_destroy(pool);
	mp_say("parent", "every initializer dies: mp_pool_create gives %s "
	       "(initializer runs: %d) in %.1f ms", mp_errname(create_err),
	       tries1,
	       (double)(mp_now_ns() - t0) / 1e6);
	atomic_store(&sh->fail_after, atomic_load(&sh->inits) + (int)workers);
	before = atomic_load(&sh->inits);
	t0 = mp_now_ns();
	pool = mp_pool_create(&(struct mp_pool_options){
		.workers = (int)workers, .initializer = open_log,
		.finalizer = close_log, .maxtasksperchild = 1 });
	if (!pool)
		mp_die("mp_pool_create");
	int many[64] = { 0 };
	int map2 = mp_pool_map(pool, task, many, 64, sizeof many[0], NULL, 0,
			       1);
	int map2_err = map2 == -1 ? errno : 0;
	int tries2 = atomic_load(&sh->inits) - before - (int)workers;

	mp_pool_destroy(pool);
	atomic_store(&sh->fail_after, 0);
	mp_say("parent", "replacements die in the initializer: map gives %s "
	       "after %d failed starts in %.1f ms (Python keeps starting "
	       "them)", mp_errname(map2_err), tries2,
	       (double)(mp_now_ns() - t0) / 1e6);
	bool step3 = create_err == ECHILD && tries1 >= 1 &&
		     tries1 <= workers && map2_err == ECHILD && tries2 >= 1 &&
		     tries2 <= 2 * (MP_POOL_DEFAULT_RETRIES + 2) + workers;

	/* 4. Beneath: exit() runs atexit handlers (inherited ones too),
	 *    _exit() runs none -- pool workers leave with _exit. */
	int in_workers = atomic_load(&sh->atexit_child);
	pid_t pid = mp_fork();

	if (pid == 0) {
		MP_CHECK(atexit(own_atexit) == 0 ? 0 : -1);
		exit(0);
	}
	mp_waitpid(pid);
	if ((pid = mp_fork()) == 0) {
		MP_CHECK(atexit(own_atexit) == 0 ? 0 : -1);
		_exit(0);
	}
	mp_waitpid(pid);
	int own = atomic_load(&sh->atexit_own);
	int inherited = atomic_load(&sh->atexit_child) - in_workers;

	mp_say("parent", "atexit: the parent's handler ran %d times in the "
	       "pool workers (they leave with _exit); exit() in a child ran "
	       "its own %d and the parent's %d; _exit() none", in_workers,
	       own, inherited);

	/*    A stdio buffer is memory: fork copies it. */
	int twice = lines_printed(false), once = lines_printed(true);

	mp_say("parent", "a line in a FILE buffer at fork: printed %d times; "
	       "with fflush() before fork: %d", twice, once);

	/*    pthread_atfork: run around every fork() (not posix_spawn's). */
	MP_CHECK_PT(pthread_atfork(on_prepare, on_parent, on_child));
	if ((pid = mp_fork()) == 0)
		_exit(0);
	mp_waitpid(pid);
	posix_spawn_file_actions_t fa;

	MP_CHECK_PT(posix_spawn_file_actions_init(&fa));
	MP_CHECK_PT(posix_spawn_file_actions_addopen(&fa, 1, "/dev/null",
						     O_WRONLY, 0));
	MP_CHECK_PT(posix_spawn(&pid, "/bin/true", &fa, NULL,
				(char *[]){ "true", NULL }, environ));
	MP_CHECK_PT(posix_spawn_file_actions_destroy(&fa));
	mp_waitpid(pid);
	int pre = atomic_load(&sh->prepare), par = atomic_load(&sh->parent),
	    chi = atomic_load(&sh->child);

	mp_say("parent", "pthread_atfork after one fork() and one "
	       "posix_spawn(): prepare %d, parent %d, child %d", pre, par,
	       chi);
	bool step4 = in_workers == 0 && own == 1 && inherited == 1 &&
		     twice == 2 && once == 1 && pre == 1 && par == 1 &&
		     chi == 1;

	/* 5. The same in Python (the twin beside this file). */
	struct twin py = { "", -1, -1, -1, -1, -1, -1 };
	bool py_ok = true;

	if (!mp_python3()) {
		mp_say("parent", "python3 was not found at configure time: "
		       "no Python side by side");
	} else {
		mp_say("parent", "the same in Python "
		       "(initializer_finalizer.py):");
		int tst = mp_run_twin(MP_LESSON_DIR
				      "/initializer_finalizer.py",
				      (char *[]){ p.dir, NULL }, 60, twin_line,
				      &py);

		if (tst == -1)
			mp_die("python twin");
		if (tst != 0)  /* its traceback is on our stderr */
			mp_say("parent", "the twin failed: status %#x", tst);
		bool new_atexit = strcmp(py.version, "3.13") >= 0 &&
				  strlen(py.version) >= 4;  /* 3.13, 3.14.. */

		py_ok = py.workers > 0 && py.fin == py.workers &&
			py.ax == (new_atexit ? py.workers : 0) &&
			py.starts > 2 && py.ready == 0;
		mp_say("parent", "Python %s: Finalize ran in %d of %d workers, "
		       "atexit in %d (gh-83856: 3.13+); a failing initializer: "
		       "%d workers started in 0.5 s, map still waiting",
		       py.version, py.fin, py.workers, py.ax, py.starts);
	}

	/* 6. Verdict, and clean up. */
	bool ok = step2 && step3 && step4 && py_ok;

	printf("result: workers=%d opens=%d byes=%d tasks=%d/%ld "
	       "bad-init=%s,%s atexit=%d/%d stdio=%d,%d atfork=%d%d%d "
	       "python=%s %s\n", started, opens, byes, done, tasks,
	       mp_errname(create_err), mp_errname(map2_err), own, inherited,
	       twice, once, pre, par, chi,
	       py.workers == -1 ? "skipped" : py_ok ? "ok" : "BAD",
	       ok ? "OK" : "MISMATCH");
	MP_CHECK(mp_cancel_cleanup(remove_files, &p));
	remove_files(&p);
	MP_CHECK(rmdir(p.dir) == -1 && errno == ENOENT ? 0 : -1);
	struct shared *s = sh;

	sh = NULL;  /* main_atexit runs after main: nothing to count then */
	MP_CHECK(mp_shm_free(s, sizeof *s));
	return ok ? EXIT_SUCCESS : EXIT_FAILURE;
}
