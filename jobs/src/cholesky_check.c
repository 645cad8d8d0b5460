/* cholesky_check T: checks a tiled Cholesky factorisation A = L L^T of a matrix cut into T x T
 * square tiles of little-endian f64 values, row-major (the tile size is taken from the inputs).
 *
 * Inputs: the T(T+1)/2 lower tiles of A, column by column (A00, A10, ... A(T-1)0, A11, ...), then
 * the same tiles of L, in the same order (as `cholesky` computes them). Prints one line
 * "max |A - L L^T| = R over the NxN matrix (tolerance E, max |A| = M): OK" when every entry of
 * L L^T is within E = 1e-12 * N * max |A| of A and L is lower triangular with a positive diagonal;
 * otherwise the same line ending in "FAILED" on stderr, and exit status 1 (so the job fails). */
#include <math.h>
#include "shoal_task.h"

static size_t tile_dim(shoal_bytes b) {
    size_t n = b.len / 8;
    size_t d = (size_t)sqrt((double)n);
    while (d * d < n) d++;
    while (d * d > n) d--;
    if (d * d != n || b.len % 8 || d == 0) shoal_die("input is not a square tile of f64 values");
    return d;
}

int main(int argc, char **argv) {
    long long t = shoal_arg_ll(argc, argv, 1, "tiles per side");
    if (t <= 0 || t > 1024) shoal_die("tiles per side must be between 1 and 1024");
    size_t tiles = (size_t)(t * (t + 1) / 2);
    shoal_inputs in = shoal_read_inputs();
    if (in.count != 2 * tiles) {
        fprintf(stderr, "cholesky_check %lld takes %zu inputs (the lower tiles of A, then of L), got %zu\n", t,
                2 * tiles, in.count);
        return 2;
    }
    size_t d = tile_dim(in.items[0]);
    for (size_t k = 1; k < in.count; k++)
        if (tile_dim(in.items[k]) != d) shoal_die("tiles differ in size");
    size_t n = (size_t)t * d;
    double *a = calloc(n * n, sizeof(double)), *l = calloc(n * n, sizeof(double));
    if (!a || !l) shoal_die("out of memory");
    /* Scatter the tiles into the full lower halves of A and L. */
    size_t k = 0;
    for (size_t tj = 0; tj < (size_t)t; tj++)
        for (size_t ti = tj; ti < (size_t)t; ti++, k++)
            for (size_t r = 0; r < d; r++)
                for (size_t c = 0; c < d; c++) {
                    size_t at = (ti * d + r) * n + tj * d + c;
                    memcpy(&a[at], in.items[k].data + 8 * (r * d + c), 8);
                    memcpy(&l[at], in.items[tiles + k].data + 8 * (r * d + c), 8);
                }
    double amax = 0, resid = 0;
    int shape_ok = 1;
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j <= i; j++) {
            if (!isfinite(a[i * n + j])) shoal_die("A has an entry that is not finite");
            if (fabs(a[i * n + j]) > amax) amax = fabs(a[i * n + j]);
        }
    for (size_t i = 0; i < n; i++) {
        if (!(l[i * n + i] > 0)) shape_ok = 0;
        for (size_t j = i + 1; j < n; j++)
            if (l[i * n + j] != 0) shape_ok = 0;
        for (size_t j = 0; j <= i; j++) {
            double s = 0;
            for (size_t p = 0; p <= j; p++) s += l[i * n + p] * l[j * n + p];
            double e = fabs(a[i * n + j] - s);
            if (isnan(e)) e = INFINITY;
            if (e > resid) resid = e;
        }
    }
    double tol = 1e-12 * (double)n * amax;
    int ok = shape_ok && resid <= tol;
    char line[256];
    snprintf(line, sizeof line, "max |A - L L^T| = %.3g over the %zux%zu matrix (tolerance %.3g, max |A| = %.6g)%s: %s\n",
             resid, n, n, tol, amax, shape_ok ? "" : ", L is not lower triangular with a positive diagonal",
             ok ? "OK" : "FAILED");
    fputs(line, ok ? stdout : stderr); /* a failed task's output is dropped, its log is kept */
    return ok ? 0 : 1;
}
