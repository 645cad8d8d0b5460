/* cholesky KERNEL: the four kernels of a tiled Cholesky factorisation A = L L^T on square tiles of
 * little-endian f64 values, row-major (the tile size is taken from the input length).
 *
 *   potrf  inputs A_kk            output L_kk, lower triangle of A_kk's factor (upper part zero)
 *   trsm   inputs L_kk, A_ik      output L_ik = A_ik L_kk^-T
 *   syrk   inputs A_ii, L_ik      output A_ii - L_ik L_ik^T
 *   gemm   inputs A_ij, L_ik, L_jk output A_ij - L_ik L_jk^T
 */
#include <math.h>
#include "shoal_task.h"

static size_t tile_dim(shoal_bytes b) {
    size_t n = b.len / 8;
    size_t d = (size_t)sqrt((double)n);
    while (d * d < n) d++;
    while (d * d > n) d--;
    if (d * d != n || b.len % 8) shoal_die("input is not a square tile of f64 values");
    return d;
}

static double *load(shoal_bytes b) {
    double *t = malloc(b.len ? b.len : 1);
    if (!t) shoal_die("out of memory");
    memcpy(t, b.data, b.len);
    return t;
}

int main(int argc, char **argv) {
    if (argc < 2) shoal_die("usage: cholesky potrf|trsm|syrk|gemm");
    const char *k = argv[1];
    shoal_inputs in = shoal_read_inputs();
    size_t want = !strcmp(k, "potrf") ? 1 : !strcmp(k, "trsm") ? 2 : !strcmp(k, "syrk") ? 2 : !strcmp(k, "gemm") ? 3 : 0;
    if (!want) shoal_die("unknown kernel: expected potrf, trsm, syrk or gemm");
    if (in.count != want) {
        fprintf(stderr, "%s takes %zu inputs, got %zu\n", k, want, in.count);
        return 2;
    }
    size_t n = tile_dim(in.items[0]);
    for (size_t i = 1; i < in.count; i++)
        if (tile_dim(in.items[i]) != n) shoal_die("tiles differ in size");
    double *a = load(in.items[0]);
    if (!strcmp(k, "potrf")) {
        for (size_t j = 0; j < n; j++) {
            double d = a[j * n + j];
            for (size_t p = 0; p < j; p++) d -= a[j * n + p] * a[j * n + p];
            if (!(d > 0)) shoal_die("potrf: tile is not positive definite");
            d = sqrt(d);
            a[j * n + j] = d;
            for (size_t i = j + 1; i < n; i++) {
                double s = a[i * n + j];
                for (size_t p = 0; p < j; p++) s -= a[i * n + p] * a[j * n + p];
                a[i * n + j] = s / d;
            }
            for (size_t i = 0; i < j; i++) a[i * n + j] = 0;
        }
    } else if (!strcmp(k, "trsm")) {
        /* a = L_kk; solve X L^T = B for X, row by row (forward substitution) */
        double *b = load(in.items[1]);
        for (size_t r = 0; r < n; r++)
            for (size_t j = 0; j < n; j++) {
                double s = b[r * n + j];
                for (size_t p = 0; p < j; p++) s -= b[r * n + p] * a[j * n + p];
                b[r * n + j] = s / a[j * n + j];
            }
        a = b;
    } else if (!strcmp(k, "syrk")) {
        double *l = load(in.items[1]);
        for (size_t i = 0; i < n; i++)
            for (size_t j = 0; j < n; j++) {
                double s = 0;
                for (size_t p = 0; p < n; p++) s += l[i * n + p] * l[j * n + p];
                a[i * n + j] -= s;
            }
    } else {
        double *l1 = load(in.items[1]), *l2 = load(in.items[2]);
        for (size_t i = 0; i < n; i++)
            for (size_t j = 0; j < n; j++) {
                double s = 0;
                for (size_t p = 0; p < n; p++) s += l1[i * n + p] * l2[j * n + p];
                a[i * n + j] -= s;
            }
    }
    shoal_write(a, n * n * 8);
    return 0;
}
