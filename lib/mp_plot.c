/* lib/mp_plot.c -- a table as CSV, and as a gnuplot chart (see mp_plot.h)
 *
 * gnuplot runs as a child with a pipe on its stdin: we write a script that
 * holds the data inline, close the pipe, and wait for it (bounded: a gnuplot
 * that does not finish within 10 s is killed).  Its stdout is ours, which is
 * where the dumb terminal draws.
 */
#define _GNU_SOURCE  /* program_invocation_short_name */
#include "mp_plot.h"
#include "mp_util.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct mp_table *mp_table_new(const char *title, const char *ylabel,
			      const char *cols)
{
	struct mp_table *t = calloc(1, sizeof *t);
	/* One allocation holds the copies of the three strings. */
	size_t lt = strlen(title) + 1, ly = strlen(ylabel) + 1;
	char *copy = t ? malloc(lt + ly + strlen(cols) + 1) : NULL;

	if (!copy) {
		free(t);
		return NULL;
	}
	memcpy(copy, title, lt);
	memcpy(copy + lt, ylabel, ly);
	strcpy(copy + lt + ly, cols);
	t->title = copy;
	t->ylabel = copy + lt;
	for (char *c = copy + lt + ly, *next; c; c = next) {
		next = strchr(c, ',');
		if (next)
			*next++ = '\0';
		if (t->ncols == MP_TABLE_MAXCOLS || !*c) {
			mp_table_free(t);
			errno = EINVAL;
			return NULL;
		}
		t->cols[t->ncols++] = c;
	}
	return t;
}

int mp_table_add(struct mp_table *t, const double *row)
{
	if (t->nrows == t->cap) {
		size_t cap = t->cap ? 2 * t->cap : 16;
		double *c = realloc(t->cells, cap * (size_t)t->ncols *
					      sizeof *c);

		if (!c)
			return -1;
		t->cells = c;
		t->cap = cap;
	}
	memcpy(t->cells + t->nrows * (size_t)t->ncols, row,
	       (size_t)t->ncols * sizeof *row);
	t->nrows++;
	return 0;
}

void mp_table_free(struct mp_table *t)
{
	if (!t)
		return;
	free((char *)t->title);  /* the block that holds all the strings */
	free(t->cells);
	free(t);
}

/* Header and rows; shared by the CSV and the script's data block. */
static int write_rows(const struct mp_table *t, FILE *f)
{
	for (int c = 0; c < t->ncols; c++)
		if (fprintf(f, "%s%s", c ? "," : "", t->cols[c]) < 0)
			return -1;
	if (fputc('\n', f) == EOF)
		return -1;
	for (size_t r = 0; r < t->nrows; r++) {
		for (int c = 0; c < t->ncols; c++) {
			double v = t->cells[r * (size_t)t->ncols + (size_t)c];

			if (c && fputc(',', f) == EOF)
				return -1;
			if (!c && t->xnames) {
				if (fputs(t->xnames[r], f) == EOF)
					return -1;
			} else if (!isnan(v) && fprintf(f, "%.6g", v) < 0) {
				return -1;
			}
		}
		if (fputc('\n', f) == EOF)
			return -1;
	}
	return 0;
}

int mp_table_csv(const struct mp_table *t, FILE *f)
{
	return write_rows(t, f) == -1 || fflush(f) == EOF ? -1 : 0;
}

/* A string as a gnuplot double-quoted literal. */
static int quoted(FILE *f, const char *s)
{
	if (fputc('"', f) == EOF)
		return -1;
	for (; *s; s++)
		if ((*s == '"' || *s == '\\') && fputc('\\', f) == EOF)
			return -1;
		else if (fputc(*s, f) == EOF)
			return -1;
	return fputc('"', f) == EOF ? -1 : 0;
}

static bool ends_with(const char *s, const char *end)
{
	size_t ls = strlen(s), le = strlen(end);

	return ls > le && strcmp(s + ls - le, end) == 0;
}

int mp_table_script(const struct mp_table *t, const char *out, FILE *f)
{
	const char *term;

	if (!out || !*out)
		term = "dumb size 79,24";
	else if (ends_with(out, ".svg"))
		term = "svg size 800,480 noenhanced";
	else if (ends_with(out, ".png"))
		term = "png size 800,480 noenhanced";
	else {
		errno = EINVAL;
		return -1;
	}
	/* Empty CSV fields (missing cells) are skipped by gnuplot once the
	 * separator is a comma. */
	if (fprintf(f, "$data << EOD\n") < 0 || write_rows(t, f) == -1 ||
	    fprintf(f, "EOD\nset datafile separator comma\n"
		    "set terminal %s\n", term) < 0)
		return -1;
	if (out && *out &&
	    (fputs("set output ", f) == EOF || quoted(f, out) == -1 ||
	     fputc('\n', f) == EOF))
		return -1;
	if (fputs("set title ", f) == EOF || quoted(f, t->title) == -1 ||
	    fputs("\nset xlabel ", f) == EOF || quoted(f, t->cols[0]) == -1 ||
	    fputs("\nset ylabel ", f) == EOF || quoted(f, t->ylabel) == -1 ||
	    fprintf(f, "\nset key top left autotitle columnhead\n%s%s",
		    t->logx && !t->xnames ? "set logscale x 2\n" : "",
		    t->logy ? "set logscale y\n" : "") < 0)
		return -1;
	if (t->xnames ?  /* bars by category, or lines over a number */
	    fprintf(f, "set style data histograms\n"
		    "set style fill solid border -1\n"
		    "set xtics rotate by -30\n%s"
		    "plot for [i=2:%d] $data using i:xtic(1)\n",
		    t->logy ? "" : "set yrange [0:*]\n", t->ncols) < 0 :
	    fprintf(f, "plot for [i=2:%d] $data using 1:i with linespoints\n",
		    t->ncols) < 0)
		return -1;
	return fflush(f) == EOF ? -1 : 0;
}

const char *mp_gnuplot(void)
{
#ifdef MP_GNUPLOT
	return MP_GNUPLOT[0] ? MP_GNUPLOT : NULL;
#else
	return NULL;
#endif
}

int mp_plot(const struct mp_table *t, const char *out)
{
	return mp_plot_with(t, out, mp_gnuplot());
}

/* Wait for pid at most timeout_ms; kill it past that.  Raw status. */
static int wait_bounded(pid_t pid, int timeout_ms)
{
	int st;

	for (int ms = 0;; ms += 10) {
		pid_t w = waitpid(pid, &st, WNOHANG);

		if (w == pid)
			return st;
		if (w == -1 && errno != EINTR)
			mp_die("waitpid %jd", (intmax_t)pid);
		if (ms == timeout_ms)
			MP_CHECK(kill(pid, SIGKILL));  /* then reaped */
		nanosleep(&(struct timespec){ 0, 10 * 1000 * 1000 }, NULL);
	}
}

int mp_plot_with(const struct mp_table *t, const char *out, const char *path)
{
	int fd[2];

	if (out && *out && !ends_with(out, ".svg") && !ends_with(out, ".png")) {
		errno = EINVAL;
		return -1;
	}
	if (!path) {
		if (printf("plot: gnuplot was not found when this was built: "
			   "install gnuplot-nox (--csv has the numbers)\n")
		    < 0 || fflush(stdout) == EOF)
			return -1;
		errno = ENOENT;
		return -1;
	}
	if (pipe2(fd, O_CLOEXEC) == -1)
		return -1;
	pid_t pid = mp_fork();

	if (pid == 0) {
		if (dup2(fd[0], STDIN_FILENO) == -1)
			mp_die("dup2");
		execl(path, "gnuplot", (char *)NULL);
		mp_die("execl %s", path);
	}
	MP_CHECK(close(fd[0]));

	/* A gnuplot that exits early must not kill us with SIGPIPE: the
	 * write then fails with EPIPE instead, and its status tells why. */
	struct sigaction ign = { .sa_handler = SIG_IGN }, old;
	FILE *f = NULL;
	int rc = 0, err = 0;

	MP_CHECK(sigaction(SIGPIPE, &ign, &old));
	if (!(f = fdopen(fd[1], "w"))) {
		err = errno;
		MP_CHECK(close(fd[1]));
	} else if (mp_table_script(t, out, f) == -1) {
		err = errno;
	}
	if (f && fclose(f) == EOF && !err)
		err = errno;
	MP_CHECK(sigaction(SIGPIPE, &old, NULL));
	int st = wait_bounded(pid, 10000);

	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		/* gnuplot said why on stderr.  EPIPE only means it ended
		 * before it had read the whole script: its failure is the
		 * news, whichever of the two came first. */
		rc = -1;
		err = err && err != EPIPE ? err : EIO;
	} else if (err) {
		rc = -1;
	}
	errno = err;
	return rc;
}

const char *mp_plot_option(int *argc, char *argv[])
{
	const char *file = NULL;
	int i = 1;

	while (i < *argc) {
		int take = 0;

		if (strcmp(argv[i], "--") == 0)
			break;
		if (strcmp(argv[i], "--plot") == 0) {
			bool has = i + 1 < *argc && argv[i + 1][0] != '-';

			file = has ? argv[i + 1] : "";
			take = has ? 2 : 1;
		} else if (strncmp(argv[i], "--plot=", 7) == 0) {
			file = argv[i] + 7;
			take = 1;
		}
		if (!take) {
			i++;
			continue;
		}
		memmove(&argv[i], &argv[i + take],
			(size_t)(*argc - i - take + 1) * sizeof *argv);
		*argc -= take;
	}
	if (file && *file && !ends_with(file, ".svg") &&
	    !ends_with(file, ".png")) {
		fprintf(stderr, "%s: --plot: '%s' must end in .svg or .png\n"
			"Try '%s --help' for more information.\n",
			program_invocation_short_name, file,
			program_invocation_short_name);
		exit(2);
	}
	return file;
}
