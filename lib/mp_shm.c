/* lib/mp_shm.c -- see mp_shm.h */
#include "mp_shm.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

void *mp_shm_alloc(size_t size)
{
	if (size == 0) {
		errno = EINVAL;
		return NULL;
	}
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
		       MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	return p == MAP_FAILED ? NULL : p;
}

int mp_shm_free(void *p, size_t size)
{
	return munmap(p, size);
}

/* Map fd's first size bytes shared, then close fd (the mapping keeps the
 * segment alive; the descriptor is no longer needed). */
static void *map_and_close(int fd, size_t size)
{
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	int saved = errno;

	if (close(fd) == -1 && p != MAP_FAILED) {
		saved = errno;
		munmap(p, size);
		p = MAP_FAILED;
	}
	errno = saved;
	return p == MAP_FAILED ? NULL : p;
}

void *mp_shm_create(const char *name, size_t size)
{
	if (size == 0) {
		errno = EINVAL;
		return NULL;
	}
	int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);

	if (fd == -1)
		return NULL;
	/* ftruncate only sets the size: tmpfs finds the pages at first touch,
	 * and a full /dev/shm then kills the toucher with SIGBUS.
	 * posix_fallocate reserves them now, so a full /dev/shm is ENOSPC
	 * here, where it can be reported. */
	int err = ftruncate(fd, (off_t)size) == -1 ? errno
		  : posix_fallocate(fd, 0, (off_t)size);

	if (err) {
		int saved = err;

		close(fd);
		shm_unlink(name);
		errno = saved;
		return NULL;
	}
	void *p = map_and_close(fd, size);

	if (!p) {
		int saved = errno;

		shm_unlink(name);
		errno = saved;
	}
	return p;
}

void *mp_shm_attach(const char *name, size_t *size)
{
	struct stat st;
	int fd = shm_open(name, O_RDWR, 0);

	if (fd == -1)
		return NULL;
	int err = fstat(fd, &st) == -1 ? errno : st.st_size == 0 ? EINVAL : 0;

	if (err) {
		close(fd);
		errno = err;
		return NULL;
	}
	*size = (size_t)st.st_size;
	return map_and_close(fd, *size);
}

int mp_shm_unlink(const char *name)
{
	return shm_unlink(name);
}
