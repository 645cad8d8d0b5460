/* spin ITERATIONS: burns CPU for a fixed amount of work (a xorshift loop) and prints the final
 * state. Used for fine-grained scheduling benchmarks (tasks of a chosen, deterministic cost). */
#include "shoal_task.h"

int main(int argc, char **argv) {
    long long n = shoal_arg_ll(argc, argv, 1, "iterations");
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (long long i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    printf("%016llx\n", (unsigned long long)x);
    return 0;
}
