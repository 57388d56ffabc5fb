/* lib/mp_pool_heap.c -- mp_pool_alloc(): shared memory that grows
 *
 * A block of the heap must be at the same address in the parent and in
 * every worker, including workers forked before the block existed.  So the
 * heap is a memfd (an anonymous file in memory, inherited across fork)
 * mapped in segments: when a block does not fit, the parent makes the file
 * longer, maps the new part (a segment at least as large as all before it,
 * so there are few), and publishes its address in the shared table
 * sh->segs.  A worker that finds the table longer than it knew maps each
 * new segment at that same address (MAP_FIXED_NOREPLACE: never over
 * something of its own) before it takes its next job -- see
 * mp_pool_worker.c; if that address is taken in it, it retires and the
 * parent forks a replacement, which inherits the mapping.  Address space
 * is thus taken as blocks are allocated (a pool fits under a small
 * `ulimit -v`), and there is no fixed size to outgrow.  (With heap_bytes
 * set, the caller asked for a fixed heap: one segment of that size is
 * mapped at mp_pool_create(), before the first fork, and never grows.)
 *
 * The blocks: a stack over the segments.  mp_pool_alloc() takes the bytes
 * at the top (or moves on to the next segment with room); mp_pool_free()
 * marks a block free and brings the top down over every free block there.
 * Each block starts with a 64-byte header just before the pointer handed
 * out; workers never allocate.  Segments stay mapped until the pool is
 * destroyed (a worker may have mapped them).
 *
 * Top layer, beside mp_pool.c; uses only mp_pool_internal.h.
 */
#define _GNU_SOURCE
#include "mp_pool_internal.h"

#include <sys/mman.h>

struct block { uint64_t magic, len, prev; };  /* prev: the block below */

/* Map a new segment of at least need bytes; its index, or -1 (ENOMEM).
 * With heap_bytes set, mp_pool_create() calls it once for all of it. */
int mpp_heap_grow(struct mp_pool *p, size_t need)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	size_t cap = p->heap_max ? (p->heap_max + page - 1) & ~(page - 1) : 0;
	size_t len = need > p->heap_mapped ? need : p->heap_mapped;

	if (len < MIN_SEGMENT)
		len = MIN_SEGMENT;
	len = (len + page - 1) & ~(page - 1);
	if (cap && len > cap - p->heap_mapped)
		len = cap - p->heap_mapped;  /* what the cap leaves */
	if (p->nsegs == MAX_SEGMENTS || len < need) {
		errno = ENOMEM;
		return -1;
	}
	off_t off = (off_t)p->heap_mapped;

	if (ftruncate(p->hfd, off + (off_t)len) == -1)
		return -1;
	void *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, p->hfd,
		       off);

	if (m == MAP_FAILED)
		return -1;  /* the file stays longer: harmless */
	uint32_t k = p->nsegs;

	p->segs[k] = (struct segment){ (uintptr_t)m, len, (uint64_t)off };
	p->sh->segs[k] = p->segs[k];
	p->nsegs = k + 1;
	/* Published before any job that points into it (release). */
	atomic_store_explicit(&p->sh->nsegs, k + 1, memory_order_release);
	p->heap_mapped += len;
	return (int)k;
}

void *mp_pool_alloc(struct mp_pool *p, size_t size)
{
	if (!p || size == 0 || size > SIZE_MAX / 2) {
		errno = EINVAL;
		return NULL;
	}
	size_t len = al(size) + LINE;
	uintptr_t at = 0;
	uint32_t k = p->cur;

	for (; !at && k < p->nsegs; k++) {
		uintptr_t start = k == p->cur && p->heap_top ? p->heap_top :
			(uintptr_t)p->segs[k].addr;
		uintptr_t end = (uintptr_t)p->segs[k].addr + p->segs[k].len;

		if (end - start >= len)
			at = start;
	}
	if (at) {
		k--;
	} else {
		int g = p->heap_max ? -1 : mpp_heap_grow(p, len);

		if (g < 0) {
			errno = p->heap_max ? ENOMEM : errno;
			return NULL;
		}
		k = (uint32_t)g;
		at = (uintptr_t)p->segs[k].addr;
	}
	struct block *b = (struct block *)at;

	*b = (struct block){ HEAP_MAGIC, len, p->heap_last };
	p->heap_last = at;
	p->heap_top = at + len;
	p->cur = k;
	return (char *)b + LINE;
}

int mp_pool_free(struct mp_pool *p, void *ptr)
{
	if (!ptr)
		return 0;
	struct block *b = (struct block *)((char *)ptr - LINE);
	int k = p ? heap_segment(p, b, LINE) : -1;

	if (k < 0 || ((uintptr_t)b - p->segs[k].addr) % LINE ||
	    b->magic != HEAP_MAGIC) {
		errno = EINVAL;
		return -1;
	}
	b->magic = HEAP_FREE;
	while (p->heap_last) {
		struct block *top = (struct block *)p->heap_last;

		if (top->magic != HEAP_FREE)
			break;
		p->heap_top = p->heap_last;
		p->heap_last = top->prev;
		p->cur = (uint32_t)heap_segment(p, top, LINE);
	}
	return 0;
}

int mpp_heap_release(struct mp_pool *p)
{
	int err = 0;

	for (uint32_t k = 0; k < p->nsegs; k++)
		if (munmap((void *)p->segs[k].addr, p->segs[k].len) == -1 &&
		    !err)
			err = errno;
	p->nsegs = 0;
	mpp_close_fd(p, &p->hfd);
	errno = err;
	return err ? -1 : 0;
}
