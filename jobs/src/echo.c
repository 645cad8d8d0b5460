/* echo: copies its input (all inputs, concatenated) to its output. */
#include "shoal_task.h"

int main(void) {
    size_t len;
    unsigned char *buf = shoal_read_stdin(&len);
    shoal_write(buf, len);
    return 0;
}
