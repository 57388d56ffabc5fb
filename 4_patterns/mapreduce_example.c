/* 4_patterns/mapreduce_example.c -- word count as MapReduce: M mappers, a
 * shuffle through shared memory, R reducers, the top K
 *
 * Python:  with Pool() as pool:
 *              counts = sum(pool.map(count_chunk, chunks), Counter())
 *          each worker returns a Counter, pickled back whole; the parent
 *          merges them alone (mapreduce_example.py).
 * C:       mmap(PROT_READ) of the input, cut at word boundaries into 1 MiB
 *          pieces; max(M, R) forked workers.  Map: a worker takes the next
 *          piece from a shared counter (atomic_fetch_add) while any is left
 *          and counts it into a private hash table; the shuffle: it puts
 *          its words, partitioned by hash % R, in a MAP_SHARED |
 *          MAP_NORESERVE region.  A barrier (a count in shared memory and a
 *          futex on it) waits for every mapper; then worker r reduces
 *          partition r (merges the mappers' entries by their stored hash,
 *          sorts them) and the parent merges R sorted lists into the top
 *          K.  A generated corpus lives in a memfd_create() file.
 *          Per-mapper counters packed in one cache line vs alignas(64):
 *          false sharing.
 * A word is a maximal run of ASCII letters [A-Za-z], lower-cased; any other
 * byte separates words.
 * Usage:   mapreduce_example [--input FILE | --corpus zipf|empty|no-words|
 *            one-word] [--mb N (32): generated MiB] [--mappers M (0 =
 *            CPUs)] [--reducers R (0 = CPUs)] [--top K (10)] [--no-python]
 *            [--csv]
 * Output:  (trimmed; release build, 2 CPUs shared with other jobs, load 1)
 *   [parent 27767 +167.8ms] 32.0 MiB: 5408910 words, 20026 distinct,
 *     counted by one process in 0.052 s
 *   [parent 27767 +216.4ms] map: 2 mappers, 40026 (word, count) pairs
 *     shuffled; reduce: 2 reducers, 20026 distinct words; 0.046 s
 *   378608	aij
 *   221477	twyp
 *   157766	wsg
 *   engine        procs     MiB   seconds     MiB/s  vs 1 process vs python
 *   1 process         1    32.0  0.052218     612.8        1.00x    13.33x
 *   mapreduce       2x2    32.0  0.045514     703.1        1.15x    15.29x
 *   python            2    32.0  0.695835      46.0        0.08x     1.00x
 *   false sharing, 2 mappers adding 1 per letter to their counter: packed
 *     in one cache line 0.075 CPU s, padded to 64 bytes 0.039 CPU s (1.94x;
 *     not judged: it shows only while the mappers run at the same time, ...)
 *   result: 5408910 words, 20026 distinct, each count as counted by one
 *     process: yes, top 3 equal: yes; counters a cache line apart: yes;
 *     python equal: yes OK                                       (one line)
 *   With --csv: "engine,processes,mib,seconds,mib_per_s,x_1_process,
 *   x_python", the ratios from this run.  Speeds are measured, not judged.
 *   On 32 MiB the fixed costs (fork, shuffle, merge: a few ms) weigh; on
 *   100 MiB (--mb 100 --csv, release build, three runs in a row, load
 *   1.1-1.2): 1 process 677, 718, 736 MiB/s; mapreduce 2x2 1323, 1468,
 *   1418 MiB/s (1.96x, 2.04x, 1.93x); Python 65, 64, 65 MiB/s (mapreduce
 *   20x, 23x, 22x).  When another job takes a CPU, the ratios drop.
 * How it is fast: a word is found 8 bytes at a time (SWAR: which bytes are
 *          letters, from two adds and a mask), keyed by its first 16
 *          letters as two 64-bit numbers (two compares tell words apart)
 *          and hashed from them; the table is open addressing with the
 *          hash and key in the slot, so most words cost one memory access.
 *          The single process counts with the same code: it is the
 *          reference and the baseline.  Pieces, not M fixed slices: a
 *          mapper slowed by another job on its CPU takes fewer.  One
 *          process maps and reduces: no second round of fork() and exit()
 *          between the phases.  The clock stops when the parent holds the
 *          top K; the workers exit after (each exit unmaps that process's
 *          view of the input, some milliseconds for 50 MiB), and so does
 *          Python's pool (its join() is outside its clock too).
 * Try this: --corpus one-word --mb 1 --top 1 (one 1 MiB word: one mapper
 *   gets it all); in cut_at_words(), drop the loop that moves a cut off
 *   the middle of a word (a word cut in two: MISMATCH); in map(),
 *   partition by part(e[i].hash ^ (uint64_t)m << 32, ...), which differs
 *   between mappers (a word lands in two reducers: MISMATCH); remove
 *   alignas(64) (MISMATCH); in count_words(), key a short word from x
 *   instead of x | ONES * 0x20 ("The" is not "the" any more: Python
 *   disagrees, MISMATCH); kill -9 a worker (the parent sees it at once,
 *   stops the others: MISMATCH); --input on any text file (a README, a
 *   log, a book).
 */
#define _GNU_SOURCE /* memfd_create, qsort_r, sched_getaffinity */
#include "mp.h"

#include <fcntl.h>
#include <math.h>
#include <sched.h>
#include <stdalign.h>
#include <limits.h>
#include <linux/futex.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>

enum { MAXP = 64, VOCAB = 20000, EXIT_STUCK = 3 };
#define BARRIER_S 600.0  /* a reducer waits no longer for the mappers */
#define BLOCK ((size_t)1 << 20)  /* a generated corpus: 1 MiB per seed */

/* A word: its first 16 letters lower-cased as two little-endian 64-bit
 * blocks, zero-padded (most words are shorter: two compares tell two words
 * apart without a trip into the input), its hash, how often seen, where it
 * lies in the input (mapped before any fork, so at the same address in
 * every process) and how long it is. */
enum { KEY = 16 };
struct entry { uint64_t k[2], hash, count, off, len; };

/* Open addressing, linear probing: e[i].count == 0 marks a free slot; at
 * most half the slots are used.  A word is found in one memory access,
 * most of the time: its slot. */
struct table { struct entry *e; size_t cap, n; };
struct section { uint64_t at, n; };  /* entries in the shuffle region */

struct shared {
	struct section sec[MAXP][MAXP];  /* mapper m's words for reducer r */
	_Atomic uint64_t used;           /* entries taken in the region */
	_Atomic uint64_t next;           /* the next piece to map */
	uint64_t words[MAXP], out_at[MAXP], out_n[MAXP];
	_Atomic uint32_t mapped, reduced;  /* futex words: mappers done,
					      reducers done, and the parent */
	_Atomic uint32_t collected;        /* has the answer (1) */
	_Atomic uint64_t packed[MAXP];   /* 8 counters per 64-byte line */
	struct { alignas(64) _Atomic uint64_t n; } padded[MAXP];
};

struct job {
	const unsigned char *text;
	size_t size, cut[MAXP + 1];  /* slice m: [cut[m], cut[m + 1]) */
	size_t *piece, npieces;      /* the same cut in 1 MiB pieces */
	cpu_set_t cpus;              /* where we may run */
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

/* Eight bytes at a time (SWAR: SIMD within a register).  The blocks of a
 * word are read little-endian, so its first letter is the low byte. */
#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the 8-byte word scanner assumes a little-endian CPU"
#endif
#define ONES UINT64_C(0x0101010101010101)
#define HIGH (ONES * 0x80)

static uint64_t load8(const unsigned char *p)
{
	uint64_t x;

	memcpy(&x, p, 8);  /* one unaligned load */
	return x;
}

/* 0x80 in each byte of x that is an ASCII letter, 0 in the others.  With
 * bit 5 set (lower case) and bit 7 cleared, a byte t is a letter if
 * 'a' <= t <= 'z': t + (0x80 - 'a') has bit 7 set exactly when t >= 'a',
 * t + (0x80 - 'z' - 1) exactly when t > 'z', and no byte carries into the
 * next.  A byte with bit 7 set (UTF-8) is no letter. */
static uint64_t letters8(uint64_t x)
{
	uint64_t t = (x | ONES * 0x20) & ONES * 0x7F;

	return (t + ONES * (0x80 - 'a')) & ~(t + ONES * (0x80 - 'z' - 1)) &
	       ~x & HIGH;
}

/* The low n bytes of x (n < 8). */
static uint64_t low_bytes(uint64_t x, unsigned n)
{
	return x & ((UINT64_C(1) << (8 * n)) - 1);
}

/* The hash of a word from its 8-letter blocks: the first two are k[0] and
 * k[1]; rest folds in any beyond (words longer than 16 letters).  The last
 * steps (xor-shift, multiply, xor-shift) spread every letter over all 64
 * bits: the table indexes by the low bits, the partition takes the high. */
static uint64_t hash_blocks(uint64_t k0, uint64_t k1, uint64_t rest)
{
	uint64_t h = k0 * UINT64_C(0x9E3779B97F4A7C15) +
		     k1 * UINT64_C(0xC2B2AE3D27D4EB4F) + rest;

	h ^= h >> 32;
	h *= UINT64_C(0xD6E8FEB86659FD93);
	return h ^ (h >> 32);
}

/* The same, letter by letter, for any word: the slow path (a word near the
 * end of the input, or longer than 16 letters). */
static void key_of(const unsigned char *text, struct entry *w)
{
	uint64_t rest = 0;

	w->k[0] = w->k[1] = 0;
	for (uint64_t j = 0; j < w->len; j += 8) {
		uint64_t b = 0;

		for (unsigned n = 0; n < 8 && j + n < w->len; n++)
			b |= (uint64_t)(text[w->off + j + n] | 32) << (8 * n);
		if (j < KEY)
			w->k[j / 8] = b;
		else
			rest = (rest ^ b) * UINT64_C(0xFF51AFD7ED558CCD);
	}
	w->hash = hash_blocks(w->k[0], w->k[1], rest);
}

static bool same_word(const unsigned char *text, const struct entry *e,
		      const struct entry *w)
{
	if (e->hash != w->hash || e->k[0] != w->k[0] || e->k[1] != w->k[1] ||
	    e->len != w->len)
		return false;
	for (uint64_t k = KEY; k < w->len; k++)  /* past 16 letters */
		if ((text[e->off + k] | 32) != (text[w->off + k] | 32))
			return false;
	return true;
}

/* Word w's entry in t, or NULL and in *at the free slot it would take. */
static struct entry *find(const struct table *t, const unsigned char *text,
			  const struct entry *w, size_t *at)
{
	for (size_t i = w->hash & (t->cap - 1);; i = (i + 1) & (t->cap - 1)) {
		if (t->e[i].count == 0) {
			*at = i;
			return NULL;
		}
		if (same_word(text, &t->e[i], w))
			return &t->e[i];
	}
}

/* Twice the slots (at least `least`), each word put back where its hash
 * says (none is compared: they all differ). */
static void grow(struct table *t, size_t least)
{
	size_t cap = t->cap ? 2 * t->cap : 1024;

	while (cap < least)
		cap *= 2;
	struct entry *e = calloc(cap, sizeof *e);

	if (!e)
		mp_die("calloc");
	for (size_t k = 0; k < t->cap; k++)
		if (t->e[k].count) {
			size_t i = t->e[k].hash & (cap - 1);

			while (e[i].count)
				i = (i + 1) & (cap - 1);
			e[i] = t->e[k];
		}
	free(t->e);
	t->e = e;
	t->cap = cap;
}

/* Add w->count to the count of word w (an entry of this or another table). */
static void add(struct table *t, const unsigned char *text,
		const struct entry *w)
{
	size_t at;
	struct entry *e = t->cap ? find(t, text, w, &at) : NULL;

	if (e) {
		e->count += w->count;
		return;
	}
	if (2 * (t->n + 1) > t->cap) {
		grow(t, 0);
		find(t, text, w, &at);
	}
	t->e[at] = *w;
	t->n++;
}

/* The words of t, packed at the front of dst; how many. */
static size_t entries(const struct table *t, struct entry *dst)
{
	size_t n = 0;

	for (size_t i = 0; i < t->cap; i++)
		if (t->e[i].count)
			dst[n++] = t->e[i];
	return n;
}

/* An empty table sized for about `bytes` of text: a slot per KiB, up to
 * 64 Ki slots (a vocabulary grows far slower than the text), so that a
 * big input does not pay for six rounds of growth. */
static void presize(struct table *t, size_t bytes)
{
	size_t want = bytes / 1024 < (1 << 16) ? bytes / 1024 : 1 << 16;

	if (want > 1024)
		grow(t, want);
}

static void free_table(struct table *t)
{
	free(t->e);
}

/* Count the words of text[from, to) into t; returns how many words.  The
 * input holds size bytes: eight are read at a time while sixteen remain
 * (a read may look past `to`, never past the input).  Each round starts on
 * a separator or a word's first letter; a word of up to 15 letters is
 * found, keyed and hashed from at most two loads, the others (and the
 * last 16 bytes) letter by letter. */
static uint64_t count_words(struct table *t, const unsigned char *text,
			    size_t size, size_t from, size_t to)
{
	uint64_t words = 0;
	size_t i = from;

	while (i < to) {
		struct entry w = { .off = i, .count = 1 };

		if (i + KEY <= size) {
			uint64_t x = load8(text + i), m = letters8(x);

			if (!(m & 0x80)) {  /* a separator: to a letter */
				i += m ? (size_t)__builtin_ctzll(m) / 8 : 8;
				continue;
			}
			uint64_t y = load8(text + i + 8), n = letters8(y);

			if (m != HIGH) {  /* it ends in the first block */
				w.len = (uint64_t)__builtin_ctzll(~m & HIGH)
					/ 8;
				w.k[0] = low_bytes(x | ONES * 0x20,
						   (unsigned)w.len);
			} else if (n != HIGH) {  /* in the second */
				w.len = 8 + (uint64_t)__builtin_ctzll(
						~n & HIGH) / 8;
				w.k[0] = x | ONES * 0x20;
				w.k[1] = low_bytes(y | ONES * 0x20,
						   (unsigned)w.len - 8);
			}
			if (w.len)
				w.hash = hash_blocks(w.k[0], w.k[1], 0);
		}
		if (!w.len) {  /* near the end, or 16 letters and more */
			if (!letter(text[i])) {
				i++;
				continue;
			}
			while (i + w.len < to && letter(text[i + w.len]))
				w.len++;
			key_of(text, &w);
		}
		words++;
		i += w.len + 1;  /* and the separator after it */
		/* The common case inline: a word of up to 16 letters met
		 * before, in the first slot it hashes to. */
		struct entry *e = t->cap ? &t->e[w.hash & (t->cap - 1)] : NULL;

		if (e && e->count && w.len <= KEY && e->k[0] == w.k[0] &&
		    e->k[1] == w.k[1] && e->len == w.len)
			e->count++;
		else
			add(t, text, &w);
	}
	return words;
}

/* The partition: high bits of the hash (the table uses the low ones). */
static int part(uint64_t h, int r)
{
	return (int)((h >> 32) % (uint64_t)r);
}

/* Count descending, then the word ascending (lower-cased): the first 16
 * letters compare as two numbers once byte-swapped (the first letter most
 * significant; the zero padding puts "ab" before "abc"). */
static int by_rank(const void *a, const void *b, void *text)
{
	const struct entry *x = a, *y = b;
	const unsigned char *p = (const unsigned char *)text + x->off,
			    *q = (const unsigned char *)text + y->off;

	if (x->count != y->count)
		return x->count > y->count ? -1 : 1;
	for (int i = 0; i < 2; i++)
		if (x->k[i] != y->k[i])
			return __builtin_bswap64(x->k[i]) <
			       __builtin_bswap64(y->k[i]) ? -1 : 1;
	for (uint64_t k = KEY; k < x->len && k < y->len; k++)
		if ((p[k] | 32) != (q[k] | 32))
			return (p[k] | 32) < (q[k] | 32) ? -1 : 1;
	return (x->len > y->len) - (x->len < y->len);
}

/* Cut text into n parts at word boundaries: cut[0] = 0, cut[n] = size,
 * and each cut in between moved forward off the middle of a word. */
static void cut_at_words(const unsigned char *text, size_t size, size_t n,
			 size_t cut[])
{
	for (size_t m = 0; m <= n; m++) {
		size_t c = size / n * m + size % n * m / n;  /* no overflow */

		c = m && c < cut[m - 1] ? cut[m - 1] : c;
		while (c > 0 && c < size && letter(text[c - 1]) &&
		       letter(text[c]))
			c++;
		cut[m] = c;
	}
}

/* ---- the three phases ------------------------------------------------ */

/* The barrier between map and reduce: a count in shared memory that each
 * mapper increments, and a futex on it to sleep on while it is short.  The
 * kernel compares the word before it sleeps, so a wake-up between our look
 * and our sleep is not lost.  Every sleep is bounded. */
static void arrive(_Atomic uint32_t *count)
{
	atomic_fetch_add(count, 1);
	syscall(SYS_futex, count, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

/* Sleep until *count reaches want or `slice` seconds pass: true if it has. */
static bool reached(_Atomic uint32_t *count, uint32_t want, double slice)
{
	struct timespec t = { (time_t)slice,
			      (long)((slice - (double)(time_t)slice) * 1e9) };
	uint32_t seen = atomic_load(count);

	if (seen >= want)
		return true;
	syscall(SYS_futex, count, FUTEX_WAIT, seen, &t, NULL, 0);
	return atomic_load(count) >= want;  /* woken, timed out or EINTR */
}

/* Map: count pieces of the input privately, taking the next one while
 * any is left (a mapper slowed down by another job on its CPU takes fewer),
 * then shuffle: take room for all my words in the shared region (one
 * atomic add) and lay them out by reducer. */
static void map(const struct job *j, int m)
{
	struct table t = { 0 };
	uint64_t words = 0;

	presize(&t, j->size / (size_t)j->m);  /* my share, about */
	for (uint64_t p; (p = atomic_fetch_add(&j->sh->next, 1)) <
			 j->npieces;)
		words += count_words(&t, j->text, j->size, j->piece[p],
				     j->piece[p + 1]);
	uint64_t n[MAXP] = { 0 }, at = atomic_fetch_add(&j->sh->used, t.n);

	/* Two walks over the table: how many words each reducer gets, then
	 * each word straight to its place. */
	for (size_t i = 0; i < t.cap; i++)
		n[part(t.e[i].hash, j->r)] += t.e[i].count != 0;
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
	free_table(&t);
}

/* Reduce: merge partition r of every mapper (each entry brings its hash:
 * no word is hashed again), then sort it by rank into its place in the
 * output, after partitions 0..r-1 (no partition can hold more words than
 * the pairs the mappers sent it). */
static void reduce(const struct job *j, int r)
{
	struct table t = { 0 };
	uint64_t at = 0, most = 0;

	for (int q = 0; q < r; q++)
		for (int m = 0; m < j->m; m++)
			at += j->sh->sec[m][q].n;
	for (int m = 0; m < j->m; m++)  /* at least this many words */
		most = j->sh->sec[m][r].n > most ? j->sh->sec[m][r].n : most;
	grow(&t, 2 * most);
	for (int m = 0; m < j->m; m++)
		for (uint64_t k = 0; k < j->sh->sec[m][r].n; k++)
			add(&t, j->text, &j->region[j->sh->sec[m][r].at + k]);
	entries(&t, j->out + at);
	qsort_r(j->out + at, t.n, sizeof *t.e, by_rank, (void *)j->text);
	j->sh->out_at[r] = at;
	j->sh->out_n[r] = t.n;
	free_table(&t);
}

/* Wait for *count to reach want, up to BARRIER_S: exit if it does not. */
static void wait_until(_Atomic uint32_t *count, uint32_t want)
{
	for (double waited = 0; !reached(count, want, 0.1); waited += 0.1)
		if (waited >= BARRIER_S)
			_exit(EXIT_STUCK);
}

/* One process maps slice w (if w < M), then, as reducer w (if w < R),
 * waits at the barrier for every mapper and reduces partition w.  The same
 * process does both: no second round of fork() and exit() between the
 * phases.  It exits once the parent has collected the answer: an exit
 * unmaps this process's view of the input (some milliseconds for 50 MiB
 * here), work that would otherwise take a CPU from the parent just as it
 * wakes to merge the results. */
static _Noreturn void worker(const struct job *j, int w)
{
	MP_CHECK(sched_setaffinity(0, sizeof j->cpus, &j->cpus));  /* free */
	if (w < j->m) {
		map(j, w);
		arrive(&j->sh->mapped);
	}
	if (w < j->r) {
		wait_until(&j->sh->mapped, (uint32_t)j->m);
		reduce(j, w);
		arrive(&j->sh->reduced);
	}
	wait_until(&j->sh->collected, 1);
	_exit(EXIT_SUCCESS);
}

/* Worker w starts on the w-th CPU we may use (modulo their number): the
 * parent moves itself there and forks, so the child is born allowed only
 * that CPU.  Left alone, a new process is queued where the scheduler sees
 * fit, often behind its busy sibling, and waits for the next balancing
 * tick (about 4 ms here) to move to an idle CPU.  Once running, the worker
 * lets go (worker() widens its affinity again), so it can still move off
 * a CPU that another job keeps busy. */
static void go_to_cpu(const struct job *j, int w)
{
	cpu_set_t one;
	int n = CPU_COUNT(&j->cpus), k = -1;

	for (int i = 0; i < CPU_SETSIZE && n > 1; i++)
		if (CPU_ISSET(i, &j->cpus) && ++k == w % n) {
			CPU_ZERO(&one);
			CPU_SET(i, &one);
			MP_CHECK(sched_setaffinity(0, sizeof one, &one));
			return;
		}
}

/* The parent waits for the R reducers, watching the workers: one that
 * exits with an error or is killed (it will never arrive) ends the wait at
 * once, and the others are stopped.  False then. */
static bool all_reduced(const struct job *j, const pid_t *pid, int n)
{
	while (!reached(&j->sh->reduced, (uint32_t)j->r, 0.05))
		for (int w = 0; w < n; w++) {
			siginfo_t si = { 0 };

			MP_CHECK(waitid(P_PID, (id_t)pid[w], &si, WEXITED |
					WNOHANG | WNOWAIT));
			if (si.si_pid == 0 || (si.si_code == CLD_EXITED &&
					       si.si_status == 0))
				continue;
			fprintf(stderr, "%s: worker %jd failed, stopping the "
				"others\n", program_invocation_short_name,
				(intmax_t)pid[w]);
			for (int k = 0; k < n; k++)
				if (kill(pid[k], SIGKILL) == -1 &&
				    errno != ESRCH)
					mp_die("kill");
			return false;
		}
	return true;
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
			size_t at;
			const struct entry *x = ref->cap ?
				find(ref, j->text, e, &at) : NULL;

			wrong += !x || x->count != e->count;
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

/* A row: its speed, and how many times the single process's and
 * Python's (spy; 0: not run), all from this run. */
static void row(bool csv, const char *name, const char *procs, size_t size,
		double s, double s1, double spy)
{
	double mib = (double)size / (1 << 20);
	char vs_py[32] = "";

	if (spy > 0)
		snprintf(vs_py, sizeof vs_py, csv ? "%.2f" : "%.2fx", spy / s);
	if (csv)
		printf("%s,%s,%.3f,%.6f,%.1f,%.3f,%s\n", name, procs, mib, s,
		       mib / s, s1 / s, vs_py);
	else
		printf("%-12s %6s %7.1f %9.6f %9.1f %11.2fx %9s\n", name,
		       procs, mib, s, mib / s, s1 / s, vs_py);
}

int main(int argc, char *argv[])
{
	const char *input = NULL, *corpus = "zipf";
	long mb = 32, nm = 0, nr = 0, k = 10;
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
			 .r = (int)(nr ? nr : CPU_COUNT(&set)), .cpus = set };

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

	presize(&ref, j.size);
	uint64_t total = count_words(&ref, j.text, j.size, 0, j.size);
	struct entry *all = malloc((ref.n + 1) * sizeof *all);

	if (!all)
		mp_die("malloc");
	entries(&ref, all);
	qsort_r(all, ref.n, sizeof *all, by_rank, (void *)j.text);
	double s1 = mp_elapsed_s(t0);

	if (!csv)
		mp_say("parent", "%.1f MiB: %" PRIu64 " words, %zu distinct, "
		       "counted by one process in %.3f s",
		       (double)j.size / (1 << 20), total, ref.n, s1);

	/* 4. Map, shuffle, reduce.  The slices end at word boundaries; the
	 *    shuffle region holds at most one word per two bytes of input,
	 *    and so does the output (no partition outputs more words than it
	 *    was sent): reserved, not committed (MAP_NORESERVE), only the
	 *    pages used are touched.  max(M, R) workers: each maps, then
	 *    reduces once every mapper is done (a barrier in shared memory). */
	size_t cap = j.size / 2 + (size_t)j.m + 1;
	int nw = j.m > j.r ? j.m : j.r;
	pid_t pid[MAXP];

	t0 = mp_now_ns();
	j.sh = mp_shm_alloc(sizeof *j.sh);
	j.region = mmap(NULL, cap * sizeof *j.region, PROT_READ | PROT_WRITE,
			MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	j.out = mmap(NULL, cap * sizeof *j.out, PROT_READ | PROT_WRITE,
		     MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (!j.sh || j.region == MAP_FAILED || j.out == MAP_FAILED)
		mp_die("shared memory");
	j.npieces = (j.size >> 20) > (size_t)j.m ? j.size >> 20 :
		    (size_t)j.m;
	j.piece = malloc((j.npieces + 1) * sizeof *j.piece);
	if (!j.piece)
		mp_die("malloc");
	cut_at_words(j.text, j.size, (size_t)j.m, j.cut);
	cut_at_words(j.text, j.size, j.npieces, j.piece);
	for (int w = 0; w < nw; w++) {
		go_to_cpu(&j, w);
		if ((pid[w] = mp_fork()) == 0)
			worker(&j, w);
	}
	MP_CHECK(sched_setaffinity(0, sizeof j.cpus, &j.cpus));
	bool run_ok = all_reduced(&j, pid, nw);

	/* 5. The top K: merge the R sorted partitions, head by head.  The
	 *    answer is complete here: the clock stops before the workers are
	 *    reaped (each exit unmaps that process's view of the input). */
	struct entry *best = malloc(((size_t)k + 1) * sizeof *best);

	if (!best)
		mp_die("malloc");
	size_t ntop = run_ok ? merge_top(&j, best, (size_t)k) : 0;
	double smr = mp_elapsed_s(t0);
	uint64_t distinct = 0, pairs = 0;

	arrive(&j.sh->collected);  /* the workers may go */
	for (int w = 0; w < nw; w++)
		run_ok &= mp_waitpid(pid[w]) == 0;
	for (int r = 0; r < j.r; r++) {
		distinct += j.sh->out_n[r];
		for (int m = 0; m < j.m; m++)
			pairs += j.sh->sec[m][r].n;
	}
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

	/* 6. Every word's count as the single process counted it, and the
	 *    same top K. */
	uint64_t sum = 0;
	bool counts_ok = run_ok && same_counts(&j, &ref, total, &sum);
	bool top_ok = ntop == (ref.n < (size_t)k ? ref.n : (size_t)k);

	for (size_t i = 0; i < ntop && top_ok; i++)
		top_ok = by_rank(&best[i], &all[i], (void *)j.text) == 0;

	/* 7. False sharing: the same adds, counters packed or padded. */
	double fs[2];
	bool fs_ok = false_sharing(&j, fs);

	/* 8. Python: Pool.map over chunks, a Counter each, on the same file. */
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

	/* 9. The table and the verdict. */
	char mxr[32];

	snprintf(mxr, sizeof mxr, "%dx%d", j.m, j.r);
	double spy = py && t.s > 0 ? t.s : 0;

	printf(csv ? "engine,processes,mib,seconds,mib_per_s,x_1_process,"
	       "x_python\n" : "engine        procs     MiB   seconds     MiB/s"
	       "  vs 1 process vs python\n");
	row(csv, "1 process", "1", j.size, s1, s1, spy);
	if (run_ok)
		row(csv, "mapreduce", mxr, j.size, smr, s1, spy);
	else if (!csv)
		printf("mapreduce: a worker failed, no time to show\n");
	if (spy > 0)
		row(csv, "python", w, j.size, t.s, s1, spy);
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
	MP_CHECK(munmap(j.out, cap * sizeof *j.out));
	MP_CHECK(mp_shm_free(j.sh, sizeof *j.sh));
	MP_CHECK(close(fd));
	free_table(&ref);
	free(all);
	free(best);
	free(j.piece);
	return ok ? EXIT_SUCCESS : EXIT_FAILURE;
}
