/*
 * Stand-in for the `prime` program of stromatekt 0.0.0's examples (its
 * source is not in the published crate): the tests build it with
 * `gcc -static` into the context as target/release/prime, the file the
 * example specs copy into their trees.
 *
 *   prime PATH...   copy this program to each PATH (mode 0755), so later
 *                   steps can run the copy (`/pre-fork` in
 *                   parallel-dependency.json);
 *   prime           write "ran as ARGV0" to ARGV0.ran: the trace of a copy
 *                   being run.
 *
 * Static and without a libc outside itself, it runs on an empty tree.
 */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int copy_self(const char *to) {
    char buf[65536];
    int in = open("/proc/self/exe", O_RDONLY);
    if (in < 0) {
        perror("prime: /proc/self/exe");
        return 1;
    }
    int out = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0755);
    if (out < 0) {
        perror(to);
        close(in);
        return 1;
    }
    ssize_t n;
    while ((n = read(in, buf, sizeof buf)) > 0) {
        if (write(out, buf, (size_t)n) != n) {
            perror(to);
            return 1;
        }
    }
    close(in);
    if (fchmod(out, 0755) != 0 || close(out) != 0 || n < 0) {
        perror(to);
        return 1;
    }
    printf("prime: wrote %s\n", to);
    return 0;
}

int main(int argc, char **argv) {
    if (argc > 1) {
        for (int i = 1; i < argc; i++) {
            if (copy_self(argv[i]) != 0) {
                return 1;
            }
        }
        return 0;
    }
    char trace[4096];
    snprintf(trace, sizeof trace, "%s.ran", argv[0]);
    FILE *f = fopen(trace, "w");
    if (f == NULL || fprintf(f, "ran as %s\n", argv[0]) < 0 || fclose(f) != 0) {
        perror(trace);
        return 1;
    }
    printf("prime: wrote %s\n", trace);
    return 0;
}
