/* stitch WIDTH HEIGHT TILE_SIZE
 *
 * Inputs: the RGB tiles of a WIDTH x HEIGHT image, row of tiles by row of tiles, each as
 * `mandelbrot` writes it. Output: the whole image as a PNG file (deflate "stored" blocks, so no
 * compression library is needed; CRC-32 and Adler-32 are computed here). */
#include "shoal_task.h"

static uint32_t crc_table[256];

static void crc_init(void) {
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[n] = c;
    }
}

static uint32_t crc_update(uint32_t crc, const unsigned char *buf, size_t len) {
    for (size_t i = 0; i < len; i++) crc = crc_table[(crc ^ buf[i]) & 0xff] ^ (crc >> 8);
    return crc;
}

static void put_be32(unsigned char *p, uint32_t v) {
    p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v;
}

static void chunk(const char *type, const unsigned char *data, size_t len) {
    unsigned char hdr[8];
    put_be32(hdr, (uint32_t)len);
    memcpy(hdr + 4, type, 4);
    shoal_write(hdr, 8);
    if (len) shoal_write(data, len);
    uint32_t crc = crc_update(0xffffffffu, (const unsigned char *)type, 4);
    crc = crc_update(crc, data, len) ^ 0xffffffffu;
    unsigned char c[4];
    put_be32(c, crc);
    shoal_write(c, 4);
}

int main(int argc, char **argv) {
    long long width = shoal_arg_ll(argc, argv, 1, "width");
    long long height = shoal_arg_ll(argc, argv, 2, "height");
    long long tile = shoal_arg_ll(argc, argv, 3, "tile size");
    if (width <= 0 || height <= 0 || tile <= 0 || width > 1 << 16 || height > 1 << 16)
        shoal_die("width, height and tile size must be positive (and at most 65536)");
    long long tiles_x = (width + tile - 1) / tile, tiles_y = (height + tile - 1) / tile;
    shoal_inputs in = shoal_read_inputs();
    if ((long long)in.count != tiles_x * tiles_y) {
        fprintf(stderr, "expected %lld tiles, got %zu inputs\n", tiles_x * tiles_y, in.count);
        return 2;
    }
    size_t stride = (size_t)width * 3 + 1; /* filter byte + RGB */
    size_t raw_len = stride * (size_t)height;
    unsigned char *raw = calloc(raw_len, 1);
    if (!raw) shoal_die("out of memory");
    for (long long ty = 0; ty < tiles_y; ty++)
        for (long long tx = 0; tx < tiles_x; tx++) {
            long long x0 = tx * tile, y0 = ty * tile;
            long long w = x0 + tile > width ? width - x0 : tile;
            long long h = y0 + tile > height ? height - y0 : tile;
            shoal_bytes t = in.items[ty * tiles_x + tx];
            if ((long long)t.len != w * h * 3) {
                fprintf(stderr, "tile (%lld,%lld) has %zu bytes, expected %lld\n", tx, ty, t.len, w * h * 3);
                return 2;
            }
            for (long long y = 0; y < h; y++)
                memcpy(raw + (size_t)(y0 + y) * stride + 1 + (size_t)x0 * 3, t.data + (size_t)(y * w * 3), (size_t)(w * 3));
        }
    crc_init();
    static const unsigned char sig[8] = {137, 80, 78, 71, 13, 10, 26, 10};
    shoal_write(sig, 8);
    unsigned char ihdr[13];
    put_be32(ihdr, (uint32_t)width);
    put_be32(ihdr + 4, (uint32_t)height);
    ihdr[8] = 8; ihdr[9] = 2; ihdr[10] = 0; ihdr[11] = 0; ihdr[12] = 0;
    chunk("IHDR", ihdr, 13);
    /* zlib stream of stored blocks */
    size_t blocks = (raw_len + 65534) / 65535;
    size_t z_len = 2 + blocks * 5 + raw_len + 4;
    unsigned char *z = malloc(z_len);
    if (!z) shoal_die("out of memory");
    size_t o = 0;
    z[o++] = 0x78; z[o++] = 0x01;
    uint32_t a = 1, b = 0;
    for (size_t off = 0; off < raw_len; off += 65535) {
        size_t n = raw_len - off > 65535 ? 65535 : raw_len - off;
        z[o++] = (off + n == raw_len) ? 1 : 0;
        z[o++] = n & 0xff; z[o++] = n >> 8;
        z[o++] = ~n & 0xff; z[o++] = (~n >> 8) & 0xff;
        memcpy(z + o, raw + off, n);
        for (size_t i = 0; i < n; i++) {
            a = (a + raw[off + i]) % 65521;
            b = (b + a) % 65521;
        }
        o += n;
    }
    put_be32(z + o, (b << 16) | a);
    o += 4;
    chunk("IDAT", z, o);
    chunk("IEND", NULL, 0);
    return 0;
}
