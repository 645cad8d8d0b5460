/* primes LO HI: counts the primes p with LO <= p < HI (segmented sieve of Eratosthenes) and prints
 * the count. Sum the counts of adjacent ranges with `sum`. */
#include <math.h>
#include "shoal_task.h"

int main(int argc, char **argv) {
    long long lo = shoal_arg_ll(argc, argv, 1, "lo");
    long long hi = shoal_arg_ll(argc, argv, 2, "hi");
    if (lo < 0 || hi < lo || hi > (1ll << 42)) shoal_die("need 0 <= LO <= HI <= 2^42");
    if (lo < 2) lo = 2;
    if (hi <= lo) {
        printf("0\n");
        return 0;
    }
    long long root = (long long)sqrt((double)hi) + 1;
    while (root * root >= hi && root > 0) root--;
    while ((root + 1) * (root + 1) < hi) root++;
    /* small primes up to sqrt(hi) */
    unsigned char *small = calloc((size_t)root + 2, 1);
    if (!small) shoal_die("out of memory");
    for (long long i = 2; i * i <= root + 1; i++)
        if (!small[i])
            for (long long j = i * i; j <= root + 1; j += i) small[j] = 1;
    const long long seg = 1 << 16;
    unsigned char *mark = malloc((size_t)seg);
    if (!mark) shoal_die("out of memory");
    long long count = 0;
    for (long long start = lo; start < hi; start += seg) {
        long long end = start + seg < hi ? start + seg : hi;
        memset(mark, 0, (size_t)(end - start));
        for (long long p = 2; p <= root + 1 && p * p < end; p++) {
            if (small[p]) continue;
            long long first = (start + p - 1) / p * p;
            if (first < p * p) first = p * p;
            for (long long j = first; j < end; j += p) mark[j - start] = 1;
        }
        for (long long i = 0; i < end - start; i++) count += !mark[i];
    }
    printf("%lld\n", count);
    return 0;
}
