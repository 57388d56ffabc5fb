/* 6_performance/memory_overhead_benchmark.c -- what a worker costs in
 * memory: RSS, PSS and USS of a forked child, a thread, a posix_spawn'ed
 * program, and what copy-on-write does when a child writes
 *
 * Python:  Process(target=f).start() with the fork, spawn or forkserver
 *          start method.  A forked child shares the parent's pages until
 *          one of them writes -- and CPython writes when it only reads an
 *          object: Py_INCREF stores the new count in the object's header
 *          (Include/object.h), so a child that walks a big list copies
 *          every page holding one of its objects; gc.collect() writes the
 *          GC header of every tracked object too.  gc.freeze() (3.7,
 *          Doc/library/gc.rst) moves objects out of the collector's reach;
 *          it stops the collector's writes, not the refcount's.  The twin
 *          memory_overhead_benchmark.py measures both.
 * C:       fork, pthread_create, posix_spawn; mmap + madvise(MADV_NOHUGEPAGE)
 *          for the parent's big buffer; getrusage(ru_minflt) for the page
 *          faults copy-on-write costs; /proc/PID/smaps_rollup for
 *            RSS  resident pages, shared ones counted in full by everyone;
 *            PSS  each shared page divided by the number of its sharers:
 *                 the sum over processes is the memory really used;
 *            USS  Private_Clean + Private_Dirty: what killing it frees.
 * Usage:   memory_overhead_benchmark [--mib N (32, 1..4096)] [--write-pct N
 *            (25, 0..100)] [--max-workers N (16, 1..64)] [--full (256 MiB,
 *            writes of 1, 10, 25, 50, 100%)] [--no-python] [--csv]
 *            [--plot [FILE.svg|png]]
 * Output:  (default build, 2 CPUs shared with other jobs; trimmed)
 *   what                     workers       RSS       PSS       USS     ns/fault
 *   fork, small parent             1       568        99        48
 *   the parent itself              0     34400     32954     32908
 *   fork, big parent               1     33336     16484        48
 *   thread (parent grows by)       1         8         8         8
 *   posix_spawn                    1      1260       142        92
 *   fork, child wrote 25%          1     33572     20605      8260         4251
 *   fork, child wrote 100%         1     33572     32889     32828         6365
 *   sum: parent + workers          1     67820     33050       136
 *   sum: parent + workers         16    567020     33812       784
 *   thread: virtual size +8196 KiB (its stack, reserved, not resident)
 *   python fork                    1     10856      4879      1704
 *   python spawn                   1     13800      8069      7416
 *   python forkserver              1     12852      6972      5528
 *   python fork child, idle           USS   1616 KiB
 *   python fork child, read           USS  11012 KiB
 *   python fork child, collect        USS   9992 KiB
 *   python fork child, frozen+collect USS   1744 KiB
 *   python fork child, frozen+read    USS  11024 KiB
 *   result: idle fork of a 32 MiB parent: USS 48 KiB; 25%: 2050 pages
 *     written, USS +8212 KiB; 100%: 8192 pages written, USS +32780 KiB; 16
 *     workers: PSS sum +762 KiB, RSS sum 553 MiB; ... OK
 *   An idle forked C worker costs 48 KiB of its own; Python's fork worker
 *   1.7 MiB, its spawn worker 7.2 MiB (a whole new interpreter).  Reading
 *   100000 small lists in a Python child copied 9.4 MiB of pages.  The
 *   sum of RSS (553 MiB for 17 processes) counts the 32 MiB once per
 *   process; the PSS sum (33 MiB) is what they use together.
 * Try this: --mib 1024 --write-pct 100 (a fork that ends up copying
 *   everything: watch free -m); comment out the madvise() and compare the
 *   fault count; ulimit -s 1024 and look at the thread's VmSize.
 */
#define _GNU_SOURCE  /* MADV_NOHUGEPAGE, environ */
#include "mp.h"

#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <spawn.h>
#include <sys/resource.h>

enum { MAXPCT = 5, MAXW = 64 };

struct mem { long rss, pss, uss; };  /* KiB */

/* What a copy-on-write child reports. */
struct shared {
	long written, minflt;  /* pages it wrote, minor faults meanwhile */
	double ns;             /* time the writes took */
	bool seen_ok;          /* every page read back as expected */
};

static struct mem smaps(pid_t pid)
{
	char path[64], line[256];
	struct mem m = { 0, 0, 0 };
	long kb;

	snprintf(path, sizeof path, "/proc/%jd/smaps_rollup", (intmax_t)pid);
	FILE *f = fopen(path, "r");

	if (!f)
		mp_die("fopen %s", path);
	while (fgets(line, sizeof line, f)) {
		sscanf(line, "Rss: %ld", &m.rss);
		sscanf(line, "Pss: %ld", &m.pss);
		if (sscanf(line, "Private_Clean: %ld", &kb) == 1 ||
		    sscanf(line, "Private_Dirty: %ld", &kb) == 1)
			m.uss += kb;
	}
	MP_CHECK(fclose(f) == EOF ? -1 : 0);
	return m;
}

/* The value page i of the buffer holds: in the parent, and after a
 * child's write. */
static uint64_t mark(size_t i, bool written)
{
	return (uint64_t)i * 2654435761u + (written ? 1 : 0);
}

/* A worker's life: one byte on `ready`, then wait until the parent closes
 * `go` (after measuring us) -- or dies, which closes it too. */
static _Noreturn void idle(int ready, int go)
{
	char c = 'r';

	while (write(ready, &c, 1) == -1)
		if (errno != EINTR)
			mp_die("write ready");
	while (read(go, &c, 1) != 0)
		if (errno != EINTR)
			mp_die("read go");
	_exit(EXIT_SUCCESS);
}

/* Wait for n ready bytes, 10 s at most.  EOF means a worker died. */
static void wait_ready(int fd, int n)
{
	int64_t end = mp_now_ns() + 10000000000;
	char buf[MAXW];

	while (n > 0) {
		struct pollfd p = { fd, POLLIN, 0 };
		int left = (int)((end - mp_now_ns()) / 1000000);
		int r = left > 0 ? poll(&p, 1, left) : 0;

		if (r == 0) {
			errno = ETIMEDOUT;
			mp_die("workers not ready after 10 s");
		}
		if (r == -1 && errno == EINTR)
			continue;
		MP_CHECK(r);
		ssize_t got = read(fd, buf, (size_t)n);

		if (got == 0) {
			errno = EPIPE;  /* every writer of the pipe is gone */
			mp_die("a worker died before it was ready");
		}
		if (got == -1 && errno != EINTR)
			mp_die("read ready");
		n -= got > 0 ? (int)got : 0;
	}
}

struct pool { int ready[2], go[2]; pid_t pid[MAXW]; int n; };

/* A copy-on-write child writes pct% of the buffer's pages (page i when
 * i % 100 < pct), counting the faults, then checks every page. */
static void write_pages(uint64_t *buf, size_t pages, size_t words, int pct,
			struct shared *sh)
{
	struct rusage r0, r1;
	int64_t t0 = mp_now_ns();

	MP_CHECK(getrusage(RUSAGE_SELF, &r0));
	for (size_t i = 0; i < pages; i++)
		if ((int)(i % 100) < pct) {
			buf[i * words] = mark(i, true);
			sh->written++;
		}
	MP_CHECK(getrusage(RUSAGE_SELF, &r1));
	sh->ns = (double)(mp_now_ns() - t0);
	sh->minflt = r1.ru_minflt - r0.ru_minflt;
	sh->seen_ok = true;
	for (size_t i = 0; i < pages; i++)
		sh->seen_ok &= buf[i * words] == mark(i, (int)(i % 100) < pct);
}

/* n forked idle workers; with sh, one that first runs write_pages(). */
static void start(struct pool *p, int n, uint64_t *buf, size_t pages,
		  size_t words, int pct, struct shared *sh)
{
	MP_CHECK(pipe2(p->ready, O_CLOEXEC));
	MP_CHECK(pipe2(p->go, O_CLOEXEC));
	p->n = n;
	for (int w = 0; w < n; w++) {
		if ((p->pid[w] = mp_fork()) != 0)
			continue;
		MP_CHECK(close(p->ready[0]));
		MP_CHECK(close(p->go[1]));
		if (sh)
			write_pages(buf, pages, words, pct, sh);
		idle(p->ready[1], p->go[0]);
	}
	MP_CHECK(close(p->ready[1]));  /* so that a dead worker gives EOF */
	MP_CHECK(close(p->go[0]));
	wait_ready(p->ready[0], n);
}

/* Let them go and reap them. */
static void finish(struct pool *p)
{
	MP_CHECK(close(p->go[1]));
	for (int w = 0; w < p->n; w++) {
		int st = mp_waitpid(p->pid[w]);

		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
			mp_die("worker %jd failed", (intmax_t)p->pid[w]);
	}
	MP_CHECK(close(p->ready[0]));
}

/* A worker that is a new program: this one, run again with --idle-child,
 * its stdin the go pipe and its stdout the ready pipe.  mp_self_exe() is
 * readlink("/proc/self/exe"), which valgrind answers with ours, not its
 * own. */
static void spawn(struct pool *p)
{
	posix_spawn_file_actions_t fa;
	char *argv[] = { "memory_overhead_benchmark", "--idle-child", NULL };
	const char *self = mp_self_exe();

	MP_CHECK(pipe2(p->ready, O_CLOEXEC));
	MP_CHECK(pipe2(p->go, O_CLOEXEC));
	MP_CHECK_PT(posix_spawn_file_actions_init(&fa));
	MP_CHECK_PT(posix_spawn_file_actions_adddup2(&fa, p->go[0], 0));
	MP_CHECK_PT(posix_spawn_file_actions_adddup2(&fa, p->ready[1], 1));
	MP_CHECK_PT(posix_spawn(&p->pid[0], self, &fa, NULL, argv, environ));
	MP_CHECK_PT(posix_spawn_file_actions_destroy(&fa));
	p->n = 1;
	MP_CHECK(close(p->ready[1]));
	MP_CHECK(close(p->go[0]));
	wait_ready(p->ready[0], 1);
}

/* A worker that is a thread: the same life, in this process. */
static void *idle_thread(void *arg)
{
	struct pool *p = arg;
	char c = 'r';

	while (write(p->ready[1], &c, 1) == -1)
		if (errno != EINTR)
			mp_die("write ready");
	while (read(p->go[0], &c, 1) != 0)
		if (errno != EINTR)
			mp_die("read go");
	return NULL;
}

static long vm_size_kib(void)
{
	char line[256];
	long kb = -1;
	FILE *f = fopen("/proc/self/status", "r");

	if (!f)
		mp_die("fopen /proc/self/status");
	while (fgets(line, sizeof line, f))
		sscanf(line, "VmSize: %ld", &kb);
	MP_CHECK(fclose(f) == EOF ? -1 : 0);
	return kb;
}

struct row { char what[32]; int workers; struct mem m; double ns; };

static void print_row(const struct row *r, bool csv)
{
	printf(csv ? "\"%s\",%d,%ld,%ld,%ld," : "%-24s %7d %9ld %9ld %9ld ",
	       r->what, r->workers, r->m.rss, r->m.pss, r->m.uss);
	if (isnan(r->ns))
		printf("\n");
	else
		printf(csv ? "%.1f\n" : "%12.0f\n", r->ns);
}

/* The Python twin's lines, see memory_overhead_benchmark.py. */
struct twin { long objects, uss[5]; bool ok, csv; };
static const char *const cow[] = { "idle", "read", "collect",
				   "frozen+collect", "frozen+read" };

static void twin_line(const char *line, void *arg)
{
	struct twin *t = arg;
	char what[32];
	long rss, pss, uss;
	unsigned long long sum;

	if (sscanf(line, "python-worker,%31[^,],%ld,%ld,%ld", what, &rss,
		   &pss, &uss) == 4) {
		if (!t->csv)
			printf("python %-17s %7d %9ld %9ld %9ld\n", what, 1,
			       rss, pss, uss);
		return;
	}
	if (sscanf(line, "python-cow,%31[^,],%ld,%llu", what, &uss, &sum) == 3)
		for (int i = 0; i < 5; i++)
			if (strcmp(what, cow[i]) == 0) {
				t->uss[i] = uss;
				/* read: sum of x[0] over 0..n-1 */
				t->ok &= sum == (strstr(what, "read") ?
					(unsigned long long)t->objects *
					(unsigned long long)(t->objects - 1) / 2
					: 0);
				if (!t->csv)
					printf("python fork child, %-14s USS "
					       "%6ld KiB\n", what, uss);
				return;
			}
	fprintf(stderr, "python: %s\n", line);
	t->ok = false;
}

int main(int argc, char *argv[])
{
	long mib = 32, pct = 25, maxw = 16;
	bool full = false, nopy = false, csv = false, plot_flag = false;
	bool idle_child = false, ok = true;
	const char *plot = mp_plot_option(&argc, argv);
	const struct mp_opt opts[] = {
		MP_OPT_L("mib", &mib, 1, 4096, "MiB the big parent holds"),
		MP_OPT_L("write-pct", &pct, 0, 100,
			 "% of those pages a child writes"),
		MP_OPT_L("max-workers", &maxw, 1, MAXW,
			 "PSS summed over 1, 2, 4 ... up to this many workers"),
		MP_OPT_F("full", &full, "the long run: --mib 256, writes of "
			 "1, 10, 25, 50 and 100%"),
		MP_OPT_F("no-python", &nopy, "skip the Python twin"),
		MP_OPT_F("csv", &csv, "print CSV only"),
		MP_OPT_F("plot", &plot_flag, "draw the sums in the terminal; "
			 "--plot FILE.svg|.png: into a file"),
		MP_OPT_F("idle-child", &idle_child, NULL),  /* posix_spawn's */
	};

	mp_parse_options(argc, argv, "RSS, PSS and USS of forked children, "
			 "a thread and a spawned program; copy-on-write.",
			 opts, sizeof opts / sizeof *opts);
	if (idle_child)
		idle(STDOUT_FILENO, STDIN_FILENO);
	mp_stop_on_signals();
	int pcts[MAXPCT] = { (int)pct, 100 }, npct = pct == 100 ? 1 : 2;

	if (full) {
		mib = 256;
		memcpy(pcts, (int[]){ 1, 10, 25, 50, 100 }, sizeof pcts);
		npct = MAXPCT;
	}
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	size_t size = (size_t)mib << 20, pages = size / page;
	size_t words = page / sizeof(uint64_t);
	long big = mib * 1024;  /* KiB */
	struct shared *sh = mp_shm_alloc(sizeof *sh);
	struct row rows[5 + MAXPCT + 7];  /* 7 sums: 1, 2, 4 ... 64 workers */
	struct pool p;
	int nr = 0;

	if (!sh)
		mp_die("mp_shm_alloc");
	if (!csv)
		mp_say("parent", "RSS, PSS, USS in KiB from /proc/PID/"
		       "smaps_rollup, each worker idle when measured: RSS "
		       "counts every page mapped, PSS splits a shared page "
		       "among its sharers, USS counts only the pages no "
		       "one else maps (Private_Clean + Private_Dirty)");

	/* 1. A fork of this small process: nearly everything is shared. */
	start(&p, 1, NULL, 0, 0, 0, NULL);
	rows[nr++] = (struct row){ "fork, small parent", 1,
				   smaps(p.pid[0]), NAN };
	finish(&p);

	/* 2. The parent takes `mib` MiB and writes every page.  4 KiB pages
	 *    (no transparent huge pages) so that copy-on-write copies one page
	 *    per write, whatever the system's THP setting. */
	uint64_t *buf = mmap(NULL, size, PROT_READ | PROT_WRITE,
			     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (buf == MAP_FAILED)
		mp_die("mmap %ld MiB", mib);
	MP_CHECK(madvise(buf, size, MADV_NOHUGEPAGE));
	for (size_t i = 0; i < pages; i++) {
		memset(&buf[i * words], 0x5a, page);
		buf[i * words] = mark(i, false);
	}
	rows[nr] = (struct row){ .workers = 0, .m = smaps(getpid()),
				 .ns = NAN };
	snprintf(rows[nr++].what, sizeof rows[0].what, "the parent itself");

	/* 3. A fork of the big parent, a thread, a new program. */
	start(&p, 1, buf, pages, words, 0, NULL);
	struct row idle_big = { "fork, big parent", 1, smaps(p.pid[0]), NAN };

	rows[nr++] = idle_big;
	finish(&p);

	struct mem before = smaps(getpid());
	long vm0 = vm_size_kib();
	pthread_t tid;

	MP_CHECK(pipe2(p.ready, O_CLOEXEC));
	MP_CHECK(pipe2(p.go, O_CLOEXEC));
	MP_CHECK_PT(pthread_create(&tid, NULL, idle_thread, &p));
	wait_ready(p.ready[0], 1);
	struct mem after = smaps(getpid());
	long vm1 = vm_size_kib();

	rows[nr++] = (struct row){ "thread (parent grows by)", 1,
		{ after.rss - before.rss, after.pss - before.pss,
		  after.uss - before.uss }, NAN };
	MP_CHECK(close(p.go[1]));
	MP_CHECK_PT(pthread_join(tid, NULL));
	MP_CHECK(close(p.go[0]));
	MP_CHECK(close(p.ready[1]));
	MP_CHECK(close(p.ready[0]));

	spawn(&p);
	rows[nr++] = (struct row){ "posix_spawn", 1, smaps(p.pid[0]), NAN };
	finish(&p);

	/* 4. Copy-on-write: a child writes pct% of the pages.  Each write to
	 *    a page still shared faults, and the kernel copies that page for
	 *    the writer: its USS grows by one page per page written. */
	bool cow_ok = true;
	long grown[MAXPCT], want[MAXPCT];

	for (int k = 0; k < npct; k++) {
		memset(sh, 0, sizeof *sh);
		start(&p, 1, buf, pages, words, pcts[k], sh);
		struct row *r = &rows[nr++];

		*r = (struct row){ "", 1, smaps(p.pid[0]),
				   sh->written ? sh->ns / sh->written : NAN };
		snprintf(r->what, sizeof r->what, "fork, child wrote %d%%",
			 pcts[k]);
		finish(&p);
		want[k] = 0;
		for (size_t i = 0; i < pages; i++)
			want[k] += (int)(i % 100) < pcts[k];
		grown[k] = r->m.uss - idle_big.m.uss;
		cow_ok &= sh->written == want[k] && sh->minflt >= want[k] &&
			  sh->seen_ok &&
			  grown[k] * 1024 >= (long)(0.95 * want[k] * page) &&
			  grown[k] * 1024 <= want[k] * (long)page + (2 << 20);
	}
	for (size_t i = 0; i < pages; i++)  /* ours never changed */
		cow_ok &= buf[i * words] == mark(i, false);

	/* 5. 1, 2, 4 ... idle children of the big parent: the sum of their
	 *    RSS counts the shared pages again for each; the sum of PSS, the
	 *    parent's included, is the memory really in use. */
	struct mp_table *t = mp_table_new("Memory of the parent and N forked "
		"workers", "MiB", "workers,sum of RSS,sum of PSS,sum of USS");
	struct mem sum[8];
	int nsum = 0, top = 1;

	if (!t)
		mp_die("mp_table_new");
	for (int n = 1; n <= maxw; n *= 2, nsum++) {
		start(&p, n, buf, pages, words, 0, NULL);
		sum[nsum] = smaps(getpid());
		for (int w = 0; w < n; w++) {
			struct mem m = smaps(p.pid[w]);

			sum[nsum].rss += m.rss;
			sum[nsum].pss += m.pss;
			sum[nsum].uss += m.uss;
		}
		finish(&p);
		top = n;
		if (mp_table_add(t, (double[]){ n, sum[nsum].rss / 1024.0,
				 sum[nsum].pss / 1024.0,
				 sum[nsum].uss / 1024.0 }) == -1)
			mp_die("mp_table_add");
		rows[nr] = (struct row){ "", n, sum[nsum], NAN };
		snprintf(rows[nr++].what, sizeof rows[0].what,
			 "sum: parent + workers");
	}
	MP_CHECK(munmap(buf, size));

	/* 6. The table (in KiB), the picture (in MiB). */
	printf(csv ? "what,workers,rss_kib,pss_kib,uss_kib,fault_ns_per_page\n"
	       : "%-24s %7s %9s %9s %9s %12s\n", "what", "workers", "RSS",
	       "PSS", "USS", "ns/fault");
	for (int i = 0; i < nr; i++)
		print_row(&rows[i], csv);
	if (!csv)
		printf("thread: virtual size +%ld KiB (its stack, reserved, "
		       "not resident)\n", vm1 - vm0);
	if (plot && mp_plot(t, plot) == -1 && errno != ENOENT)
		mp_die("plot");
	mp_table_free(t);

	/* 7. Python: its start methods, and the refcount's copy-on-write. */
	struct twin py = { .objects = full ? 1000000 : 100000, .ok = true,
			   .csv = csv };
	char objs[32];

	snprintf(objs, sizeof objs, "%ld", py.objects);
	if (!nopy && mp_python3()) {
		int st = mp_run_twin(MP_LESSON_DIR
				     "/memory_overhead_benchmark.py",
				     (char *[]){ "--objects", objs, NULL }, 120,
				     twin_line, &py);

		py.ok &= st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0;
	} else if (!csv) {
		printf("python: %s\n", nopy ? "skipped (--no-python)" :
		       "python3 was not found at configure time");
	}

	/* 8. The verdict: the shared pages are shared, a write copies exactly
	 *    the pages written, the PSS sum stays flat while the RSS sum grows
	 *    by the whole buffer per worker, a thread and a new program do not
	 *    carry the buffer -- and in Python, reading copies. */
	struct mem thr = rows[3].m, sp = rows[4].m, s1 = sum[0];
	struct mem sn = sum[nsum - 1];
	bool share_ok = idle_big.m.uss < big / 20 + 512 &&
			idle_big.m.rss >= big * 9 / 10;
	bool sum_ok = sn.pss - s1.pss < big / 2 + 512L * top &&
		      sn.rss >= (long)(top + 1) * big * 9 / 10;
	/* (Below 16 MiB, a program's own few MiB -- more under ASan -- would
	 * hide the buffer: not judged.) */
	bool other_ok = mib < 16 ||
			(thr.rss < big / 8 + 1024 && sp.rss < big / 4 + 4096);
	bool py_ok = py.ok;

	if (!nopy && mp_python3())
		py_ok &= py.uss[1] > 4 * py.uss[0] &&
			 py.uss[3] < py.uss[2] / 2 && py.uss[4] > py.uss[2] / 2;
	ok = share_ok && cow_ok && sum_ok && other_ok && py_ok;
	if (!csv) {
		printf("result: idle fork of a %ld MiB parent: USS %ld KiB; ",
		       mib, idle_big.m.uss);
		for (int k = 0; k < npct; k++)
			printf("%d%%: %ld pages written, USS +%ld KiB; ",
			       pcts[k], want[k], grown[k]);
		printf("%d workers: PSS sum +%ld KiB, RSS sum %ld MiB; thread "
		       "RSS +%ld KiB; spawn RSS %ld KiB", top, sn.pss - s1.pss,
		       sn.rss / 1024, thr.rss, sp.rss);
		if (!nopy && mp_python3())
			printf("; python read/idle USS x%.1f, frozen+collect "
			       "%ld < collect %ld KiB", (double)py.uss[1] /
			       (double)(py.uss[0] ? py.uss[0] : 1), py.uss[3],
			       py.uss[2]);
		printf(" %s\n", ok ? "OK" : "MISMATCH");
	} else if (!ok) {
		fprintf(stderr, "memory_overhead_benchmark: MISMATCH\n");
	}
	MP_CHECK(mp_shm_free(sh, sizeof *sh));
	return ok ? EXIT_SUCCESS : EXIT_FAILURE;
}
