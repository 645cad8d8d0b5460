/* pow PREFIX DIFFICULTY START COUNT: SHA-256 proof-of-work search. Tries the nonces START ..
 * START+COUNT-1 and prints the first nonce N (and the hash) such that SHA-256(PREFIX || decimal N)
 * begins with DIFFICULTY zero bits, as "N HEX\n"; prints "none\n" if no nonce in the range does. */
#include "shoal_task.h"

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void block(uint32_t h[8], const unsigned char *p) {
    uint32_t w[64];
    for (int i = 0; i < 16; i++) w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = hh + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
        uint32_t t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        hh = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += hh;
}

static void sha256(const unsigned char *msg, size_t len, unsigned char out[32]) {
    uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    size_t i = 0;
    for (; i + 64 <= len; i += 64) block(h, msg + i);
    unsigned char last[128] = {0};
    size_t rem = len - i;
    memcpy(last, msg + i, rem);
    last[rem] = 0x80;
    size_t total = rem + 9 <= 64 ? 64 : 128;
    uint64_t bits = (uint64_t)len * 8;
    for (int k = 0; k < 8; k++) last[total - 1 - k] = (unsigned char)(bits >> (8 * k));
    block(h, last);
    if (total == 128) block(h, last + 64);
    for (int k = 0; k < 8; k++) {
        out[4 * k] = h[k] >> 24; out[4 * k + 1] = h[k] >> 16; out[4 * k + 2] = h[k] >> 8; out[4 * k + 3] = h[k];
    }
}

static int leading_zero_bits(const unsigned char d[32]) {
    int n = 0;
    for (int i = 0; i < 32; i++) {
        if (d[i] == 0) { n += 8; continue; }
        for (int b = 7; b >= 0 && !(d[i] >> b & 1); b--) n++;
        break;
    }
    return n;
}

int main(int argc, char **argv) {
    if (argc < 5) shoal_die("usage: pow PREFIX DIFFICULTY START COUNT");
    const char *prefix = argv[1];
    long long difficulty = shoal_arg_ll(argc, argv, 2, "difficulty");
    long long start = shoal_arg_ll(argc, argv, 3, "start");
    long long count = shoal_arg_ll(argc, argv, 4, "count");
    if (difficulty < 0 || difficulty > 256 || start < 0 || count < 0) shoal_die("bad arguments");
    size_t plen = strlen(prefix);
    if (plen > 4000) shoal_die("prefix too long");
    unsigned char msg[4100], digest[32];
    memcpy(msg, prefix, plen);
    for (long long n = start; n < start + count; n++) {
        int len = snprintf((char *)msg + plen, 24, "%lld", n);
        sha256(msg, plen + (size_t)len, digest);
        if (leading_zero_bits(digest) >= difficulty) {
            printf("%lld ", n);
            for (int i = 0; i < 32; i++) printf("%02x", digest[i]);
            printf("\n");
            return 0;
        }
    }
    printf("none\n");
    return 0;
}
