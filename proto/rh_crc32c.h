/* CRC32C (Castagnoli, reflected polynomial 0x82F63B78), as in iSCSI and SCTP.
 * httpd-independent: C99 + POSIX threads (for the one-time table set-up).
 * On x86_64 the SSE4.2 crc32 instruction is used when the CPU has it (chosen
 * at run time, so the build needs no -msse4.2); elsewhere slicing-by-8. */
#ifndef RH_CRC32C_H
#define RH_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* The CRC of the bytes so far (crc, 0 for none) extended by buf[0..len).
 * The pre/post inversion is done inside, so calls chain:
 * rh_crc32c(rh_crc32c(0, a, n), b, m) == rh_crc32c(0, a||b, n + m). */
uint32_t rh_crc32c(uint32_t crc, const void *buf, size_t len);

/* The same, always in software (for tests and comparisons). */
uint32_t rh_crc32c_sw(uint32_t crc, const void *buf, size_t len);

/* 1 when rh_crc32c uses the hardware instruction on this machine. */
int rh_crc32c_uses_hw(void);

#endif
