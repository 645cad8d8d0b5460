/* pi SEED SAMPLES: Monte Carlo estimate of pi, the map step. Draws SAMPLES points in the unit
 * square from a SplitMix64 generator seeded with SEED and prints "HITS SAMPLES\n", where HITS
 * counts the points inside the quarter circle. `pi_reduce` combines these. */
#include "shoal_task.h"

static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

int main(int argc, char **argv) {
    uint64_t state = (uint64_t)shoal_arg_ll(argc, argv, 1, "seed");
    long long samples = shoal_arg_ll(argc, argv, 2, "samples");
    if (samples < 0) shoal_die("samples must not be negative");
    long long hits = 0;
    for (long long i = 0; i < samples; i++) {
        /* 26-bit coordinates: exact integer arithmetic, no floating point needed */
        uint64_t r = splitmix64(&state);
        uint64_t x = r & 0x3ffffff, y = (r >> 26) & 0x3ffffff;
        hits += (x * x + y * y) < (1ull << 52);
    }
    printf("%lld %lld\n", hits, samples);
    return 0;
}
