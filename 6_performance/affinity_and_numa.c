/* 6_performance/affinity_and_numa.c -- where processes run, and what a
 * cache line costs between two of them: the machine as hwloc sees it
 *
 * Python:  os.sched_setaffinity(0, {cpu}) in each worker (a wrapper of
 *          sched_setaffinity(2), Modules/posixmodule.c); CPUs are bare
 *          numbers: nothing in the stdlib says which share a core, a cache
 *          or a memory node.  multiprocessing has no affinity API; Pool()
 *          sizes itself with os.cpu_count() up to 3.12 and with
 *          os.process_cpu_count() (= len(os.sched_getaffinity(0))) from
 *          3.13 on (Lib/multiprocessing/pool.py, Lib/os.py).
 * C:       hwloc 2.x: hwloc_topology_load, the object tree (packages,
 *          caches, cores, PUs; NUMA nodes hang off as memory children),
 *          hwloc_distrib + hwloc_bitmap_singlify, hwloc_set_proc_cpubind
 *          (from the parent) and hwloc_set_cpubind (in the child),
 *          hwloc_get_proc_last_cpu_location / hwloc_get_last_cpu_location,
 *          hwloc_alloc_membind + hwloc_get_area_memlocation.
 * Why:     a round trip moves the ball's cache line twice.  SMT siblings
 *          share an L1 (fastest, where they exist); two cores of a package
 *          pass it through their shared L3 (~90 ns here); two packages or
 *          NUMA nodes through the interconnect (slower again); one PU must
 *          switch processes for every hand-over (microseconds).  Unbound,
 *          the kernel decides, and may change its mind mid-run.
 * Usage:   affinity_and_numa [--workers N (0 = one per PU)] [--rounds N
 *          (20000)] [--repeat N (3)] [--seconds X (0.25, per run)]
 *          [--mem-mib N (16)] [--no-bind] [--python-rounds N (2000)] [--csv]
 *          [--plot [FILE.svg|png]]
 * Output:  (2 cores of an AMD EPYC VM shared with other jobs; cut)
 *   [parent 14737 +3.9ms] Machine: 1 package(s), 2 cores, 2 PUs, 1 NUMA
 *     Machine L#0
 *       Package L#0 P#0 (memory: NUMANode L#0 P#0 4.6 GiB)
 *         L3 L#0 (32768 KiB)
 *           L2 L#0 (1024 KiB)
 *             L1d L#0 (48 KiB)
 *               Core L#0 P#0
 *                 PU L#0 P#0
 *   [parent 14737 +104.5ms] worker 0 (pid 14739) bound to PU P#0: cpubind
 *     that PU, seen there 5329/5329 times inside, on P#0 from outside
 *   pair                   PU a PU b   rounds  round trip ns  (min..max)
 *   same PU                   0    0    20000         2369.1  (2366..2379)
 *   SMT siblings           not present on this machine (1 PU per core)
 *   different cores           0    1    20000           87.6  (84..93)
 *   unbound                   -    -    20000           97.5  (89..104)
 *     memory bound to NUMA node P#0, local to PU P#0: pages found on
 *     nodeset 0x00000001, read 27.6 GB/s
 *     python same CPU           0    0     2000         9973.9  (exact)
 *     python two CPUs           0    1     2000          275.7  (exact)
 *   result: 2 workers on their PUs, 9 ping-pong runs exact, memory on its
 *     node 1/1, python's counts exact OK
 *   Under load (7 runnable jobs) the same rows read 3775, 2171 and 2560 ns:
 *   a spinning partner that loses its CPU costs a time slice.
 *   With --csv: side,pair,pu_a,pu_b,rounds,ns_round_trip,ns_min,ns_max.
 * Try this: --workers 5 (hwloc_distrib shares PUs out evenly); --no-bind
 *          and compare the unbound rows; run it on a two-socket machine;
 *          comment out hwloc_set_proc_cpubind() and watch the verdict.
 */
#include <hwloc.h>
#include <limits.h>
#include <sched.h>

#include "mp.h"

enum { MAXW = 64, NCASE = 6, SPIN = 100, REPMAX = 15 };
#define STOP UINT64_MAX  /* the pinger's "no more rounds" */

enum pair_case { SAME_PU, SMT, CORES, PACKAGES, NUMA, UNBOUND };
static const char *const case_name[NCASE] = {
	"same PU", "SMT siblings", "different cores",
	"different packages", "different NUMA nodes", "unbound" };

/* What a child saw of its own placement: PU os indexes, -1 unknown. */
struct seen {
	int bound_ok;        /* its cpubind read back equals the set asked */
	int first, last;     /* PU at the start and at the end */
	long samples, off;   /* workers: looks at its PU, how many elsewhere */
	long rounds;         /* ping-pong sides: rounds counted */
	double ns;           /* the pinger: ns per round trip */
};

struct shared {
	_Alignas(64) _Atomic uint64_t ball;  /* the one line that moves */
	_Alignas(64) _Atomic int ready, go;
	struct seen w[MAXW], side[2];
};

static int pu_now(hwloc_topology_t t, hwloc_bitmap_t loc, int flags)
{
	if (hwloc_get_last_cpu_location(t, loc, flags) == -1)
		mp_die("hwloc_get_last_cpu_location");
	return hwloc_bitmap_first(loc);
}

/* Wait until the ball holds want (or STOP, for the ponger).  Spin first;
 * then yield, so that two sides sharing one PU take turns.  false after 2 s
 * without the value: the partner is gone. */
static bool wait_ball(_Atomic uint64_t *ball, uint64_t want)
{
	int64_t deadline = 0;

	for (unsigned long i = 0;; i++) {
		uint64_t v = atomic_load_explicit(ball, memory_order_acquire);

		if (v == want || v == STOP)
			return v == want;
		if (i < SPIN)
			continue;
		sched_yield();
		if (i % 1024 == 0 && deadline == 0)
			deadline = mp_now_ns() + 2000000000;
		else if (i % 1024 == 0 && mp_now_ns() > deadline)
			return false;
	}
}

/* Bounded wait for a flag in shared memory (start-up only). */
static bool wait_flag(_Atomic int *f, int want)
{
	int64_t deadline = mp_now_ns() + 5000000000;

	/* Spin and yield, not sleep: the first side must not still be in
	 * nanosleep() when the pinger starts its clock. */
	while (atomic_load(f) < want && mp_now_ns() < deadline)
		sched_yield();
	return atomic_load(f) >= want;
}

/* One side of the ping-pong: bind itself to pu (NULL: unbound), then
 * pinger sends odd numbers and waits for the next even one, the ponger
 * answers; the pinger stops after rounds or max_ns.  Exit 1 on trouble. */
static _Noreturn void side(hwloc_topology_t t, struct shared *sh, int me,
			   hwloc_obj_t pu, long rounds, int64_t max_ns)
{
	struct seen *s = &sh->side[me];
	hwloc_bitmap_t loc = hwloc_bitmap_alloc();

	if (!loc)
		mp_die("hwloc_bitmap_alloc");
	if (pu && hwloc_set_cpubind(t, pu->cpuset, HWLOC_CPUBIND_PROCESS))
		mp_die("hwloc_set_cpubind");
	if (pu && hwloc_get_cpubind(t, loc, HWLOC_CPUBIND_PROCESS) == 0)
		s->bound_ok = hwloc_bitmap_isequal(loc, pu->cpuset);
	s->first = pu_now(t, loc, HWLOC_CPUBIND_THREAD);
	atomic_fetch_add(&sh->ready, 1);
	if (!wait_flag(&sh->ready, 2))
		_exit(1);
	long n = 0;
	bool ok = true;
	int64_t t0 = mp_now_ns();

	if (me == 0) {
		for (; n < rounds && ok; n++) {
			atomic_store_explicit(&sh->ball, 2 * (uint64_t)n + 1,
					      memory_order_release);
			ok = wait_ball(&sh->ball, 2 * (uint64_t)n + 2);
			if (n % 256 == 255 && mp_now_ns() - t0 > max_ns)
				rounds = n + 1;  /* out of time: stop here */
		}
		s->ns = (double)(mp_now_ns() - t0) / (double)(n ? n : 1);
		atomic_store(&sh->ball, STOP);
	} else {
		while (wait_ball(&sh->ball, 2 * (uint64_t)n + 1)) {
			atomic_store_explicit(&sh->ball, 2 * (uint64_t)n + 2,
					      memory_order_release);
			n++;
		}
		ok = atomic_load(&sh->ball) == STOP;
	}
	s->last = pu_now(t, loc, HWLOC_CPUBIND_THREAD);
	s->rounds = n;
	hwloc_bitmap_free(loc);
	_exit(ok ? 0 : 1);
}

/* One ping-pong run between PUs a and b (NULL: unbound).  Returns ns per
 * round trip; *ok stays true if both sides counted the same rounds, the
 * ball ended where it should and bound sides stayed on their PUs. */
static double ping_pong(hwloc_topology_t t, struct shared *sh, hwloc_obj_t a,
			hwloc_obj_t b, long rounds, double max_s, long *done,
			bool *ok)
{
	hwloc_obj_t pu[2] = { a, b };
	pid_t pid[2];
	bool exited = true;

	memset(sh->side, 0, sizeof sh->side);
	atomic_store(&sh->ball, 0);
	atomic_store(&sh->ready, 0);
	for (int k = 1; k >= 0; k--)  /* the ponger first */
		if ((pid[k] = mp_fork()) == 0)
			side(t, sh, k, pu[k], rounds, (int64_t)(max_s * 1e9));
	for (int k = 0; k < 2; k++) {
		int st = mp_waitpid(pid[k]);

		exited &= WIFEXITED(st) && WEXITSTATUS(st) == 0;
	}
	*done = sh->side[1].rounds;
	for (int k = 0; k < 2; k++) {
		const struct seen *s = &sh->side[k];
		int want = pu[k] ? (int)pu[k]->os_index : -1;

		*ok &= !pu[k] || (s->bound_ok && s->first == want &&
				  s->last == want);
	}
	*ok &= exited && sh->side[0].rounds == *done && *done > 0 &&
	       atomic_load(&sh->ball) == STOP;
	return sh->side[0].ns;
}

/* The tree, as lstopo draws it: normal children indented below their
 * parent, memory children (hwloc 2.x puts NUMA nodes there) on the line of
 * the object they hang off.  Big machines: the first 40 lines. */
static int print_tree(hwloc_obj_t o, int depth, int lines)
{
	char type[32], attr[96] = "", mem[160] = "";

	if (lines >= 40)
		return lines + 1;
	hwloc_obj_type_snprintf(type, sizeof type, o, 0);
	if (hwloc_obj_type_is_cache(o->type))
		snprintf(attr, sizeof attr, " (%ju KiB)",
			 (uintmax_t)o->attr->cache.size / 1024);
	for (hwloc_obj_t m = o->memory_first_child; m; m = m->next_sibling) {
		size_t k = strlen(mem);

		snprintf(mem + k, sizeof mem - k, "%sNUMANode L#%u P#%u "
			 "%.1f GiB", k ? ", " : " (memory: ", m->logical_index,
			 m->os_index, (double)m->attr->numanode.local_memory /
			 (1 << 30));
	}
	if (mem[0])
		strcat(mem, ")");
	printf("%*s%s L#%u", 2 * depth + 2, "", type, o->logical_index);
	if (o->type == HWLOC_OBJ_PU || o->type == HWLOC_OBJ_CORE ||
	    o->type == HWLOC_OBJ_PACKAGE)  /* the kernel's numbers */
		printf(" P#%u", o->os_index);
	printf("%s%s\n", attr, mem);
	for (hwloc_obj_t c = o->first_child; c; c = c->next_sibling)
		lines = print_tree(c, depth + 1, lines + 1);
	if (depth == 0 && lines >= 40)
		printf("  ... (%d more lines)\n", lines - 40);
	return lines;
}

static hwloc_obj_t first_pu(hwloc_topology_t t, hwloc_const_cpuset_t set)
{
	return hwloc_get_obj_inside_cpuset_by_type(t, set, HWLOC_OBJ_PU, 0);
}

/* Two PUs for each case, or NULL and why the machine has none. */
static void find_pairs(hwloc_topology_t t, hwloc_obj_t p[NCASE][2],
		       const char *why[NCASE])
{
	hwloc_obj_t pu0 = hwloc_get_obj_by_type(t, HWLOC_OBJ_PU, 0), o, n0 = 0;
	hwloc_obj_t core0 = hwloc_get_ancestor_obj_by_type(t, HWLOC_OBJ_CORE,
							   pu0);
	hwloc_obj_t pkg0 = hwloc_get_ancestor_obj_by_type(t, HWLOC_OBJ_PACKAGE,
							  pu0);

	memset(p, 0, sizeof(hwloc_obj_t[NCASE][2]));
	p[SAME_PU][0] = p[SAME_PU][1] = pu0;
	why[SMT] = "1 PU per core";
	why[CORES] = "1 core per package";
	why[PACKAGES] = "1 package";
	why[NUMA] = "1 NUMA node with CPUs";
	o = NULL;
	while ((o = hwloc_get_next_obj_by_type(t, HWLOC_OBJ_CORE, o))) {
		if (!p[SMT][0] && hwloc_get_nbobjs_inside_cpuset_by_type(
				  t, o->cpuset, HWLOC_OBJ_PU) >= 2) {
			p[SMT][0] = first_pu(t, o->cpuset);
			p[SMT][1] = hwloc_get_obj_inside_cpuset_by_type(
				t, o->cpuset, HWLOC_OBJ_PU, 1);
		}
		if (!p[CORES][0] && o != core0 &&
		    (!pkg0 || hwloc_obj_is_in_subtree(t, o, pkg0))) {
			p[CORES][0] = pu0;
			p[CORES][1] = first_pu(t, o->cpuset);
		}
	}
	if ((o = hwloc_get_obj_by_type(t, HWLOC_OBJ_PACKAGE, 1))) {
		p[PACKAGES][0] = pu0;
		p[PACKAGES][1] = first_pu(t, o->cpuset);
	}
	o = NULL;  /* some nodes hold memory only: skip those */
	while ((o = hwloc_get_next_obj_by_type(t, HWLOC_OBJ_NUMANODE, o)))
		if (!hwloc_bitmap_iszero(o->cpuset) && !n0) {
			n0 = o;
		} else if (!hwloc_bitmap_iszero(o->cpuset) && !p[NUMA][0] &&
			   !hwloc_bitmap_isequal(o->cpuset, n0->cpuset)) {
			p[NUMA][0] = first_pu(t, n0->cpuset);
			p[NUMA][1] = first_pu(t, o->cpuset);
		}
}

/* A worker: wait until the parent has bound it, then compute for 100 ms
 * and look where it runs every few microseconds. */
static _Noreturn void worker(hwloc_topology_t t, struct shared *sh, int i,
			     int want)
{
	struct seen *s = &sh->w[i];
	hwloc_bitmap_t loc = hwloc_bitmap_alloc();
	uint64_t x = (uint64_t)i;

	if (!loc || !wait_flag(&sh->go, 1))
		_exit(1);
	s->first = pu_now(t, loc, HWLOC_CPUBIND_THREAD);
	for (int64_t end = mp_now_ns() + 100000000; mp_now_ns() < end;) {
		for (int k = 0; k < 20000; k++)
			x = x * 6364136223846793005u + 1442695040888963407u;
		s->last = pu_now(t, loc, HWLOC_CPUBIND_THREAD);
		s->samples++;
		s->off += s->last != want;
	}
	s->rounds = (long)(x & 1);  /* keeps the arithmetic */
	hwloc_bitmap_free(loc);
	_exit(0);
}

/* hwloc_distrib splits n workers over the tree level by level, in
 * proportion to the PUs below each object: as much private cache each as
 * the machine allows, neighbours in number order (hwloc/helper.h).  With
 * more workers than PUs a set is shared.  singlify keeps one PU of each
 * set, so the kernel cannot move a worker between SMT siblings either.
 * The parent binds each child by pid, like taskset -p, and checks it from
 * outside. */
static bool place_workers(hwloc_topology_t t, struct shared *sh, int n,
			  bool bind, bool quiet)
{
	hwloc_bitmap_t set[MAXW], loc = hwloc_bitmap_alloc();
	hwloc_obj_t root = hwloc_get_root_obj(t);
	pid_t pid[MAXW];
	int outside[MAXW], good = 0;

	/* It allocates the n sets (hwloc_bitmap_dup): we free them. */
	if (!loc || hwloc_distrib(t, &root, 1, set, (unsigned)n, INT_MAX, 0))
		mp_die("hwloc_distrib");
	atomic_store(&sh->go, 0);
	for (int i = 0; i < n; i++) {
		hwloc_bitmap_singlify(set[i]);
		if ((pid[i] = mp_fork()) == 0)
			worker(t, sh, i, hwloc_bitmap_first(set[i]));
		if (bind && hwloc_set_proc_cpubind(t, pid[i], set[i],
						   HWLOC_CPUBIND_PROCESS))
			mp_die("hwloc_set_proc_cpubind(%jd)", (intmax_t)pid[i]);
		if (hwloc_get_proc_cpubind(t, pid[i], loc,
					   HWLOC_CPUBIND_PROCESS))
			mp_die("hwloc_get_proc_cpubind");
		sh->w[i].bound_ok = hwloc_bitmap_isequal(loc, set[i]);
	}
	atomic_store(&sh->go, 1);
	nanosleep(&(struct timespec){ 0, 50000000 }, NULL);  /* mid-run */
	for (int i = 0; i < n; i++)
		outside[i] = hwloc_get_proc_last_cpu_location(
				     t, pid[i], loc, HWLOC_CPUBIND_PROCESS) ?
			     -1 : hwloc_bitmap_first(loc);
	for (int i = 0; i < n; i++) {
		const struct seen *s = &sh->w[i];
		int st = mp_waitpid(pid[i]), want = hwloc_bitmap_first(set[i]);
		bool here = WIFEXITED(st) && WEXITSTATUS(st) == 0 &&
			    s->bound_ok && s->samples > 0 && s->off == 0 &&
			    outside[i] == want;

		good += here;
		if (!quiet)
			mp_say("parent", "worker %d (pid %jd) %s PU P#%d: "
			       "cpubind %s,\n  seen there %ld/%ld times "
			       "inside, on P#%d from outside",
			       i, (intmax_t)pid[i],
			       bind ? "bound to" : "unbound, distrib says",
			       want, s->bound_ok ? "that PU" : "wider",
			       s->samples - s->off, s->samples, outside[i]);
		hwloc_bitmap_free(set[i]);
	}
	hwloc_bitmap_free(loc);
	return good == n;
}

/* Memory binding: a buffer on each NUMA node (up to 4), read by this
 * process from the first PU of the first node.  The pages are placed when
 * first touched; hwloc_get_area_memlocation asks the kernel where they
 * went.  Returns how many buffers landed on the node asked for. */
static int membind(hwloc_topology_t t, size_t bytes, int *tried, bool csv)
{
	int nodes = hwloc_get_nbobjs_by_type(t, HWLOC_OBJ_NUMANODE), good = 0;
	hwloc_bitmap_t where = hwloc_bitmap_alloc(), old = hwloc_bitmap_alloc();
	hwloc_obj_t pu = first_pu(t, hwloc_topology_get_topology_cpuset(t));

	if (!where || !old ||
	    hwloc_get_cpubind(t, old, HWLOC_CPUBIND_PROCESS) ||
	    hwloc_set_cpubind(t, pu->cpuset, HWLOC_CPUBIND_PROCESS))
		mp_die("hwloc_get/set_cpubind");
	const struct hwloc_topology_support *sup =
	    hwloc_topology_get_support(t);

	/* A container may forbid mbind() (seccomp): then say so, judge
	 * nothing. */
	*tried = !sup->membind->alloc_membind ||
		 !sup->membind->get_area_memlocation ? 0 :
		 nodes < 4 ? nodes : 4;
	if (*tried == 0 && !csv)
		printf("  memory binding: not supported here, skipped\n");
	for (int k = 0; k < *tried; k++) {
		hwloc_obj_t node = hwloc_get_obj_by_type(t,
							 HWLOC_OBJ_NUMANODE, k);
		uint64_t *m = hwloc_alloc_membind(t, bytes, node->nodeset,
			HWLOC_MEMBIND_BIND, HWLOC_MEMBIND_BYNODESET |
			HWLOC_MEMBIND_STRICT);

		if (!m && (errno == ENOSYS || errno == EPERM)) {
			printf("  memory binding: %s, skipped\n",
			       strerror(errno));
			*tried = good;
			break;
		}
		if (!m)
			mp_die("hwloc_alloc_membind");
		memset(m, k + 1, bytes);  /* first touch: the pages land */
		if (hwloc_get_area_memlocation(t, m, bytes, where,
					       HWLOC_MEMBIND_BYNODESET))
			mp_die("hwloc_get_area_memlocation");
		uint64_t sum = 0,
			 want = 0x0101010101010101u * (uint64_t)(k + 1);
		int64_t best = INT64_MAX;

		for (int r = 0; r < 3; r++, sum = 0) {  /* best of 3 reads */
			int64_t t0 = mp_now_ns();

			for (size_t i = 0; i < bytes / 8; i++)
				sum += m[i];
			best =
			    mp_now_ns() - t0 < best ? mp_now_ns() - t0 : best;
			want = r ? want : want * (bytes / 8);
			if (sum != want)
				best = -1;  /* a wrong read: never "on node" */
		}
		bool on =
		    hwloc_bitmap_isequal(where, node->nodeset) && best > 0;
		char loc[64];

		good += on;
		hwloc_bitmap_snprintf(loc, sizeof loc, where);
		if (!csv)
			printf("  memory bound to NUMA node P#%u, %s to PU "
			       "P#%u: pages found on\n  nodeset %s, read %.1f "
			       "GB/s\n", node->os_index,
			       hwloc_bitmap_intersects(node->cpuset, pu->cpuset)
			       ? "local" : "remote", pu->os_index, loc,
			       (double)bytes / (double)best);
		hwloc_free(t, m, bytes);
	}
	if (!csv && nodes == 1)
		printf("  remote memory: not present on this machine (1 NUMA "
		       "node); with two, a buffer\n  bound to the other node "
		       "is read across the interconnect, a \"remote\" row.\n");
	if (hwloc_set_cpubind(t, old, HWLOC_CPUBIND_PROCESS))  /* as before */
		mp_die("hwloc_set_cpubind");
	hwloc_bitmap_free(old);
	hwloc_bitmap_free(where);
	return good;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

int main(int argc, char *argv[])
{
	long workers = 0, rounds = 20000, repeat = 3, mem_mib = 16;
	long pyrounds = 2000;
	double seconds = 0.25;
	bool nobind = false, csv = false, ok = true, plot_flag = false;
	const char *plot = mp_plot_option(&argc, argv);
	const struct mp_opt opts[] = {
		MP_OPT_L("workers", &workers, 0, MAXW,
			 "workers to place (0 = one per PU)"),
		MP_OPT_L("rounds", &rounds, 1, 100000000,
			 "ping-pong round trips per run"),
		MP_OPT_L("repeat", &repeat, 1, REPMAX,
			 "runs per pair (median)"),
		MP_OPT_D("seconds", &seconds, 0.01, 60,
			 "stop a run early after this long"),
		MP_OPT_L("mem-mib", &mem_mib, 1, 4096,
			 "MiB per memory-bound buffer"),
		MP_OPT_F("no-bind", &nobind, "bind nothing: the baseline"),
		MP_OPT_L("python-rounds", &pyrounds, 0, 1000000,
			 "round trips for the Python twin (0 skips it)"),
		MP_OPT_F("csv", &csv, "print CSV only"),
		MP_OPT_F("plot", &plot_flag, "draw the round trip of each pair "
			 "as a bar; --plot FILE.svg|.png: into a file"),
	};

	mp_parse_options(argc, argv, "Topology, binding and ping-pong "
			 "latency between PUs, with hwloc.", opts,
			 sizeof opts / sizeof *opts);
	mp_stop_on_signals();

	/* 1. The machine as hwloc sees it (from /sys, restricted to the CPUs
	 *    this process may use). */
	hwloc_topology_t t;

	if (hwloc_topology_init(&t) || hwloc_topology_load(t))
		mp_die("hwloc_topology_load");
	int npu = hwloc_get_nbobjs_by_type(t, HWLOC_OBJ_PU);

	if (!csv) {
		mp_say("parent", "Machine: %d package(s), %d cores, %d PUs, "
		       "%d NUMA node(s)",
		       hwloc_get_nbobjs_by_type(t, HWLOC_OBJ_PACKAGE),
		       hwloc_get_nbobjs_by_type(t, HWLOC_OBJ_CORE), npu,
		       hwloc_get_nbobjs_by_type(t, HWLOC_OBJ_NUMANODE));
		print_tree(hwloc_get_root_obj(t), 0, 0);
	}

	/* 2. Workers spread and bound by the parent, checked three ways. */
	struct shared *sh = mp_shm_alloc(sizeof *sh);
	int n = workers ? (int)workers : npu < MAXW ? npu : MAXW;

	if (!sh)
		mp_die("mp_shm_alloc");
	bool placed = place_workers(t, sh, n, !nobind, csv);

	ok &= placed || nobind;

	/* 3. Ping-pong through one shared cache line, pair by pair. */
	hwloc_obj_t pair[NCASE][2];
	const char *why[NCASE];
	int runs = 0, nplot = 0;
	const char *plot_name[NCASE];  /* the rows measured, for --plot */
	double plot_ns[NCASE];

	find_pairs(t, pair, why);
	printf(csv ? "side,pair,pu_a,pu_b,rounds,ns_round_trip,ns_min,ns_max\n"
		   : "%-22s %4s %4s %8s %14s  (min..max)\n", "pair", "PU a",
	       "PU b", "rounds", "round trip ns");
	for (int c = 0; c < NCASE; c++) {
		bool bound = c != UNBOUND;

		if (bound && !pair[c][0]) {
			if (!csv)
				printf("%-22s not present on this machine "
				       "(%s)\n", case_name[c], why[c]);
			continue;
		}
		if (!ok) {  /* a broken ping-pong fails fast: no more rows */
			if (!csv)
				printf("%-22s skipped after a failed check\n",
				       case_name[c]);
			continue;
		}
		if (bound && nobind) {
			if (!csv)
				printf("%-22s skipped (--no-bind)\n",
				       case_name[c]);
			continue;
		}
		double ns[REPMAX];
		long done = 0, nr = 0;
		char a[8] = "-", b[8] = "-";

		for (bool good = true; nr < repeat && good; nr++, runs++) {
			ns[nr] = ping_pong(t, sh, bound ? pair[c][0] : NULL,
					   bound ? pair[c][1] : NULL, rounds,
					   seconds, &done, &good);
			ok &= good;  /* a failed run ends the row */
		}
		qsort(ns, (size_t)nr, sizeof *ns, cmp_double);
		if (bound) {
			snprintf(a, sizeof a, "%u", pair[c][0]->os_index);
			snprintf(b, sizeof b, "%u", pair[c][1]->os_index);
		}
		printf(csv ? "c,%s,%s,%s,%ld,%.1f,%.1f,%.1f\n" :
		       "%-22s %4s %4s %8ld %14.1f  (%.0f..%.0f)\n",
		       case_name[c], a, b, done, ns[nr / 2], ns[0], ns[nr - 1]);
		plot_name[nplot] = case_name[c];
		plot_ns[nplot++] = ns[nr / 2];
	}
	if (plot && nplot > 0) {  /* one bar per pair measured */
		struct mp_table *pt = mp_table_new("ping-pong through shared "
						   "memory", "round trip ns",
						   "pair,median");

		if (!pt)
			mp_die("mp_table_new");
		pt->xnames = plot_name;
		for (int i = 0; i < nplot; i++)
			MP_CHECK(mp_table_add(pt, (double[]){ i, plot_ns[i] }));
		if (mp_plot(pt, plot) == -1 && errno != ENOENT)
			mp_die("plot");
		mp_table_free(pt);
	}

	/* 4. Memory bound to a node (not with --no-bind). */
	int tried = 0, on_node = nobind ? 0 :
		membind(t, (size_t)mem_mib << 20, &tried, csv);

	ok &= on_node == tried;
	if (nobind && !csv)
		printf("  memory binding: skipped (--no-bind)\n");

	/* 5. Python: os.sched_setaffinity, CPU numbers and nothing else. */
	bool twin = pyrounds && mp_python3(), twin_ok = true;

	if (twin) {  /* it prints its own rows, exits 1 on a wrong count */
		char r[32], sec[32];

		snprintf(r, sizeof r, "%ld", pyrounds);
		snprintf(sec, sizeof sec, "%g", seconds);
		int st = mp_run_twin(MP_LESSON_DIR "/affinity_and_numa.py",
				     (char *[]){ "--rounds", r, "--seconds",
						 sec, csv ? "--csv" : "--table",
						 nobind ? "--no-bind" : NULL,
						 NULL }, 60, NULL, NULL);

		twin_ok = st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0;
		ok &= twin_ok;
	} else if (pyrounds && !csv) {
		printf("  python: skipped (python3 was not found at configure "
		       "time)\n");
	}

	/* 6. The verdict: every bound process where it was put, every
	 *    ping-pong's two counts equal, every buffer on its node. */
	MP_CHECK(mp_shm_free(sh, sizeof *sh));
	hwloc_topology_destroy(t);
	if (csv && !ok)
		fprintf(stderr, "affinity_and_numa: a check failed\n");
	else if (!csv && nobind)
		printf("result: nothing bound (--no-bind), %d ping-pong runs "
		       "exact%s %s\n", runs, !twin ? "" : twin_ok ?
		       ", python's too" : ", python's NOT", ok ? "OK" :
		       "MISMATCH");
	else if (!csv)
		printf("result: %d workers %s, %d ping-pong runs %s, memory "
		       "on its node %d/%d%s %s\n", n, placed ? "on their PUs" :
		       "NOT where bound", runs, ok ? "exact" : "checked",
		       on_node, tried, !twin ? "" : twin_ok ?
		       ", python's counts exact" : ", python's counts WRONG",
		       ok ? "OK" : "MISMATCH");
	return ok ? EXIT_SUCCESS : EXIT_FAILURE;
}
