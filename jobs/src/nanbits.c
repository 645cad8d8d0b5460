/* nanbits: float arithmetic that produces NaNs (0/0, inf-inf, sqrt(-1), NaN propagation through
 * +, *, fma, min, conversions) and writes the raw bits of every result. Its output must be
 * bit-identical on every peer: the sandbox canonicalises NaNs. Used by the determinism tests. */
#include <math.h>
#include "shoal_task.h"

static volatile double zero = 0.0, one = 1.0, minus_one = -1.0;
static volatile float fzero = 0.0f;

int main(void) {
    double d[12];
    float f[6];
    double inf = one / zero;
    d[0] = zero / zero;
    d[1] = inf - inf;
    d[2] = sqrt(minus_one);
    d[3] = d[0] + one;
    d[4] = d[1] * d[2];
    d[5] = -d[0] * 3.0;
    d[6] = fmin(d[2], d[0]);
    d[7] = fma(d[0], d[1], d[2]);
    d[8] = (double)(fzero / fzero);
    d[9] = d[3] - d[6];
    d[10] = inf * zero;
    d[11] = fmod(inf, one);
    f[0] = fzero / fzero;
    f[1] = (float)d[1];
    f[2] = sqrtf((float)minus_one);
    f[3] = f[0] * f[2];
    f[4] = -f[1] + 1.0f;
    f[5] = (float)(d[4] + d[5]);
    shoal_write(d, sizeof d);
    shoal_write(f, sizeof f);
    return 0;
}
