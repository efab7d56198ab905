/* Down bytes (core -> response) as buckets: read from the core's pull socket
 * straight into the buffers the response's brigade will carry. */
#ifndef MOD_RH_BUCKETS_H
#define MOD_RH_BUCKETS_H

#include <sys/types.h>
#include <httpd.h>
#include <apr_buckets.h>

#define PULL_BUF        (64 * 1024)
#define PULL_COALESCE   4           /* PULL_BUF reads passed on under one flush, at most */

typedef struct rh_blocks rh_blocks;

/* The buffers of one response, given back with the request's pool at the latest. */
rh_blocks *rh_blocks_make(request_rec *r);

/* A response of total bytes at most (a batch answer's length): on HTTP/1.1 a
 * buffer of that size when it is below PULL_BUF, instead of PULL_COALESCE
 * times PULL_BUF (an empty long-poll's answer is 16 bytes; 256 KiB came from
 * mmap, page faults and munmap every time). */
void rh_blocks_size(rh_blocks *bk, apr_off_t total);

/* Gives back the blocks not yet filled: a tunnel that waits holds no buffers. */
void rh_blocks_free(rh_blocks *bk);

/* Gives back every buffer, the HTTP/1.1 one too (a parked pull), once what
 * was read from them has been passed on with a flush. */
void rh_blocks_release(rh_blocks *bk);

/* Reads up to max bytes without blocking and appends them to bb; slot: the
 * how-manieth read under the same flush (0 to PULL_COALESCE - 1). Returns the
 * bytes read, 0 at the end of the stream, or -errno (-EAGAIN: nothing yet). */
ssize_t rh_read_blocks(rh_blocks *bk, int fd, apr_bucket_brigade *bb, apr_size_t max,
                       int slot);

#endif
