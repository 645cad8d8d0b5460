/* pi_reduce: the reduce step of the Monte Carlo pi job. Each input is "HITS SAMPLES\n" (from `pi`
 * or from another `pi_reduce` with the `partial` argument). Prints "pi ~= X (HITS/SAMPLES)\n", or,
 * with the single argument `partial`, the summed "HITS SAMPLES\n" for a further reduce. */
#include "shoal_task.h"

int main(int argc, char **argv) {
    int partial = argc > 1 && strcmp(argv[1], "partial") == 0;
    shoal_inputs in = shoal_read_inputs();
    long long hits = 0, samples = 0;
    for (size_t i = 0; i < in.count; i++) {
        char buf[64];
        size_t n = in.items[i].len < 63 ? in.items[i].len : 63;
        memcpy(buf, in.items[i].data, n);
        buf[n] = 0;
        long long h, s;
        if (sscanf(buf, "%lld %lld", &h, &s) != 2 || h < 0 || s < 0 || h > s) {
            fprintf(stderr, "input %zu is not \"HITS SAMPLES\"\n", i);
            return 2;
        }
        hits += h;
        samples += s;
    }
    if (partial)
        printf("%lld %lld\n", hits, samples);
    else
        printf("pi ~= %.9f (%lld/%lld)\n", samples ? 4.0 * (double)hits / (double)samples : 0.0, hits, samples);
    return 0;
}
