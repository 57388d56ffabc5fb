/* 5_advanced/custom_context.c -- a start-method context object: fork, spawn
 * and a forkserver with a preloaded table; two contexts in one program, and
 * a lock made for one that processes of the other cannot reach
 *
 * Python:  ctx = mp.get_context("spawn"); mp.set_start_method("forkserver")
 *          (once: a second call raises RuntimeError("context has already
 *          been set"), DefaultContext in Lib/multiprocessing/context.py);
 *          mp.set_forkserver_preload([...]): modules the server imports
 *          once, for every worker it forks (forkserver.py main()).  The
 *          default, ['__main__'], has done nothing since 2013: the server
 *          never gets main_path (gh-98552; fixed by gh-126631), so each
 *          worker runs the main script again -- the twin shows it.  A
 *          server is a fresh "python -c" started at first use
 *          (ensure_running() + util.spawnv_passfds()).  ctx.Lock() is a
 *          SemLock that remembers its context (synchronize.py): made for
 *          fork it is unlinked at once, so only a forked child can reach
 *          it; otherwise it keeps a name that a spawned child opens.
 *          Python 3.12 (and 3.11.7; not Debian's 3.11.2) refuses to send a
 *          fork-made lock to a spawn or forkserver process: RuntimeError
 *          (test_mixed_startmethod in Lib/test/_test_multiprocessing.py).
 * C:       a struct context whose start() is fork(), posix_spawn() of
 *          /proc/self/exe, or a request to a server forked first, which
 *          forks the worker and gets the worker's socket by SCM_RIGHTS; an
 *          unnamed MAP_SHARED mutex vs a shm_open()ed one; USS from
 *          /proc/PID/smaps_rollup (Private_Clean + Private_Dirty).
 * Usage:   custom_context [--workers N (3, 1..50)] [--table-mib N (16, 1..256)]
 * Output:  (trimmed, long lines folded)
 *   [parent 7812 +18.5ms] 2. set_start_method(forkserver): 0; again with
 *       spawn: EBUSY (Python: RuntimeError), default: forkserver; ...
 *   [parent 7812 +34.9ms] 5.    context    start ms  USS MiB  table
 *                                          unnamed lock  named lock
 *   [parent 7812 +47.6ms]       fork           3.80     0.05  inherited
 *                                          reached       reached
 *   [parent 7812 +122.8ms]      spawn         22.61    16.09  built
 *                                          EFAULT        reached
 *   [parent 7812 +131.6ms]      forkserver     0.76     0.03  preloaded
 *                                          EFAULT        reached
 *   [python 7824]       spawn                   267.05    23.01  built
 *   [python 7824]       forkserver, preload __main__    257.34    20.95  built
 *   [python 7824]    preload ['__main__'] did nothing: ... (gh-98552)
 *   [python 7824]       forkserver, preload the table    16.84     4.91
 *                                          inherited
 *   result: set_start_method once yes, tables 9/9 right, locks 18/18 as
 *           expected, waiters woken 3/3, USS: fork and forkserver below
 *           8 MiB, spawn above 12 MiB yes, workers and server exited 0
 *           yes OK
 * Try this: --table-mib 128: spawn's start and memory grow, the others'
 *          do not.  Start the forkserver after step 4 instead of first:
 *          its workers reach fork's unnamed lock too (they copy a process
 *          that had it), and the verdict says MISMATCH.
 */
#define _GNU_SOURCE
#include "mp.h"

#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/uio.h>

enum method { FORK, SPAWN, FORKSERVER, NMETHODS };
static const char *const method_name[] = { "fork", "spawn", "forkserver" };

/* Python's BaseContext, reduced to how a process is started. */
struct context {
	enum method method;
	int server;        /* forkserver: our end of the server's socket */
	pid_t server_pid;
};

/* Python's default context: chosen once (set_start_method), then fixed. */
static const struct context *default_context;

/* A lock made for a context.  The cookie lets a worker recognise it. */
struct lockpage { uint64_t cookie; pthread_mutex_t m; };
struct lock { struct lockpage *p; char name[64]; };  /* name "": unnamed */

/* A worker's job, sent over its own socket (Python pickles the Process
 * into a pipe instead), and its reply.  No padding bytes in either. */
struct job { uint64_t cookie[2], addr, wait; char name[64]; };
struct reply { int32_t pid, inherited, table_ok, unnamed, named; };

/* The "module" a worker needs: built at start-up, or found there. */
static uint32_t *table;
static long table_mib = 16;

static uint32_t entry(uint64_t i)
{
	i = (i + 1) * 0x9e3779b97f4a7c15;
	i = (i ^ (i >> 31)) * 0xbf58476d1ce4e5b9;
	return (uint32_t)(i >> 32);
}

static void preload_table(void)
{
	size_t n = (size_t)table_mib << 18;  /* 4-byte entries */

	table = mmap(NULL, n * 4, PROT_READ | PROT_WRITE,
		     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (table == MAP_FAILED)
		mp_die("mmap table");
	for (size_t i = 0; i < n; i++)
		table[i] = entry(i);
}

static bool table_right(void)
{
	for (size_t i = 0; i < (size_t)table_mib << 18; i += 4093)
		if (table[i] != entry(i))
			return false;
	return true;
}

/* Reach the job's lock by address (unnamed) or by name.  0: it is the
 * parent's mutex (trylock says EBUSY: the parent holds it); else EFAULT
 * (nothing mapped there), EBADMSG (something else is), or an errno. */
static int probe(const struct job *j, bool by_name)
{
	struct lockpage *lp = (struct lockpage *)(uintptr_t)j->addr;
	uint64_t cookie;
	int fd, pfd[2], err = 0;

	if (by_name) {
		if ((fd = shm_open(j->name, O_RDWR, 0)) == -1)
			return errno;
		lp = mmap(NULL, sizeof *lp, PROT_READ | PROT_WRITE, MAP_SHARED,
			  fd, 0);
		err = lp == MAP_FAILED ? errno : 0;
		MP_CHECK(close(fd));
		if (err)
			return err;
	}
	/* Let the kernel read the address: write() from an unmapped one
	 * fails with EFAULT, where our own load would be a SIGSEGV. */
	MP_CHECK(pipe2(pfd, O_CLOEXEC));
	if (write(pfd[1], lp, sizeof cookie) == -1)
		err = errno;
	else
		MP_CHECK(read(pfd[0], &cookie, sizeof cookie));
	MP_CHECK(close(pfd[0]));
	MP_CHECK(close(pfd[1]));
	if (!err && cookie != j->cookie[by_name])
		err = EBADMSG;
	if (!err) {
		err = pthread_mutex_trylock(&lp->m);
		if (err == 0)
			MP_CHECK_PT(pthread_mutex_unlock(&lp->m));
		err = err == EBUSY ? 0 : err ? err : EPERM;
	}
	if (by_name)
		MP_CHECK(munmap(lp, sizeof *lp));
	return err;
}

/* Sleep on the named lock until the parent lets go of it (1.5 s at most):
 * 0 when its unlock woke us.  A mutex without PTHREAD_PROCESS_SHARED
 * would sleep and wake per process (a private futex): ETIMEDOUT. */
static int32_t wait_named(const struct job *j)
{
	struct lockpage *lp;
	struct timespec ts;
	int fd = shm_open(j->name, O_RDWR, 0), err;

	if (fd == -1)
		return errno;
	lp = mmap(NULL, sizeof *lp, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	MP_CHECK(close(fd));
	if (lp == MAP_FAILED)
		return errno;
	MP_CHECK(clock_gettime(CLOCK_REALTIME, &ts));  /* timedlock's clock */
	ts.tv_nsec += 500000000;
	ts.tv_sec += 1 + ts.tv_nsec / 1000000000;
	ts.tv_nsec %= 1000000000;
	err = pthread_mutex_timedlock(&lp->m, &ts);
	if (err == 0)
		MP_CHECK_PT(pthread_mutex_unlock(&lp->m));
	MP_CHECK(munmap(lp, sizeof *lp));
	return err;
}

/* Every worker, however started: read the job, answer, sleep on the named
 * lock until the parent lets go of it, say whether that woke us, then
 * wait for end of file (the parent has read our memory figures) and
 * leave. */
static _Noreturn void worker_main(int sock)
{
	struct reply r = { .pid = getpid(), .inherited = table != NULL };
	struct job j;
	char c;

	if (read(sock, &j, sizeof j) != sizeof j)
		mp_die("worker: no job");
	if (!table)
		preload_table();  /* a fresh image: pay for it again */
	r.table_ok = table_right();
	r.unnamed = probe(&j, false);
	r.named = probe(&j, true);
	MP_CHECK(write(sock, &r, sizeof r));
	int32_t woken = j.wait ? wait_named(&j) : 0;

	MP_CHECK(write(sock, &woken, sizeof woken));
	/* Bounded: a copy of the parent's end left open in this worker (a
	 * fork without its close) would keep the end of file from coming. */
	struct pollfd p = { sock, POLLIN, 0 };

	if (poll(&p, 1, 2000) != 1)
		_exit(EXIT_FAILURE);
	MP_CHECK(read(sock, &c, 1));
	_exit(EXIT_SUCCESS);
}

/* The forkserver: preload, say so, then fork a worker for every socket it
 * is sent (SCM_RIGHTS), answer its pid, and reap what has ended.  Unlike
 * 0_basics/process_contexts, it serves many workers at once. */
static _Noreturn void serve(int sock)
{
	union { struct cmsghdr h; char b[CMSG_SPACE(sizeof(int))]; } ctl;
	int fd, status, bad = 0;
	pid_t pid = getpid();

	preload_table();
	MP_CHECK(send(sock, &pid, sizeof pid, MSG_NOSIGNAL));  /* ready */
	for (;;) {
		struct iovec iov = { &fd, sizeof fd };
		struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1,
				      .msg_control = ctl.b,
				      .msg_controllen = sizeof ctl.b };
		ssize_t n;

		MP_CHECK(n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC));
		struct cmsghdr *c = CMSG_FIRSTHDR(&msg);

		if (n == 0 || !c || c->cmsg_type != SCM_RIGHTS)
			break;  /* end of file: the parent is done with us */
		memcpy(&fd, CMSG_DATA(c), sizeof fd);
		if ((pid = mp_fork()) == 0) {
			MP_CHECK(close(sock));
			worker_main(fd);
		}
		MP_CHECK(close(fd));
		MP_CHECK(send(sock, &pid, sizeof pid, MSG_NOSIGNAL));
		while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
			bad += status != 0;
	}
	while ((pid = wait(&status)) > 0)
		bad += status != 0;
	_exit(bad ? EXIT_FAILURE : EXIT_SUCCESS);
}

/* get_context(name): the three contexts; the forkserver's server is
 * forked the first time, which must be early (see step 1). */
static struct context *get_context(enum method m)
{
	static struct context ctx[NMETHODS];
	struct context *c = &ctx[m];
	int sv[2];

	c->method = m;
	if (m != FORKSERVER || c->server_pid)
		return c;
	MP_CHECK(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv));
	if ((c->server_pid = mp_fork()) == 0) {
		MP_CHECK(close(sv[0]));
		serve(sv[1]);
	}
	MP_CHECK(close(sv[1]));
	c->server = sv[0];
	if (recv(c->server, &(pid_t){ 0 }, sizeof(pid_t), 0) != sizeof(pid_t))
		mp_die("the forkserver did not start");
	return c;
}

/* set_start_method(): the first call wins; later ones fail, as Python's
 * do without force=True. */
static int set_start_method(enum method m)
{
	if (default_context) {
		errno = EBUSY;
		return -1;
	}
	default_context = get_context(m);
	return 0;
}

/* Start a worker in context c on socket fd (other: the parent's end).
 * Returns its pid: our child, or the server's child for forkserver. */
static pid_t start(const struct context *c, int fd, int other,
		   const char *argv0)
{
	char fdtext[16], mib[16];
	char *args[] = { (char *)argv0, "--child-fd", fdtext, "--table-mib",
			 mib, NULL };
	pid_t pid;

	union { struct cmsghdr h; char b[CMSG_SPACE(sizeof(int))]; } ctl;
	struct iovec iov = { &fd, sizeof fd };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1,
			      .msg_control = ctl.b,
			      .msg_controllen = sizeof ctl.b };
	struct cmsghdr *h;

	switch (c->method) {
	case FORK:
		if ((pid = mp_fork()) == 0) {
			MP_CHECK(close(other));  /* or our EOF never comes */
			worker_main(fd);
		}
		return pid;
	case SPAWN:  /* a fresh image; fd must survive exec */
		snprintf(fdtext, sizeof fdtext, "%d", fd);
		snprintf(mib, sizeof mib, "%ld", table_mib);
		MP_CHECK(fcntl(fd, F_SETFD, 0));
		MP_CHECK_PT(posix_spawn(&pid, mp_self_exe(), NULL, NULL,
					args, environ));
		return pid;
	default:     /* FORKSERVER: fd travels as SCM_RIGHTS */
		memset(&ctl, 0, sizeof ctl);
		h = CMSG_FIRSTHDR(&msg);
		h->cmsg_level = SOL_SOCKET;
		h->cmsg_type = SCM_RIGHTS;
		h->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(h), &fd, sizeof fd);
		MP_CHECK(sendmsg(c->server, &msg, MSG_NOSIGNAL));
		if (recv(c->server, &pid, sizeof pid, 0) != sizeof pid)
			mp_die("the forkserver went away");
		return pid;
	}
}

/* A lock made for context c: for fork an unnamed shared page (inherited,
 * or nothing); otherwise a named segment, which anyone may open. */
static void make_lock(const struct context *c, struct lock *l)
{
	pthread_mutexattr_t a;
	int fd = -1;

	l->name[0] = '\0';
	if (c->method != FORK) {
		mp_ipc_name(l->name, sizeof l->name, "lock");
		MP_CHECK(fd = shm_open(l->name, O_RDWR | O_CREAT | O_EXCL,
				       0600));
		MP_CHECK(mp_atcleanup(mp_cleanup_shm, l->name));
		MP_CHECK(ftruncate(fd, sizeof *l->p));
	}
	l->p = mmap(NULL, sizeof *l->p, PROT_READ | PROT_WRITE,
		    MAP_SHARED | (fd == -1 ? MAP_ANONYMOUS : 0), fd, 0);
	if (l->p == MAP_FAILED || (fd != -1 && close(fd) == -1))
		mp_die("mmap lock");
	l->p->cookie = (uint64_t)mp_now_ns() * 0x9e3779b97f4a7c15 ^
		       (uint64_t)getpid();
	MP_CHECK_PT(pthread_mutexattr_init(&a));
	MP_CHECK_PT(pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED));
	MP_CHECK_PT(pthread_mutex_init(&l->p->m, &a));
	MP_CHECK_PT(pthread_mutexattr_destroy(&a));
	MP_CHECK_PT(pthread_mutex_lock(&l->p->m));  /* held while we test */
}

/* Wait (1 s at most) until pid sleeps: the worker on the named lock. */
static void wait_asleep(pid_t pid)
{
	char path[64], st[512];

	snprintf(path, sizeof path, "/proc/%jd/stat", (intmax_t)pid);
	for (int t = 0; t < 1000; t++) {
		FILE *f = fopen(path, "re");
		char *e = f && fgets(st, sizeof st, f) ? strrchr(st, ')')
						       : NULL;

		if (f && fclose(f) == EOF)
			mp_die("fclose");
		if (e && e[1] == ' ' && e[2] == 'S')
			return;
		nanosleep(&(struct timespec){ 0, 1000000 }, NULL);
	}
}

/* Unique set size in KiB: the pages only this process maps. */
static long uss_kib(pid_t pid)
{
	char path[64], line[256];
	long sum = 0;
	FILE *f;

	snprintf(path, sizeof path, "/proc/%jd/smaps_rollup", (intmax_t)pid);
	if (!(f = fopen(path, "re")))
		mp_die("fopen %s", path);
	while (fgets(line, sizeof line, f))
		if (!strncmp(line, "Private_Clean:", 14) ||
		    !strncmp(line, "Private_Dirty:", 14))
			sum += strtol(line + 14, NULL, 10);
	if (fclose(f) == EOF)
		mp_die("fclose");
	return sum;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

int main(int argc, char *argv[])
{
	long workers = 3, child_fd = -2;
	const struct mp_opt opts[] = {
		MP_OPT_L("workers", &workers, 1, 50,
			 "workers started per context"),
		MP_OPT_L("table-mib", &table_mib, 1, 256,
			 "size of the table every worker needs (MiB)"),
		/* hidden: how a spawned worker learns it is one */
		MP_OPT_L("child-fd", &child_fd, -1, 1 << 20, NULL),
	};

	mp_parse_options(argc, argv, "A start-method context object: fork, "
			 "spawn, a forkserver with a preloaded table.",
			 opts, sizeof opts / sizeof opts[0]);
	if (child_fd >= 0)
		worker_main((int)child_fd);

	/* 1. The forkserver first, while this process is small, has one
	 *    thread and no table.  Python starts its server lazily, but as a
	 *    fresh interpreter (ensure_running() in forkserver.py), clean
	 *    whenever it starts; a forked server is as clean as the moment
	 *    it was forked, so that moment is now. */
	mp_stop_on_signals();
	struct context *fs = get_context(FORKSERVER);

	mp_say("parent", "1. forkserver %jd started, and preloaded a %ld MiB "
	       "table (Python: set_forkserver_preload)",
	       (intmax_t)fs->server_pid, table_mib);

	/* 2. The default context is chosen once. */
	int first = set_start_method(FORKSERVER);
	int again = set_start_method(SPAWN), again_err = errno;
	bool once = first == 0 && again == -1 && again_err == EBUSY &&
		    default_context->method == FORKSERVER;

	mp_say("parent", "2. set_start_method(forkserver): %d; again with "
	       "spawn: %s (Python: RuntimeError), default: %s; "
	       "get_context(spawn) still gives a spawn context", first,
	       mp_errname(again == -1 ? again_err : 0),
	       method_name[default_context->method]);

	/* 3. The parent loads the table too: fork's workers get this copy. */
	preload_table();
	mp_say("parent", "3. the parent built its own table: USS %.1f MiB "
	       "here, %.1f MiB in the server (USS, unique set size: the "
	       "pages only this process maps, Private_Clean + Private_Dirty "
	       "of /proc/PID/smaps_rollup)", (double)uss_kib(getpid()) / 1024,
	       (double)uss_kib(fs->server_pid) / 1024);

	/* 4. A lock made for the fork context and one made for spawn, both
	 *    held by the parent: a worker that reaches one finds it busy. */
	struct lock unnamed, named;

	make_lock(get_context(FORK), &unnamed);
	make_lock(get_context(SPAWN), &named);
	struct job job = { { unnamed.p->cookie, named.p->cookie },
			   (uint64_t)(uintptr_t)unnamed.p, 0, "" };

	snprintf(job.name, sizeof job.name, "%s", named.name);
	mp_say("parent", "4. locks: fork's unnamed at %p, spawn's named %s; "
	       "each worker tries both", (void *)unnamed.p, named.name);

	/* 5. Each context starts its workers one at a time: the time to the
	 *    first answer, and the USS while the worker waits. */
	static const int32_t inherits[NMETHODS] = { 1, 0, 1 };
	long tables = 0, locks = 0, woke = 0, mem_ok = 0, bad = 0;
	double ms[50], mib[50], half = (double)table_mib / 2;

	mp_say("parent", "5.    %-29s start ms  USS MiB  table       "
	       "unnamed lock  named lock", "context");
	for (int m = 0; m < NMETHODS; m++) {
		struct context *c = get_context(m);
		struct reply r;

		for (long i = 0; i < workers; i++) {
			int sv[2];
			int64_t t0 = mp_now_ns();

			MP_CHECK(socketpair(AF_UNIX, SOCK_SEQPACKET |
					    SOCK_CLOEXEC, 0, sv));
			pid_t pid = start(c, sv[1], sv[0], argv[0]);

			MP_CHECK(close(sv[1]));
			job.wait = i == 0;  /* the first of each: a wake-up */
			MP_CHECK(write(sv[0], &job, sizeof job));
			if (read(sv[0], &r, sizeof r) != sizeof r)
				mp_die("worker %jd sent no reply",
				       (intmax_t)pid);
			ms[i] = mp_elapsed_s(t0) * 1e3;
			mib[i] = (double)uss_kib(pid) / 1024;
			/* It sleeps on the named lock: let go, and see it
			 * wake. */
			int32_t w = -1;
			struct pollfd pw = { sv[0], POLLIN, 0 };

			if (job.wait)
				wait_asleep(pid);
			MP_CHECK_PT(pthread_mutex_unlock(&named.p->m));
			if (poll(&pw, 1, 3000) != 1 ||
			    read(sv[0], &w, sizeof w) != sizeof w)
				w = -1;
			woke += job.wait && w == 0;
			MP_CHECK_PT(pthread_mutex_lock(&named.p->m));
			MP_CHECK(close(sv[0]));  /* end of file: it leaves */
			if (m != FORKSERVER)  /* the server reaps its own */
				bad += mp_waitpid(pid) != 0;
			tables += r.table_ok && r.inherited == inherits[m];
			locks += (r.unnamed == 0) == (m == FORK);
			locks += r.named == 0;
		}
		qsort(ms, (size_t)workers, sizeof *ms, cmp_double);
		qsort(mib, (size_t)workers, sizeof *mib, cmp_double);
		mem_ok += m == SPAWN ? mib[workers / 2] > 1.5 * half
				     : mib[workers / 2] < half;
		mp_say("parent", "      %-29s %8.2f %8.2f  %-11s %-13s %s",
		       method_name[m], ms[workers / 2], mib[workers / 2],
		       !r.table_ok ? "WRONG" : !r.inherited ? "built" :
		       m == FORK ? "inherited" : "preloaded",
		       r.unnamed ? mp_errname(r.unnamed) : "reached",
		       r.named ? mp_errname(r.named) : "reached");
	}
	mp_say("parent", "   (medians of %ld workers; start times are not "
	       "judged: the machine is shared)", workers);
	mp_say("parent", "   the unnamed lock's address means nothing in a "
	       "fresh image, nor in a server forked before the lock existed; "
	       "the named one is opened by name (Python: a fork-made Lock "
	       "keeps no name, so spawn refuses it)");
	mp_say("parent", "   the first worker of each context slept on the "
	       "named lock until we let go: woken %ld of %d times (a mutex "
	       "without PTHREAD_PROCESS_SHARED sleeps per process: never)",
	       woke, NMETHODS);

	/* 6. Clean up: the locks, the named segment, the server. */
	struct lock *l[2] = { &unnamed, &named };

	for (int i = 0; i < 2; i++) {
		MP_CHECK_PT(pthread_mutex_unlock(&l[i]->p->m));
		MP_CHECK_PT(pthread_mutex_destroy(&l[i]->p->m));
		MP_CHECK(munmap(l[i]->p, sizeof *l[i]->p));
	}
	if (named.name[0]) {  /* it has one unless made for fork */
		MP_CHECK(shm_unlink(named.name));
		MP_CHECK(mp_cancel_cleanup(mp_cleanup_shm, named.name));
	}
	MP_CHECK(close(fs->server));  /* end of file: it reaps and leaves */
	int server = mp_waitpid(fs->server_pid);

	MP_CHECK(munmap(table, (size_t)table_mib << 20));

	/* 7. Python's three contexts on the same job. */
	int twin = 0;

	if (mp_python3()) {
		char w[24], t[24];

		snprintf(w, sizeof w, "%ld", workers);
		snprintf(t, sizeof t, "%ld", table_mib);
		mp_say("parent", "7. Python (MPP_TABLE_MIB=%s "
		       "custom_context.py %s):", t, w);
		MP_CHECK(setenv("MPP_TABLE_MIB", t, 1));
		twin = mp_run_twin(MP_LESSON_DIR "/custom_context.py",
				   (char *[]){ w, NULL }, 60, NULL, NULL);
		if (twin == -1)
			mp_die("python twin");
	} else {
		mp_say("parent", "7. python3 was not found at configure "
		       "time: no Python side by side");
	}

	bool ok = once && tables == NMETHODS * workers &&
		  locks == 2 * NMETHODS * workers &&
		  woke == NMETHODS && mem_ok == NMETHODS &&
		  bad == 0 && server == 0 && twin == 0;

	printf("result: set_start_method once %s, tables %ld/%ld right, locks "
	       "%ld/%ld as expected, waiters woken %ld/%ld, USS: fork and "
	       "forkserver below %.0f MiB, spawn above %.0f MiB %s, workers "
	       "and server exited 0 %s %s\n",
	       once ? "yes" : "no", tables, NMETHODS * workers, locks,
	       2 * NMETHODS * workers, woke, (long)NMETHODS, half,
	       1.5 * half,
	       mem_ok == NMETHODS ? "yes" : "no",
	       bad == 0 && server == 0 ? "yes" : "no", ok ? "OK" : "MISMATCH");
	return ok ? EXIT_SUCCESS : EXIT_FAILURE;
}
