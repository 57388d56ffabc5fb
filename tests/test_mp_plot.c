/* tests/test_mp_plot.c -- lib/mp_plot: the CSV and the gnuplot script a
 * table gives (exact text), the --plot option, a chart drawn by gnuplot, and
 * what happens without it.
 *
 * Whatever writes to stdout runs in a forked child whose stdout is a pipe;
 * the parent reads it and makes every assertion.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <math.h>

#include "mp.h"

static struct mp_table *sample(void)
{
	struct mp_table *t = mp_table_new("Speed \"up\"", "speedup",
					  "workers,processes,threads");

	assert_non_null(t);
	assert_int_equal(t->ncols, 3);
	assert_int_equal(mp_table_add(t, (double[]){ 1, 1, 1 }), 0);
	assert_int_equal(mp_table_add(t, (double[]){ 2, 1.95, NAN }), 0);
	assert_int_equal(mp_table_add(t, (double[]){ 16, 2.000001, 0.125 }),
			 0);
	t->logx = true;
	return t;
}

/* What f got, as a string the caller frees. */
static char *text_of(int (*fn)(const struct mp_table *, const char *,
			       FILE *),
		     const struct mp_table *t, const char *out)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	assert_non_null(f);
	assert_int_equal(fn(t, out, f), 0);
	assert_int_equal(fclose(f), 0);
	return buf;
}

static int csv_as_script(const struct mp_table *t, const char *out, FILE *f)
{
	(void)out;
	return mp_table_csv(t, f);
}

static void test_csv_is_the_header_and_the_rows(void **state)
{
	(void)state;
	struct mp_table *t = sample();
	char *s = text_of(csv_as_script, t, NULL);

	assert_string_equal(s, "workers,processes,threads\n"
			       "1,1,1\n"
			       "2,1.95,\n"
			       "16,2,0.125\n");
	free(s);
	mp_table_free(t);
}

static void test_script_holds_the_data_and_draws_every_column(void **state)
{
	(void)state;
	struct mp_table *t = sample();
	char *s = text_of(mp_table_script, t, NULL);

	assert_string_equal(s, "$data << EOD\n"
			       "workers,processes,threads\n"
			       "1,1,1\n"
			       "2,1.95,\n"
			       "16,2,0.125\n"
			       "EOD\n"
			       "set datafile separator comma\n"
			       "set terminal dumb size 79,24\n"
			       "set title \"Speed \\\"up\\\"\"\n"
			       "set xlabel \"workers\"\n"
			       "set ylabel \"speedup\"\n"
			       "set key top left autotitle columnhead\n"
			       "set logscale x 2\n"
			       "plot for [i=2:3] $data using 1:i with "
			       "linespoints\n");
	free(s);
	s = text_of(mp_table_script, t, "out.svg");
	assert_non_null(strstr(s, "set terminal svg size 800,480 noenhanced\n"
				  "set output \"out.svg\"\n"));
	free(s);
	s = text_of(mp_table_script, t, "a.png");
	assert_non_null(strstr(s, "set terminal png size 800,480 noenhanced\n"
				  "set output \"a.png\"\n"));
	free(s);

	FILE *f = fopen("/dev/null", "w");

	assert_non_null(f);
	errno = 0;
	assert_int_equal(mp_table_script(t, "chart.pdf", f), -1);
	assert_int_equal(errno, EINVAL);
	assert_int_equal(fclose(f), 0);
	mp_table_free(t);
}

/* Categories on x: names in the data, bars in the chart. */
static void test_categories_make_a_bar_chart(void **state)
{
	(void)state;
	static const char *const names[] = { "pipe", "eventfd" };
	struct mp_table *t = mp_table_new("round trip", "us",
					  "mechanism,median,probe");

	assert_non_null(t);
	assert_int_equal(mp_table_add(t, (double[]){ 0, 31.5, 31 }), 0);
	assert_int_equal(mp_table_add(t, (double[]){ 1, 30, NAN }), 0);
	t->xnames = names;
	t->logx = true;  /* ignored: categories have no scale */
	char *s = text_of(csv_as_script, t, NULL);

	assert_string_equal(s, "mechanism,median,probe\n"
			       "pipe,31.5,31\n"
			       "eventfd,30,\n");
	free(s);
	s = text_of(mp_table_script, t, NULL);
	assert_string_equal(s, "$data << EOD\n"
			       "mechanism,median,probe\n"
			       "pipe,31.5,31\n"
			       "eventfd,30,\n"
			       "EOD\n"
			       "set datafile separator comma\n"
			       "set terminal dumb size 79,24\n"
			       "set title \"round trip\"\n"
			       "set xlabel \"mechanism\"\n"
			       "set ylabel \"us\"\n"
			       "set key top left autotitle columnhead\n"
			       "set style data histograms\n"
			       "set style fill solid border -1\n"
			       "set xtics rotate by -30\n"
			       "set yrange [0:*]\n"
			       "plot for [i=2:3] $data using i:xtic(1)\n");
	free(s);
	mp_table_free(t);
}

static void test_table_refuses_empty_or_too_many_columns(void **state)
{
	(void)state;
	errno = 0;
	assert_null(mp_table_new("t", "y", ""));
	assert_int_equal(errno, EINVAL);
	errno = 0;
	assert_null(mp_table_new("t", "y", "a,,b"));
	assert_int_equal(errno, EINVAL);
	errno = 0;
	assert_null(mp_table_new("t", "y", "1,2,3,4,5,6,7,8,9,10,11,12,13,"
				 "14,15,16,17"));
	assert_int_equal(errno, EINVAL);

	struct mp_table *t = mp_table_new("t", "y", "x");

	assert_non_null(t);
	for (int i = 0; i < 1000; i++)  /* grows past its first 16 rows */
		assert_int_equal(mp_table_add(t, (double[]){ i }), 0);
	assert_int_equal(t->nrows, 1000);
	assert_true(t->cells[999] == 999);
	mp_table_free(t);
}

/* Run mp_plot_with(sample, out, path) in a child with stdout on a pipe;
 * the child exits 0 on success, else 10 + errno.  Returns what it printed
 * (caller frees) and its exit code in *code. */
static char *plot_in_child(const char *out, const char *path, int *code)
{
	int fd[2];

	assert_int_equal(pipe(fd), 0);
	struct mp_table *t = sample();
	pid_t pid = mp_fork();

	if (pid == 0) {
		alarm(20);
		if (dup2(fd[1], STDOUT_FILENO) == -1)
			_exit(98);
		close(fd[0]);
		close(fd[1]);
		int rc = mp_plot_with(t, out, path);

		_exit(rc == 0 ? 0 : 10 + errno);
	}
	mp_table_free(t);
	assert_int_equal(close(fd[1]), 0);

	size_t cap = 1 << 16, len = 0;
	char *buf = malloc(cap);
	ssize_t n;

	assert_non_null(buf);
	while ((n = read(fd[0], buf + len, cap - 1 - len)) > 0 ||
	       (n == -1 && errno == EINTR))
		if (n > 0)
			len += (size_t)n;
	buf[len] = '\0';
	assert_int_equal(close(fd[0]), 0);
	int st = mp_waitpid(pid);

	assert_true(WIFEXITED(st));
	*code = WEXITSTATUS(st);
	return buf;
}

static void test_without_gnuplot_one_line_says_how_to_get_it(void **state)
{
	(void)state;
	int code;
	char *s = plot_in_child(NULL, NULL, &code);

	assert_int_equal(code, 10 + ENOENT);
	assert_string_equal(s, "plot: gnuplot was not found when this was "
			       "built: install gnuplot-nox (--csv has the "
			       "numbers)\n");
	free(s);
}

static void test_a_failing_gnuplot_is_reported(void **state)
{
	(void)state;
	int code;
	char *s = plot_in_child(NULL, "/bin/false", &code);

	assert_int_equal(code, 10 + EIO);
	assert_string_equal(s, "");
	free(s);
	s = plot_in_child("chart.txt", "/bin/true", &code);
	assert_int_equal(code, 10 + EINVAL);
	free(s);
}

static void test_gnuplot_draws_in_the_terminal_and_into_svg(void **state)
{
	(void)state;
	if (!mp_gnuplot())
		skip();  /* not found at configure time */
	int code;
	char *s = plot_in_child(NULL, mp_gnuplot(), &code);

	assert_int_equal(code, 0);
	assert_non_null(strstr(s, "Speed \"up\""));
	assert_non_null(strstr(s, "processes"));
	assert_non_null(strstr(s, "workers"));
	free(s);

	char path[64];

	snprintf(path, sizeof path, "/tmp/test_mp_plot-%jd.svg",
		 (intmax_t)getpid());
	s = plot_in_child(path, mp_gnuplot(), &code);
	assert_int_equal(code, 0);
	assert_string_equal(s, "");
	free(s);

	char svg[1 << 16];
	FILE *f = fopen(path, "r");

	assert_non_null(f);
	size_t n = fread(svg, 1, sizeof svg - 1, f);

	svg[n] = '\0';
	assert_int_equal(fclose(f), 0);
	assert_int_equal(unlink(path), 0);
	assert_non_null(strstr(svg, "<svg"));
	assert_non_null(strstr(svg, "threads"));
}

static void test_plot_option_is_taken_out_of_argv(void **state)
{
	(void)state;
	char *a1[] = { "prog", "--csv", "--plot", "--procs", "2", NULL };
	int n1 = 5;

	assert_string_equal(mp_plot_option(&n1, a1), "");
	assert_int_equal(n1, 4);
	assert_string_equal(a1[2], "--procs");
	assert_null(a1[4]);

	char *a2[] = { "prog", "--plot", "x.svg", "--csv", NULL };
	int n2 = 4;

	assert_string_equal(mp_plot_option(&n2, a2), "x.svg");
	assert_int_equal(n2, 2);
	assert_string_equal(a2[1], "--csv");

	char *a3[] = { "prog", "--plot=y.png", NULL };
	int n3 = 2;

	assert_string_equal(mp_plot_option(&n3, a3), "y.png");
	assert_int_equal(n3, 1);
	assert_null(a3[1]);

	char *a4[] = { "prog", "--procs", "3", NULL };
	int n4 = 3;

	assert_null(mp_plot_option(&n4, a4));
	assert_int_equal(n4, 3);
}

static void test_plot_option_refuses_other_files_with_exit_2(void **state)
{
	(void)state;
	pid_t pid = mp_fork();

	if (pid == 0) {
		char *a[] = { "prog", "--plot", "chart.pdf", NULL };
		int n = 3;

		if (freopen("/dev/null", "w", stderr) == NULL)
			_exit(97);
		mp_plot_option(&n, a);
		_exit(0);
	}
	int st = mp_waitpid(pid);

	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_csv_is_the_header_and_the_rows),
		cmocka_unit_test(
			test_script_holds_the_data_and_draws_every_column),
		cmocka_unit_test(test_categories_make_a_bar_chart),
		cmocka_unit_test(test_table_refuses_empty_or_too_many_columns),
		cmocka_unit_test(
			test_without_gnuplot_one_line_says_how_to_get_it),
		cmocka_unit_test(test_a_failing_gnuplot_is_reported),
		cmocka_unit_test(
			test_gnuplot_draws_in_the_terminal_and_into_svg),
		cmocka_unit_test(test_plot_option_is_taken_out_of_argv),
		cmocka_unit_test(
			test_plot_option_refuses_other_files_with_exit_2),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
