/* sum: adds the decimal integers found in all its inputs (whitespace-separated) and prints the
 * total. The reduce step for `primes` and any other job whose map prints counts. */
#include <ctype.h>
#include "shoal_task.h"

int main(void) {
    shoal_inputs in = shoal_read_inputs();
    long long total = 0;
    for (size_t k = 0; k < in.count; k++) {
        const unsigned char *p = in.items[k].data, *end = p + in.items[k].len;
        while (p < end) {
            if (isspace(*p)) { p++; continue; }
            int neg = 0;
            if (*p == '-') { neg = 1; p++; }
            if (p >= end || !isdigit(*p)) {
                fprintf(stderr, "input %zu: expected an integer\n", k);
                return 2;
            }
            long long v = 0;
            while (p < end && isdigit(*p)) v = v * 10 + (*p++ - '0');
            total += neg ? -v : v;
        }
    }
    printf("%lld\n", total);
    return 0;
}
