/* 4_patterns/mapreduce_example.c -- word count as MapReduce: M mappers, a
 * shuffle through shared memory, R reducers, the top K
 *
 * Python:  with Pool() as pool:
 *              counts = sum(pool.map(count_chunk, chunks), Counter())
 *          each worker returns a Counter, pickled back whole; the parent
 *          merges them alone (mapreduce_example.py).
 * C:       mmap(PROT_READ) of the input, cut at word boundaries; M forked
 *          mappers with private hash tables; the shuffle: each mapper puts
 *          its words, partitioned by hash % R, in a MAP_SHARED |
 *          MAP_NORESERVE region; R forked reducers merge their partition and
 *          sort it; the parent merges R sorted lists into the top K.  A
 *          generated corpus lives in a memfd_create() file.  Per-mapper
 *          counters packed in one cache line vs alignas(64): false sharing.
 * A word is a maximal run of ASCII letters [A-Za-z], lower-cased; any other
 * byte separates words.
 * Usage:   mapreduce_example [--input FILE | --corpus zipf|empty|no-words|
 *            one-word] [--mb N (8): generated MiB] [--mappers M (0 = CPUs)]
 *            [--reducers R (0 = CPUs)] [--top K (10)] [--no-python] [--csv]
 * Output:  (trimmed; RelWithDebInfo, 2 cores shared with other jobs, load 9)
 *   [parent 19607 +273.7ms] 8.0 MiB: 1352465 words, 20004 distinct, counted
 *                           by one process in 0.158 s
 *   [parent 19607 +516.3ms] map: 2 mappers, 39770 (word, count) pairs
 *     shuffled; reduce: 2 reducers, 20004 distinct words; 0.243 s
 *   94521	aij
 *   55518	twyp
 *   39463	wsg
 *   engine        procs     MiB   seconds     MiB/s  vs 1 process
 *   1 process         1     8.0  0.157556      50.8        1.00x
 *   mapreduce       2x2     8.0  0.242501      33.0        0.65x
 *   python            2     8.0  1.115628       7.2        0.14x
 *   false sharing, 2 mappers adding 1 per letter to their counter: packed
 *     in one cache line 0.037 CPU s, padded to 64 bytes 0.037 CPU s (1.02x;
 *     not judged: it shows only while the mappers run at the same time, ...)
 *   result: 1352465 words, 20004 distinct, each count as counted by one
 *     process: yes, top 3 equal: yes; counters a cache line apart: yes;
 *     python equal: yes OK                                       (one line)
 * Try this: --corpus one-word --mb 1 --top 1 (one 1 MiB word: one mapper
 *   gets it all); cut the slices at size * m / M without moving to a word
 *   boundary (a word cut in two: MISMATCH); partition by something that
 *   differs between mappers (a word lands in two reducers: MISMATCH);
 *   remove alignas(64) (MISMATCH); hash text[i] instead of text[i] | 32
 *   ("The" is not "the" any more: Python disagrees, MISMATCH); --input on
 *   any text file (a README, a log, a book).
 */
#define _GNU_SOURCE /* memfd_create, qsort_r, sched_getaffinity */
#include "mp.h"

#include <fcntl.h>
#include <math.h>
#include <sched.h>
#include <stdalign.h>
#include <sys/resource.h>
#include <sys/stat.h>

enum { MAXP = 64, VOCAB = 20000 };
#define BLOCK ((size_t)1 << 20)  /* a generated corpus: 1 MiB per seed */

/* A word: where it lies in the input (mapped before any fork, so at the
 * same address in every process), how long, its hash, how often seen, and
 * its first 16 letters lower-cased: compared in place, they spare most
 * look-ups a trip to a random spot of the input (a cache miss). */
enum { KEY = 16 };
struct entry { uint64_t off, len, hash, count; unsigned char key[KEY]; };
struct table { struct entry *e; size_t cap, n; };  /* open addressing */
struct section { uint64_t at, n; };  /* entries in the shuffle region */

struct shared {
	struct section sec[MAXP][MAXP];  /* mapper m's words for reducer r */
	_Atomic uint64_t used;           /* entries taken in the region */
	uint64_t words[MAXP], out_at[MAXP], out_n[MAXP];
	_Atomic uint64_t packed[MAXP];   /* 8 counters per 64-byte line */
	struct { alignas(64) _Atomic uint64_t n; } padded[MAXP];
};

struct job {
	const unsigned char *text;
	size_t size, cut[MAXP + 1];
	int m, r;
	struct shared *sh;
	struct entry *region, *out;
};

static bool letter(unsigned char c)
{
	return (unsigned)((c | 32) - 'a') < 26;
}

static uint64_t splitmix64(uint64_t *s)
{
	uint64_t z = (*s += 0x9E3779B97F4A7C15u);

	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9u;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBu;
	return z ^ (z >> 31);
}

/* ---- the generated corpus ---------------------------------------------- */

/* Word k of the vocabulary: 2 to 9 letters, longer for rarer words. */
static size_t vocab_word(uint64_t k, char *w)
{
	uint64_t s = k, h = splitmix64(&s), l = splitmix64(&s);
	size_t n = 2 + h % 3 + (size_t)(64 - __builtin_clzll(k + 1)) / 3;

	for (size_t i = 0; i < n; i++, l /= 26)
		w[i] = (char)('a' + l % 26);
	return n;
}

/* Block b from its own seed, so the corpus does not depend on who writes
 * it.  zipf: word k with probability ~ 1/(k+1) (k = (V+1)^u - 1 for u
 * uniform), some capitalised, separated by spaces, punctuation, digits. */
static void fill_block(const char *kind, uint64_t b, unsigned char *d,
		       size_t len)
{
	uint64_t s = 0x5EED0000 + b, x;
	static const char sep[] = " ,.;:!?-()'\"0123456789\n\t";

	for (size_t i = 0; i < len;) {
		x = splitmix64(&s);
		if (kind[0] == 'o') {  /* one-word: letters only */
			d[i++] = (unsigned char)((x & 32) | ('A' + x % 26));
		} else if (kind[0] == 'n') {  /* no-words: separators, UTF-8 */
			d[i++] = x % 4 ? (unsigned char)sep[x % 24] :
					 (unsigned char)(0x80 | (x >> 8));
		} else {
			char w[24];
			double u = (double)(x >> 11) * 0x1p-53;
			uint64_t k = (uint64_t)exp(u * log(VOCAB + 1.0)) - 1;
			size_t n = vocab_word(k, w);

			w[0] ^= (x & 0x700) ? 0 : 32;  /* "The" and "the" */
			w[n++] = (x >> 12) % 8 ? ' ' : sep[(x >> 16) % 24];
			memcpy(d + i, w, n < len - i ? n : len - i);
			i += n < len - i ? n : len - i;
		}
	}
}

/* The corpus in a memfd: a file in memory, gone with its last fd. */
static int make_corpus(const char *kind, size_t size, int procs)
{
	int fd = memfd_create("mapreduce-corpus", 0);  /* no CLOEXEC: the
							  * twin reads it */
	MP_CHECK(fd);
	MP_CHECK(ftruncate(fd, (off_t)size));
	if (size == 0)
		return fd;
	unsigned char *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
				MAP_SHARED, fd, 0);

	if (p == MAP_FAILED)
		mp_die("mmap corpus");
	for (int g = 0; g < procs; g++)
		if (mp_fork() == 0) {
			for (size_t b = (size_t)g; b * BLOCK < size; b += procs)
				fill_block(kind, b, p + b * BLOCK, size -
					   b * BLOCK < BLOCK ? size - b * BLOCK
					   : BLOCK);
			_exit(EXIT_SUCCESS);
		}
	mp_wait_all();
	MP_CHECK(munmap(p, size));
	return fd;
}

/* ---- counting ---------------------------------------------------------- */

/* The slot of a word in t: its entry, or a free one.  w->key holds its
 * first letters lower-cased; the rest are compared in the input, c | 32. */
static struct entry *probe(const struct table *t, const unsigned char *text,
			   const struct entry *w)
{
	for (size_t i = w->hash & (t->cap - 1);; i = (i + 1) & (t->cap - 1)) {
		struct entry *e = &t->e[i];
		uint64_t k = KEY;

		if (e->count == 0)
			return e;
		if (e->hash != w->hash || e->len != w->len ||
		    memcmp(e->key, w->key, KEY) != 0)
			continue;
		while (k < w->len && (text[e->off + k] | 32) ==
		       (text[w->off + k] | 32))
			k++;
		if (k >= w->len)
			return e;
	}
}

/* Add w->count to the count of word w (an entry of this or another table). */
static void add(struct table *t, const unsigned char *text,
		const struct entry *w)
{
	if (2 * (t->n + 1) > t->cap) {  /* keep it half empty: grow x2 */
		size_t cap = t->cap ? 2 * t->cap : 1024;
		struct table g = { calloc(cap, sizeof *g.e), cap, t->n };

		if (!g.e)
			mp_die("calloc");
		for (size_t i = 0; i < t->cap; i++)
			if (t->e[i].count)
				*probe(&g, text, &t->e[i]) = t->e[i];
		free(t->e);
		*t = g;
	}
	struct entry *e = probe(t, text, w);

	if (e->count == 0) {
		*e = *w;
		t->n++;
	} else {
		e->count += w->count;
	}
}

/* Count the words of text[from, to) into t (FNV-1a of the lower-cased
 * letters); returns how many words. */
static uint64_t count_words(struct table *t, const unsigned char *text,
			    size_t from, size_t to)
{
	uint64_t words = 0;

	for (size_t i = from; i < to;) {
		if (!letter(text[i])) {
			i++;
			continue;
		}
		struct entry w = { .off = i, .hash = 0xCBF29CE484222325u,
				   .count = 1 };

		for (; i < to && letter(text[i]); i++) {
			if (i - w.off < KEY)
				w.key[i - w.off] = text[i] | 32;
			w.hash = (w.hash ^ (text[i] | 32)) * 0x100000001B3u;
		}
		w.len = i - w.off;
		add(t, text, &w);
		words++;
	}
	return words;
}

/* The partition: high bits of the hash (the table uses the low ones). */
static int part(uint64_t h, int r)
{
	return (int)((h >> 32) % (uint64_t)r);
}

/* Count descending, then the word ascending (lower-cased). */
static int by_rank(const void *a, const void *b, void *text)
{
	const struct entry *x = a, *y = b;
	const unsigned char *p = (const unsigned char *)text + x->off,
			    *q = (const unsigned char *)text + y->off;

	if (x->count != y->count)
		return x->count > y->count ? -1 : 1;
	for (uint64_t k = 0; k < x->len && k < y->len; k++)
		if ((p[k] | 32) != (q[k] | 32))
			return (p[k] | 32) < (q[k] | 32) ? -1 : 1;
	return (x->len > y->len) - (x->len < y->len);
}

/* The used slots of t, packed at the front of dst; how many. */
static size_t entries(const struct table *t, struct entry *dst)
{
	size_t n = 0;

	for (size_t i = 0; i < t->cap; i++)
		if (t->e[i].count)
			dst[n++] = t->e[i];
	return n;
}

/* ---- the three phases ------------------------------------------------ */

/* Map: count my slice privately, then shuffle: take room for all my words
 * in the shared region (one atomic add) and lay them out by reducer. */
static _Noreturn void mapper(const struct job *j, int m)
{
	struct table t = { 0 };
	uint64_t words = count_words(&t, j->text, j->cut[m], j->cut[m + 1]);
	uint64_t n[MAXP] = { 0 }, at = atomic_fetch_add(&j->sh->used, t.n);

	for (size_t i = 0; i < t.cap; i++)
		if (t.e[i].count)
			n[part(t.e[i].hash, j->r)]++;
	for (int r = 0; r < j->r; r++) {
		j->sh->sec[m][r] = (struct section){ at, 0 };
		at += n[r];
	}
	for (size_t i = 0; i < t.cap; i++)
		if (t.e[i].count) {
			struct section *s = &j->sh->sec[m][part(t.e[i].hash,
								 j->r)];
			j->region[s->at + s->n++] = t.e[i];
		}
	j->sh->words[m] = words;
	_exit(EXIT_SUCCESS);
}

/* Reduce: merge partition r of every mapper, then sort it by rank. */
static _Noreturn void reducer(const struct job *j, int r)
{
	struct table t = { 0 };
	struct entry *out = j->out + j->sh->out_at[r];

	for (int m = 0; m < j->m; m++)
		for (uint64_t k = 0; k < j->sh->sec[m][r].n; k++) {
			struct entry *e = &j->region[j->sh->sec[m][r].at + k];

			add(&t, j->text, e);
		}
	size_t n = entries(&t, out);

	qsort_r(out, n, sizeof *out, by_rank, (void *)j->text);
	j->sh->out_n[r] = n;
	_exit(EXIT_SUCCESS);
}

/* False sharing: each mapper counts the letters of (the first 4 MiB of)
 * its slice straight into shared memory, one atomic add a letter, into
 * packed[m] (8 counters to a cache line: every add takes the line away from
 * the other cores) or padded[m] (a line each).  Measured in CPU seconds
 * of the mappers: a core waiting for a cache line is busy, while waiting
 * for a turn on a loaded machine is not. */
static size_t letters_end(const struct job *j, int m)
{
	size_t end = j->cut[m] + ((size_t)4 << 20);

	return end < j->cut[m + 1] ? end : j->cut[m + 1];
}

static double cpu_of_children(void)
{
	struct rusage ru;

	MP_CHECK(getrusage(RUSAGE_CHILDREN, &ru));
	return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
	       (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e-6;
}

static double count_letters(const struct job *j, bool padded)
{
	for (int m = 0; m < j->m; m++)
		atomic_store(padded ? &j->sh->padded[m].n : &j->sh->packed[m],
			     0);
	double t0 = cpu_of_children();

	for (int m = 0; m < j->m; m++)
		if (mp_fork() == 0) {
			_Atomic uint64_t *c = padded ? &j->sh->padded[m].n :
						       &j->sh->packed[m];

			for (size_t i = j->cut[m]; i < letters_end(j, m); i++)
				if (letter(j->text[i]))
					atomic_fetch_add_explicit(c, 1,
						memory_order_relaxed);
			_exit(EXIT_SUCCESS);
		}
	mp_wait_all();
	return cpu_of_children() - t0;
}

/* The K best of R partitions, each sorted by rank: take the best head,
 * K times.  Returns how many (fewer when there are fewer words). */
static size_t merge_top(const struct job *j, struct entry *best, size_t k)
{
	size_t head[MAXP] = { 0 }, n = 0;
	const struct entry *out = j->out;

	for (int r, b; n < k; n++) {
		for (r = 0, b = -1; r < j->r; r++)
			if (head[r] < j->sh->out_n[r] &&
			    (b < 0 || by_rank(&out[j->sh->out_at[r] + head[r]],
					      &out[j->sh->out_at[b] + head[b]],
					      (void *)j->text) < 0))
				b = r;
		if (b < 0)
			break;
		best[n] = out[j->sh->out_at[b] + head[b]++];
	}
	return n;
}

/* Every word the reducers output has the count one process found, the
 * counts add up to its total, and no word is missing or doubled. */
static bool same_counts(const struct job *j, const struct table *ref,
			uint64_t total, uint64_t *sum)
{
	uint64_t words = 0, distinct = 0, wrong = 0;

	for (int m = 0; m < j->m; m++)
		words += j->sh->words[m];
	for (int r = 0; r < j->r; r++)
		for (uint64_t i = 0; i < j->sh->out_n[r]; i++) {
			const struct entry *e = &j->out[j->sh->out_at[r] + i];

			*sum += e->count;
			distinct++;
			wrong += ref->cap == 0 ||
				 probe(ref, j->text, e)->count != e->count;
		}
	return words == total && *sum == total && distinct == ref->n &&
	       wrong == 0;
}

/* Packed vs padded counters, best of 3 each (alternating); each count
 * checked, and the padded ones checked to sit on lines of their own. */
static bool false_sharing(const struct job *j, double fs[2])
{
	bool ok = true;

	fs[0] = fs[1] = INFINITY;
	for (int rep = 0; rep < 6; rep++) {
		double s = count_letters(j, rep % 2);

		fs[rep % 2] = s < fs[rep % 2] ? s : fs[rep % 2];
	}
	for (int m = 0; m < j->m; m++) {
		uint64_t n = 0;

		for (size_t i = j->cut[m]; i < letters_end(j, m); i++)
			n += letter(j->text[i]);
		ok &= j->sh->packed[m] == n && j->sh->padded[m].n == n &&
		      (m == 0 || (uintptr_t)&j->sh->padded[m] / 64 !=
		       (uintptr_t)&j->sh->padded[m - 1] / 64);
	}
	return ok;
}

/* ---- the Python twin, the input, the table ---------------------------- */

struct twin {
	const unsigned char *text;
	const struct entry *top;
	size_t ntop, k;
	unsigned long long total, distinct;
	double s;
	bool same;
};

/* Its summary, then its top K: count, length, first 64 letters each. */
static void twin_line(const char *line, void *arg)
{
	struct twin *t = arg;
	unsigned long long c, len;
	int at = 0;

	if (sscanf(line, "python,%*u,%lf,%llu,%llu", &t->s, &t->total,
		   &t->distinct) == 3)
		return;
	if (sscanf(line, "top,%llu,%llu,%n", &c, &len, &at) != 2 || !at) {
		fprintf(stderr, "python: %s\n", line);
		return;
	}
	const struct entry *e = t->k < t->ntop ? &t->top[t->k] : NULL;
	bool same = e && e->count == c && e->len == len;

	for (uint64_t i = 0; same && i < len && i < 64; i++)
		same = (t->text[e->off + i] | 32) ==
		       (unsigned char)line[at + i];
	t->same &= same;
	t->k++;
}

static _Noreturn void bad_input(const char *what, const char *why)
{
	fprintf(stderr, "%s: %s: %s\n", program_invocation_short_name, what,
		why);
	exit(2);
}

/* --input FILE, opened and checked: a regular file we may read.
 * O_NONBLOCK: opening a FIFO would otherwise wait for a writer. */
static int open_input(const char *path)
{
	struct stat st;
	char what[256], why[128];
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);

	snprintf(what, sizeof what, "--input %s", path);
	if (fd == -1) {
		snprintf(why, sizeof why, "cannot open it: %s (%s)",
			 mp_errname(errno), strerror(errno));
		bad_input(what, why);
	}
	MP_CHECK(fstat(fd, &st));
	if (!S_ISREG(st.st_mode))
		bad_input(what, S_ISDIR(st.st_mode) ? "is a directory" :
			  "not a regular file (a pipe or a device cannot be "
			  "mmap'ed)");
	return fd;
}

static void row(bool csv, const char *name, const char *procs, size_t size,
		double s, double s1)
{
	double mib = (double)size / (1 << 20);

	if (csv)
		printf("%s,%s,%.3f,%.6f,%.1f\n", name, procs, mib, s, mib / s);
	else
		printf("%-12s %6s %7.1f %9.6f %9.1f %11.2fx\n", name, procs,
		       mib, s, mib / s, s1 / s);
}

int main(int argc, char *argv[])
{
	const char *input = NULL, *corpus = "zipf";
	long mb = 8, nm = 0, nr = 0, k = 10;
	bool nopy = false, csv = false;
	const struct mp_opt opts[] = {
		MP_OPT_S("input", &input, "a text file to count"),
		MP_OPT_S("corpus", &corpus, "without --input: zipf, empty, "
			 "no-words or one-word"),
		MP_OPT_L("mb", &mb, 1, 4096, "MiB of generated corpus"),
		MP_OPT_L("mappers", &nm, 0, MAXP, "mappers (0 = CPUs)"),
		MP_OPT_L("reducers", &nr, 0, MAXP, "reducers (0 = CPUs)"),
		MP_OPT_L("top", &k, 0, 1000, "most frequent words to print"),
		MP_OPT_F("no-python", &nopy, "skip the Python twin"),
		MP_OPT_F("csv", &csv, "print the table as CSV only"),
	};

	mp_parse_options(argc, argv, "Word count as MapReduce: mappers, a "
			 "shuffle through shared memory, reducers, top K.",
			 opts, sizeof opts / sizeof *opts);
	if (!input && strcmp(corpus, "zipf") && strcmp(corpus, "empty") &&
	    strcmp(corpus, "no-words") && strcmp(corpus, "one-word"))
		bad_input("--corpus", "not zipf, empty, no-words or one-word");
	mp_stop_on_signals();

	/* 1. M mappers and R reducers: by default the CPUs we may run on. */
	cpu_set_t set;

	MP_CHECK(sched_getaffinity(0, sizeof set, &set));
	struct job j = { .m = (int)(nm ? nm : CPU_COUNT(&set)),
			 .r = (int)(nr ? nr : CPU_COUNT(&set)) };

	j.m = j.m < MAXP ? j.m : MAXP;
	j.r = j.r < MAXP ? j.r : MAXP;

	/* 2. The input, mapped read-only: a file, or a generated corpus. */
	struct stat st;

	if (!input && !csv)
		mp_say("parent", "generating a %s corpus of %ld MiB with %d "
		       "processes", corpus, strcmp(corpus, "empty") ? mb : 0,
		       j.m);
	int fd = input ? open_input(input) : make_corpus(corpus,
		strcmp(corpus, "empty") ? (size_t)mb << 20 : 0, j.m);

	MP_CHECK(fstat(fd, &st));
	j.size = (size_t)st.st_size;
	j.text = j.size ? mmap(NULL, j.size, PROT_READ, MAP_SHARED, fd, 0) :
			  (const unsigned char *)"";
	if (j.text == MAP_FAILED)
		mp_die("mmap %s", input ? input : "corpus");

	/* 3. One process counts it all: the reference, and the baseline. */
	int64_t t0 = mp_now_ns();
	struct table ref = { 0 };
	uint64_t total = count_words(&ref, j.text, 0, j.size);
	struct entry *all = malloc((ref.n + 1) * sizeof *all);

	if (!all)
		mp_die("malloc");
	qsort_r(all, entries(&ref, all), sizeof *all, by_rank,
		(void *)j.text);
	double s1 = mp_elapsed_s(t0);

	if (!csv)
		mp_say("parent", "%.1f MiB: %" PRIu64 " words, %zu distinct, "
		       "counted by one process in %.3f s",
		       (double)j.size / (1 << 20), total, ref.n, s1);

	/* 4. Map.  The slices end at word boundaries; the shuffle region
	 *    holds at most one word per two bytes of input: reserved, not
	 *    committed (MAP_NORESERVE), only the pages used are touched. */
	size_t cap = j.size / 2 + (size_t)j.m + 1;

	t0 = mp_now_ns();
	j.sh = mp_shm_alloc(sizeof *j.sh);
	j.region = mmap(NULL, cap * sizeof *j.region, PROT_READ | PROT_WRITE,
			MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (!j.sh || j.region == MAP_FAILED)
		mp_die("shared memory");
	for (int m = 0; m <= j.m; m++) {
		size_t c = j.size * (size_t)m / (size_t)j.m;

		c = m && c < j.cut[m - 1] ? j.cut[m - 1] : c;
		while (c > 0 && c < j.size && letter(j.text[c - 1]) &&
		       letter(j.text[c]))
			c++;
		j.cut[m] = c;
	}
	for (int m = 0; m < j.m; m++)
		if (mp_fork() == 0)
			mapper(&j, m);
	mp_wait_all();

	/* 5. Reduce: now that the partitions are known, their output region
	 *    (the sizes of a partition's inputs bound its output). */
	uint64_t pairs = 0;

	for (int r = 0; r < j.r; r++) {
		j.sh->out_at[r] = pairs;
		for (int m = 0; m < j.m; m++)
			pairs += j.sh->sec[m][r].n;
	}
	j.out = mp_shm_alloc((pairs + 1) * sizeof *j.out);
	if (!j.out)
		mp_die("mp_shm_alloc");
	for (int r = 0; r < j.r; r++)
		if (mp_fork() == 0)
			reducer(&j, r);
	mp_wait_all();

	/* 6. The top K: merge the R sorted partitions, head by head. */
	struct entry *best = malloc(((size_t)k + 1) * sizeof *best);

	if (!best)
		mp_die("malloc");
	size_t ntop = merge_top(&j, best, (size_t)k);
	double smr = mp_elapsed_s(t0);
	uint64_t distinct = 0;

	for (int r = 0; r < j.r; r++)
		distinct += j.sh->out_n[r];
	if (!csv) {
		mp_say("parent", "map: %d mappers, %" PRIu64 " (word, count) "
		       "pairs shuffled; reduce: %d reducers, %" PRIu64
		       " distinct words; %.3f s", j.m, pairs, j.r, distinct,
		       smr);
		for (size_t i = 0; i < ntop; i++) {
			printf("%" PRIu64 "\t", best[i].count);
			for (uint64_t c = 0; c < best[i].len; c++)
				putchar(j.text[best[i].off + c] | 32);
			putchar('\n');
		}
	}

	/* 7. Every word's count as the single process counted it, and the
	 *    same top K. */
	uint64_t sum = 0;
	bool counts_ok = same_counts(&j, &ref, total, &sum);
	bool top_ok = ntop == (ref.n < (size_t)k ? ref.n : (size_t)k);

	for (size_t i = 0; i < ntop && top_ok; i++)
		top_ok = by_rank(&best[i], &all[i], (void *)j.text) == 0;

	/* 8. False sharing: the same adds, counters packed or padded. */
	double fs[2];
	bool fs_ok = false_sharing(&j, fs);

	/* 9. Python: Pool.map over chunks, a Counter each, on the same file. */
	struct twin t = { j.text, best, ntop, 0, 0, 0, 0, true };
	char path[64], w[16], kk[16];
	bool py = !nopy && mp_python3();

	snprintf(path, sizeof path, "/dev/fd/%d", fd);  /* the memfd */
	snprintf(w, sizeof w, "%d", j.m);
	snprintf(kk, sizeof kk, "%ld", k);
	if (py) {
		int ws = mp_run_twin(MP_LESSON_DIR "/mapreduce_example.py",
				     (char *[]){ input ? (char *)input : path,
						 "--workers", w, "--top", kk,
						 NULL }, 600, twin_line, &t);

		t.same &= ws != -1 && WIFEXITED(ws) && WEXITSTATUS(ws) == 0 &&
			  t.total == total && t.distinct == ref.n &&
			  t.k == ntop;
	}

	/* 10. The table and the verdict. */
	char mxr[32];

	snprintf(mxr, sizeof mxr, "%dx%d", j.m, j.r);
	printf(csv ? "engine,processes,mib,seconds,mib_per_s\n" : "engine    "
	       "    procs     MiB   seconds     MiB/s  vs 1 process\n");
	row(csv, "1 process", "1", j.size, s1, s1);
	row(csv, "mapreduce", mxr, j.size, smr, s1);
	if (py && t.s > 0)
		row(csv, "python", w, j.size, t.s, s1);
	if (!csv && !py)
		printf("python: skipped (%s)\n", nopy ? "--no-python" :
		       "python3 was not found at configure time");
	if (!csv)
		printf("false sharing, %d mappers adding 1 per letter to "
		       "their counter: packed in one cache line %.3f CPU s, "
		       "padded to 64 bytes %.3f CPU s (%.2fx; not judged: it "
		       "shows only while the mappers run at the same time, "
		       "which a shared machine does not promise)\n", j.m,
		       fs[0], fs[1], fs[1] > 0.001 ? fs[0] / fs[1] : 1.0);
	bool ok = counts_ok && top_ok && fs_ok && (!py || t.same);

	if (!csv)
		printf("result: %" PRIu64 " words, %" PRIu64 " distinct, each "
		       "count as counted by one process: %s, top %zu equal: "
		       "%s; counters a cache line apart: %s; python equal: %s "
		       "%s\n", sum, distinct, counts_ok ? "yes" : "no", ntop,
		       top_ok ? "yes" : "no", fs_ok ? "yes" : "no", !py ?
		       "skipped" : t.same ? "yes" : "no", ok ? "OK" :
		       "MISMATCH");
	else if (!ok)
		fprintf(stderr, "mapreduce_example: a count was wrong\n");
	if (j.size)
		MP_CHECK(munmap((void *)j.text, j.size));
	MP_CHECK(munmap(j.region, cap * sizeof *j.region));
	MP_CHECK(mp_shm_free(j.out, (pairs + 1) * sizeof *j.out));
	MP_CHECK(mp_shm_free(j.sh, sizeof *j.sh));
	MP_CHECK(close(fd));
	free(ref.e);
	free(all);
	free(best);
	return ok ? EXIT_SUCCESS : EXIT_FAILURE;
}
