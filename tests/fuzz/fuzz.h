/* The fuzz targets' plain driver (fuzz_main.c): without libFuzzer, each
 * target makes its own inputs from fuzz_rand() and main() runs them. */
#ifndef RH_FUZZ_H
#define RH_FUZZ_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#ifndef RH_LIBFUZZER
extern const char *const fuzz_name;     /* e.g. "fuzz_frame" */
extern const char *const fuzz_checked;  /* what every input was checked for */
/* One input into b (at most cap bytes): its length. */
size_t fuzz_make_input(unsigned char *b, size_t cap);
/* xorshift32 from a fixed seed: the same inputs on every run. */
uint32_t fuzz_rand(void);
#endif

#endif
