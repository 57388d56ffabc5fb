/* tests/watchdog.h -- a time bound for every test of a CMocka suite
 *
 * A broken pool or queue shows as a call that never returns.  Each test
 * runs under alarm(): past the bound the suite prints which test hung and
 * exits 1 (its workers follow, through PR_SET_PDEATHSIG), instead of
 * waiting for ctest's timeout.  Include it once, in the suite's .c file:
 *
 *     #define WATCHDOG_S 120
 *     #include "watchdog.h"
 *     ... WATCHED(test_x), ...
 *     if (watchdog_init() == -1) return EXIT_FAILURE;
 */
#ifndef WATCHDOG_H
#define WATCHDOG_H

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static char watchdog_msg[256];
static size_t watchdog_len;

static void on_watchdog(int sig)
{
	ssize_t r = write(STDERR_FILENO, watchdog_msg, watchdog_len);

	(void)sig;
	(void)r;
	_exit(1);
}

static int arm_watchdog(void **state)
{
	(void)state;
	alarm(WATCHDOG_S);
	return 0;
}

static int disarm_watchdog(void **state)
{
	(void)state;
	alarm(0);
	return 0;
}

/* Every test runs under the watchdog. */
#define WATCHED(f) \
	cmocka_unit_test_setup_teardown(f, arm_watchdog, disarm_watchdog)

/* The message, the handler, and stdout line-buffered even into a pipe:
 * the watchdog's _exit() must not swallow the name of the test that hung.
 * 0, or -1 with errno. */
static int watchdog_init(void)
{
	extern char *program_invocation_short_name;  /* glibc's */
	int n = snprintf(watchdog_msg, sizeof watchdog_msg,
			 "%s: watchdog: the test above hung (no answer in "
			 "%d s)\n", program_invocation_short_name,
			 (int)WATCHDOG_S);

	watchdog_len = n > 0 ? (size_t)n : 0;
	if (setvbuf(stdout, NULL, _IOLBF, 0) != 0 ||
	    signal(SIGALRM, on_watchdog) == SIG_ERR)
		return -1;
	return 0;
}

#endif
