/* mandelbrot WIDTH HEIGHT TILE_SIZE TILE_X TILE_Y MAX_ITER [CX CY SCALE]
 *
 * Renders one TILE_SIZE x TILE_SIZE tile (clipped at the image edge) of a WIDTH x HEIGHT image of
 * the Mandelbrot set centred on (CX, CY) with SCALE units per image width. Output: raw RGB pixels,
 * row-major, 3 bytes each, for the tile only. The stitcher joins tiles into a PNG. */
#include <math.h>
#include "shoal_task.h"

static void colour(int it, int max_iter, double zr, double zi, unsigned char *px) {
    if (it >= max_iter) {
        px[0] = px[1] = px[2] = 0;
        return;
    }
    /* smooth colouring */
    double mod = sqrt(zr * zr + zi * zi);
    double mu = it + 1 - log(log(mod)) / log(2.0);
    double t = mu / max_iter;
    if (t < 0) t = 0;
    if (t > 1) t = 1;
    double s = sqrt(t);
    px[0] = (unsigned char)(9 * (1 - s) * s * s * s * 255);
    px[1] = (unsigned char)(15 * (1 - s) * (1 - s) * s * s * 255);
    px[2] = (unsigned char)(8.5 * (1 - s) * (1 - s) * (1 - s) * s * 255);
}

int main(int argc, char **argv) {
    long long width = shoal_arg_ll(argc, argv, 1, "width");
    long long height = shoal_arg_ll(argc, argv, 2, "height");
    long long tile = shoal_arg_ll(argc, argv, 3, "tile size");
    long long tx = shoal_arg_ll(argc, argv, 4, "tile x");
    long long ty = shoal_arg_ll(argc, argv, 5, "tile y");
    int max_iter = (int)shoal_arg_ll(argc, argv, 6, "max iterations");
    double cx = argc > 7 ? shoal_arg_f(argc, argv, 7, "centre x") : -0.743643887037151;
    double cy = argc > 8 ? shoal_arg_f(argc, argv, 8, "centre y") : 0.131825904205330;
    double scale = argc > 9 ? shoal_arg_f(argc, argv, 9, "scale") : 0.0035;
    if (width <= 0 || height <= 0 || tile <= 0 || max_iter <= 0 || width > 1 << 16 || height > 1 << 16)
        shoal_die("width, height, tile size and max iterations must be positive (and at most 65536)");
    long long x0 = tx * tile, y0 = ty * tile;
    if (tx < 0 || ty < 0 || x0 >= width || y0 >= height) shoal_die("tile is outside the image");
    long long w = (x0 + tile > width ? width - x0 : tile);
    long long h = (y0 + tile > height ? height - y0 : tile);
    unsigned char *out = malloc((size_t)(w * h * 3));
    if (!out) shoal_die("out of memory");
    double px_size = scale / (double)width;
    for (long long y = 0; y < h; y++) {
        double ci = cy + ((double)(y0 + y) - height / 2.0) * px_size;
        for (long long x = 0; x < w; x++) {
            double cr = cx + ((double)(x0 + x) - width / 2.0) * px_size;
            double zr = 0, zi = 0, zr2 = 0, zi2 = 0;
            int it = 0;
            while (it < max_iter && zr2 + zi2 <= 256.0) {
                zi = 2 * zr * zi + ci;
                zr = zr2 - zi2 + cr;
                zr2 = zr * zr;
                zi2 = zi * zi;
                it++;
            }
            colour(it, max_iter, zr, zi, out + 3 * (y * w + x));
        }
    }
    shoal_write(out, (size_t)(w * h * 3));
    return 0;
}
