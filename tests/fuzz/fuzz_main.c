/* The plain driver of a fuzz target (fuzz.h), for `make check`: a fixed
 * number of inputs (argv[1], default 100000) from a fixed seed. */
#include <stdio.h>
#include <stdlib.h>

#include "fuzz.h"

static uint32_t rng = 2463534242u;

uint32_t fuzz_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 17;
    rng ^= rng << 5;
    return rng;
}

int main(int argc, char **argv)
{
    unsigned long iters = argc > 1 ? strtoul(argv[1], NULL, 10) : 100000;
    static unsigned char buf[64 * 1024];

    for (unsigned long i = 0; i < iters; ++i)
        LLVMFuzzerTestOneInput(buf, fuzz_make_input(buf, sizeof(buf)));
    printf("%s: %lu inputs: %s\n", fuzz_name, iters, fuzz_checked);
    return 0;
}
