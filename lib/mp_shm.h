/* lib/mp_shm.h -- shared memory allocations
 *
 * Python:  multiprocessing.Value / Array (anonymous shared memory inherited by
 *          forked children) and shared_memory.SharedMemory(name=...) (a named
 *          segment that unrelated processes attach to).
 * C:       mmap(MAP_SHARED | MAP_ANONYMOUS) before fork(); shm_open +
 *          ftruncate + posix_fallocate + mmap for a named segment under
 *          /dev/shm.
 *
 * Chapter 2 teaches these calls one by one; later lessons use these helpers.
 * All return NULL or -1 with errno set on failure.
 */
#ifndef MP_SHM_H
#define MP_SHM_H

#include <stddef.h>

/* A zero-filled region of size bytes, shared with every child forked after
 * this call (each child sees the same physical pages, not a copy).
 * size 0 gives EINVAL.  Release it with mp_shm_free(p, size). */
void *mp_shm_alloc(size_t size);

/* munmap() a region from mp_shm_alloc(), mp_shm_create() or mp_shm_attach().
 * Each process that maps it unmaps its own view; children that exit unmap
 * theirs implicitly. */
int mp_shm_free(void *p, size_t size);

/* Create a new named segment of size bytes (fails with EEXIST if the name is
 * taken) and map it.  The name looks like "/mpp-lesson-what-4711-1a2b3c4d"
 * (see mp_ipc_name()).  The pages are reserved at once (posix_fallocate), so
 * a full /dev/shm fails here with ENOSPC instead of killing the first
 * process that touches a page with SIGBUS; a failure leaves no name.  The
 * segment outlives every process until mp_shm_unlink(): whoever creates it
 * must unlink it, also on Ctrl-C (mp_atcleanup()). */
void *mp_shm_create(const char *name, size_t size);

/* Map an existing named segment; its size (from fstat) goes to *size. */
void *mp_shm_attach(const char *name, size_t *size);

/* Remove the name.  Mappings stay valid until they are unmapped. */
int mp_shm_unlink(const char *name);

#endif
