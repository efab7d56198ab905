/* Down bytes as buckets (see mod_rh_buckets.h): transient buckets over one
 * reused buffer on HTTP/1.1, heap buckets of httpd's own size on HTTP/2. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/ioctl.h>
#include <sys/uio.h>

#include "mod_rh_buckets.h"

#define DOWN_BLOCK      8000        /* httpd's own bucket size (APR_BUCKET_BUFF_SIZE) */
#define DOWN_NBLOCKS    8           /* blocks filled by one read: about PULL_BUF */

/* Down bytes on HTTP/2 become heap buckets of httpd's own size, filled by one
 * readv. mod_http2 sets every bucket aside and copies it into the connection's
 * own: a 64 KiB block per read on both sides is what MaxMemFree makes APR unmap
 * when freed and fault in again on the next read, and that halved duplex
 * throughput. The blocks are malloc'd, not APR's: with MaxMemFree 64 the
 * stream's allocator (mod_http2's, which the handler does not own) unmapped
 * even 8000-byte blocks, one mmap and munmap per block of a download, while
 * malloc keeps them for the next read. Blocks not filled wait for the next read. HTTP/1.1 writes what it is given at once (each
 * read ends in a flush): there one reused buffer, in transient buckets, makes
 * fewer and fuller TLS records. */
struct rh_blocks {
    apr_bucket_alloc_t *ba;
    int h2;                     /* blocks (HTTP/2), else the transient buffer */
    char *buf;                  /* HTTP/1.1: PULL_COALESCE reads of PULL_BUF ... */
    apr_size_t small;           /* ... or one of this many bytes (0: not small) */
    char *blk[DOWN_NBLOCKS];
};

void rh_blocks_free(rh_blocks *bk)
{
    for (int i = 0; i < DOWN_NBLOCKS; ++i)
        if (bk->blk[i]) {
            free(bk->blk[i]);
            bk->blk[i] = NULL;
        }
}

void rh_blocks_release(rh_blocks *bk)
{
    rh_blocks_free(bk);
    free(bk->buf);
    bk->buf = NULL;
}

static apr_status_t blocks_cleanup(void *data)
{
    rh_blocks_release(data);
    return APR_SUCCESS;
}

rh_blocks *rh_blocks_make(request_rec *r)
{
    rh_blocks *bk = apr_pcalloc(r->pool, sizeof(*bk));
    bk->ba = r->connection->bucket_alloc;
    bk->h2 = r->connection->master != NULL;
    apr_pool_cleanup_register(r->pool, bk, blocks_cleanup, apr_pool_cleanup_null);
    return bk;
}

void rh_blocks_size(rh_blocks *bk, apr_off_t total)
{
    bk->small = total > 0 && total < PULL_BUF ? (apr_size_t)total : 0;
}

/* HTTP/1.1: one recv into the slot's part of the buffer, as a transient bucket. */
static ssize_t read_transient(rh_blocks *bk, int fd, apr_bucket_brigade *bb, apr_size_t max,
                              int slot)
{
    ssize_t got;
    /* a small response is read whole by its first read of each flush */
    if (bk->small && (slot || max > bk->small))
        return -EAGAIN;
    /* allocated on first use, so that a parked pull can give it back */
    if (!bk->buf && !(bk->buf = malloc(bk->small ? bk->small : PULL_BUF * PULL_COALESCE)))
        return -ENOMEM;
    char *at = bk->buf + (apr_size_t)slot * PULL_BUF;
    do
        got = recv(fd, at, max < PULL_BUF ? max : PULL_BUF, MSG_DONTWAIT);
    while (got < 0 && errno == EINTR);
    if (got <= 0)
        return got < 0 ? -errno : 0;
    APR_BRIGADE_INSERT_TAIL(bb, apr_bucket_transient_create(at, (apr_size_t)got, bk->ba));
    return got;
}

/* HTTP/2: one recvmsg into as many blocks as what is there needs; each block
 * filled becomes a heap bucket, those left over move up for the next read. */
static ssize_t read_heap(rh_blocks *bk, int fd, apr_bucket_brigade *bb, apr_size_t max)
{
    struct iovec iov[DOWN_NBLOCKS];
    struct msghdr mh;
    int n = 0, used = 0;
    apr_size_t want = 0;
    ssize_t got;

    /* blocks only for what is there: a read that finds nothing must not
     * allocate (and the wait after it free) a block set every time round */
    int avail = 0;
    if (ioctl(fd, FIONREAD, &avail) == 0 && avail == 0) {
        char c;
        do
            got = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
        while (got < 0 && errno == EINTR);
        if (got <= 0)
            return got < 0 ? -errno : 0;
        avail = 1;
    }
    if (avail > 0 && (apr_size_t)avail < max)
        max = (apr_size_t)avail;
    while (n < DOWN_NBLOCKS && want < max) {
        if (!bk->blk[n] && !(bk->blk[n] = malloc(DOWN_BLOCK)))
            break;
        iov[n].iov_base = bk->blk[n];
        iov[n].iov_len = max - want < DOWN_BLOCK ? max - want : DOWN_BLOCK;
        want += iov[n++].iov_len;
    }
    if (!n)
        return -ENOMEM;
    memset(&mh, 0, sizeof(mh));
    mh.msg_iov = iov;
    mh.msg_iovlen = (size_t)n;
    do
        got = recvmsg(fd, &mh, MSG_DONTWAIT);
    while (got < 0 && errno == EINTR);
    if (got <= 0)
        return got < 0 ? -errno : 0;
    for (apr_size_t left = (apr_size_t)got; left; ++used) {
        apr_size_t l = left < iov[used].iov_len ? left : iov[used].iov_len;
        APR_BRIGADE_INSERT_TAIL(bb, apr_bucket_heap_create(bk->blk[used], l, free,
                                                           bk->ba));
        left -= l;
    }
    for (int i = 0; i < DOWN_NBLOCKS; ++i)
        bk->blk[i] = i + used < DOWN_NBLOCKS ? bk->blk[i + used] : NULL;
    return got;
}

ssize_t rh_read_blocks(rh_blocks *bk, int fd, apr_bucket_brigade *bb, apr_size_t max,
                       int slot)
{
    return bk->h2 ? read_heap(bk, fd, bb, max) : read_transient(bk, fd, bb, max, slot);
}
