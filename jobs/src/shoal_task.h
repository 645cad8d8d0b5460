/* shoal_task.h: helpers for Shoal task programs (the task ABI, see docs/task-abi.md).
 *
 * A task reads its inputs, concatenated, on stdin. When it has more than one input, the
 * environment variable SHOAL_INPUT_SIZES lists their byte lengths (decimal, comma-separated).
 * Whatever the task writes to stdout is its output; stderr is its log; exit status 0 is success.
 */
#ifndef SHOAL_TASK_H
#define SHOAL_TASK_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const unsigned char *data;
    size_t len;
} shoal_bytes;

typedef struct {
    unsigned char *all; /* every input, concatenated */
    size_t total;
    size_t count;       /* number of inputs */
    shoal_bytes *items; /* one entry per input */
} shoal_inputs;

static void shoal_die(const char *msg) {
    fprintf(stderr, "%s\n", msg);
    exit(2);
}

/* Reads all of stdin. */
static unsigned char *shoal_read_stdin(size_t *len_out) {
    size_t cap = 1 << 16, len = 0;
    unsigned char *buf = malloc(cap);
    if (!buf) shoal_die("out of memory reading input");
    for (;;) {
        if (len == cap) {
            cap *= 2;
            buf = realloc(buf, cap);
            if (!buf) shoal_die("out of memory reading input");
        }
        size_t n = fread(buf + len, 1, cap - len, stdin);
        len += n;
        if (n == 0) break;
    }
    *len_out = len;
    return buf;
}

/* Reads stdin and splits it into inputs using SHOAL_INPUT_SIZES (one input when unset). */
static shoal_inputs shoal_read_inputs(void) {
    shoal_inputs in;
    in.all = shoal_read_stdin(&in.total);
    const char *sizes = getenv("SHOAL_INPUT_SIZES");
    if (!sizes || !*sizes) {
        in.count = 1;
        in.items = malloc(sizeof(shoal_bytes));
        if (!in.items) shoal_die("out of memory");
        in.items[0].data = in.all;
        in.items[0].len = in.total;
        return in;
    }
    size_t n = 1;
    for (const char *p = sizes; *p; p++) n += (*p == ',');
    in.count = n;
    in.items = malloc(n * sizeof(shoal_bytes));
    if (!in.items) shoal_die("out of memory");
    size_t off = 0, i = 0;
    const char *p = sizes;
    while (i < n) {
        char *end;
        unsigned long long len = strtoull(p, &end, 10);
        if (end == p || off + len > in.total) shoal_die("SHOAL_INPUT_SIZES does not match stdin");
        in.items[i].data = in.all + off;
        in.items[i].len = (size_t)len;
        off += (size_t)len;
        i++;
        p = (*end == ',') ? end + 1 : end;
    }
    if (off != in.total) shoal_die("SHOAL_INPUT_SIZES does not add up to the length of stdin");
    return in;
}

static long long shoal_arg_ll(int argc, char **argv, int i, const char *name) {
    if (i >= argc) {
        fprintf(stderr, "missing argument %d (%s)\n", i, name);
        exit(2);
    }
    char *end;
    long long v = strtoll(argv[i], &end, 10);
    if (*end != 0 || end == argv[i]) {
        fprintf(stderr, "argument %d (%s) is not an integer: %s\n", i, name, argv[i]);
        exit(2);
    }
    return v;
}

static double shoal_arg_f(int argc, char **argv, int i, const char *name) {
    if (i >= argc) {
        fprintf(stderr, "missing argument %d (%s)\n", i, name);
        exit(2);
    }
    char *end;
    double v = strtod(argv[i], &end);
    if (*end != 0 || end == argv[i]) {
        fprintf(stderr, "argument %d (%s) is not a number: %s\n", i, name, argv[i]);
        exit(2);
    }
    return v;
}

static void shoal_write(const void *data, size_t len) {
    if (fwrite(data, 1, len, stdout) != len) shoal_die("failed to write output");
}

#endif
