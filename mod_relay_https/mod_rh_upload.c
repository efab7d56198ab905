/* Request bodies to the core without blocking, with progress required
 * (see rh_upload.h). The frames are only counted here, never interpreted:
 * the core parses them. */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <apr_strings.h>
#include <httpd.h>
#include <http_log.h>
#include <mpm_common.h>
#include <util_filter.h>

#include "mod_rh_private.h"
#include "rh_frame.h"
#include "mod_rh_upload.h"

static apr_status_t gather_free(void *data)
{
    rh_gather *g = data;
    free(g->buf);
    g->buf = NULL;
    g->len = 0;
    return APR_SUCCESS;
}

void rh_upload_init(rh_upload *u, request_rec *r, int core_fd, long frame_ms, long gap_ms)
{
    memset(u, 0, sizeof(*u));
    u->r = r;
    u->fd = core_fd;
    u->in = apr_brigade_create(r->pool, r->connection->bucket_alloc);
    u->tmp = apr_brigade_create(r->pool, r->connection->bucket_alloc);
    u->g = apr_pcalloc(r->pool, sizeof(*u->g));
    apr_pool_cleanup_register(r->pool, u->g, gather_free, apr_pool_cleanup_null);
    /* room for a whole gather in the socket (the kernel doubles this, and
     * caps it at net.core.wmem_max, 208 KiB by default: still 416 KiB), so
     * that the core gets it in one piece; the default of 208 KiB took a
     * sendmsg of 256 KiB in part, and the rest went in a second */
    int sb = RH_UPLOAD_GATHER_BULK;
    (void)setsockopt(core_fd, SOL_SOCKET, SO_SNDBUF, &sb, sizeof(sb));
    u->frame_ms = frame_ms;
    u->gap_ms = gap_ms;
    u->mem_free = ap_max_mem_free;
}

int rh_upload_in_frame(const rh_upload *u)
{
    return u->hdr_have > 0 || u->remain > 0;
}

int rh_upload_mid_data(const rh_upload *u)
{
    return u->hdr_have == 0 && u->remain > 0 && u->remain <= RH_FRAME_MAX &&
           u->hdr[0] == RH_FRAME_DATA;
}

/* Counts the frames in bytes the client sent: a whole one resets the clocks. */
static void scan(rh_upload *u, const unsigned char *p, apr_size_t n)
{
    while (n) {
        if (u->remain) {
            apr_size_t k = n < u->remain ? n : u->remain;
            u->remain -= k;
            p += k;
            n -= k;
        } else {
            u->hdr[u->hdr_have++] = *p++;
            --n;
            if (u->hdr_have < RH_FRAME_HDR)
                continue;
            u->hdr_have = 0;
            u->remain = ((apr_size_t)u->hdr[1] << 16) | ((apr_size_t)u->hdr[2] << 8) | u->hdr[3];
        }
        if (!u->remain && !u->hdr_have)
            u->frame_waited = u->gap_waited = 0;    /* a whole frame */
    }
}

/* Counts the frames in the data buckets of bb (a read just made) and what
 * they hold; drops the metadata buckets (EOS: the body is whole). -1 on an
 * unreadable bucket. */
static int scan_brigade(rh_upload *u, apr_bucket_brigade *bb)
{
    apr_bucket *b = APR_BRIGADE_FIRST(bb);

    while (b != APR_BRIGADE_SENTINEL(bb)) {
        apr_bucket *next = APR_BUCKET_NEXT(b);
        const char *data;
        apr_size_t len;
        if (APR_BUCKET_IS_METADATA(b)) {
            if (APR_BUCKET_IS_EOS(b))
                u->eos = 1;
            apr_bucket_delete(b);
        } else if (apr_bucket_read(b, &data, &len, APR_BLOCK_READ) != APR_SUCCESS) {
            return -1;
        } else if (!len) {
            apr_bucket_delete(b);
        } else {
            scan(u, (const unsigned char *)data, len);
            u->pend_len += len;
        }
        b = next;
    }
    return 0;
}

/* Copies a transient bucket's bytes into the gather buffer, where the bucket
 * then points (immortal: nothing to free); 0, or -1 when they do not fit. */
static int gather(rh_gather *g, apr_bucket *b)
{
    const char *data;
    apr_size_t len;
    if (apr_bucket_read(b, &data, &len, APR_BLOCK_READ) != APR_SUCCESS
        || len > RH_UPLOAD_GATHER_BULK - g->len
        || (!g->buf && !(g->buf = malloc(RH_UPLOAD_GATHER_BULK))))
        return -1;
    memcpy(g->buf + g->len, data, len);
    apr_bucket_immortal_make(b, (const char *)g->buf + g->len, len);
    g->len += len;
    return 0;
}

/* Keeps the bytes still waiting for the core: transient buckets (mod_ssl's)
 * point into a buffer that the next read on the connection reuses; they go
 * to the gather buffer while it has room. */
static void set_aside(rh_upload *u, apr_bucket *from)
{
    for (apr_bucket *b = from; b != APR_BRIGADE_SENTINEL(u->in); b = APR_BUCKET_NEXT(b))
        if (!APR_BUCKET_IS_TRANSIENT(b) || gather(u->g, b) != 0)
            apr_bucket_setaside(b, u->r->pool);
}

/* Nothing waits for the core: the gather buffer is empty again. After a move
 * that took less than RH_UPLOAD_GATHER (no bulk upload) it goes: a body that
 * idles between keystrokes holds none. */
static void gather_idle(rh_upload *u, apr_size_t took)
{
    if (u->pend_len)
        return;
    u->g->len = 0;
    if (took < RH_UPLOAD_GATHER)
        gather_free(u->g);
}

void rh_upload_rest(rh_upload *u)
{
    if (!u->pend_len)
        gather_free(u->g);
}

/* 1 while more may be read before the bytes go to the core: up to
 * RH_UPLOAD_GATHER_BULK while they go to the gather buffer, as long as it has
 * room for a read of mod_ssl's (AP_IOBUFSIZE: what a send left waits where it
 * is until the core takes it) or what waits is held for the rest of its frame
 * (which then is set aside the APR way); else up to RH_UPLOAD_GATHER (the
 * buckets of other input filters, mod_http2's, stay in the connection's
 * allocator). */
static int gather_more(const rh_upload *u)
{
    if (!u->g->buf)
        return u->pend_len < RH_UPLOAD_GATHER;
    return u->pend_len < RH_UPLOAD_GATHER_BULK
           && (RH_UPLOAD_GATHER_BULK - u->g->len >= AP_IOBUFSIZE || !rh_upload_pending(u));
}

/* Reads what the client has sent, without waiting, behind what waits for
 * the core: 1 read, 0 nothing yet, -1 broken. The bytes stay in the buckets
 * the input filters made: sent to the core from there (writev). */
static int take_input(rh_upload *u)
{
    request_rec *r = u->r;
    set_aside(u, APR_BRIGADE_FIRST(u->in));
    apr_status_t st = ap_get_brigade(r->input_filters, u->tmp, AP_MODE_READBYTES,
                                     APR_NONBLOCK_READ, RH_UPLOAD_BUF);
    if (APR_STATUS_IS_EAGAIN(st)) {
        apr_brigade_cleanup(u->tmp);
        return 0;
    }
    if (st != APR_SUCCESS) {
        ap_log_rerror(APLOG_MARK, APLOG_DEBUG, st, r, RHLOG(2020)
                      "request body ended early (client gone or cut)");
        return -1;
    }
    /* take all of it: a filter may hand more than was asked for */
    apr_size_t before = u->pend_len;
    int eos = u->eos;
    if (scan_brigade(u, u->tmp) != 0)
        return -1;
    APR_BRIGADE_CONCAT(u->in, u->tmp);
    return u->pend_len > before || u->eos > eos;
}

int rh_upload_preload(rh_upload *u, apr_bucket_brigade *bb)
{
    if (scan_brigade(u, bb) != 0)
        return -1;
    APR_BRIGADE_CONCAT(u->in, bb);
    return 0;
}

apr_size_t rh_upload_hold_max(const rh_upload *u)
{
    apr_size_t m = u->mem_free ? u->mem_free / 4 : RH_UPLOAD_GATHER;
    return m < RH_UPLOAD_GATHER ? m : RH_UPLOAD_GATHER;
}

/* Bytes of a frame that has started, fewer than rh_upload_hold_max(u): they
 * wait for the rest of it, which is on its way (the client writes whole
 * frames), instead of going to the core on their own. On HTTP/2 a 16 KiB DATA
 * frame reaches the handler in two pieces (libcurl's frame is 9 bytes longer
 * than a TLS record): each piece was a sendmsg and a wake of the core. */
static int holding(const rh_upload *u)
{
    return u->pend_len > 0 && u->pend_len < rh_upload_hold_max(u) && rh_upload_mid_data(u) &&
           !u->eos && !u->core_done;
}

int rh_upload_pending(const rh_upload *u)
{
    return u->pend_len > 0 && !holding(u);
}

/* The first n bytes of u->in went to the core: their buckets go. What stays
 * is set aside: transient buckets (mod_ssl's) point into a buffer that the
 * next read on the connection reuses. */
static void sent_front(rh_upload *u, apr_size_t n)
{
    apr_bucket *after = NULL;

    if (apr_brigade_partition(u->in, (apr_off_t)n, &after) != APR_SUCCESS)
        after = APR_BRIGADE_SENTINEL(u->in);
    while (APR_BRIGADE_FIRST(u->in) != after)
        apr_bucket_delete(APR_BRIGADE_FIRST(u->in));
    u->pend_len -= n;
    if (!u->pend_len)
        u->g->len = 0;   /* all sent: the gather buffer fills from its start again */
    set_aside(u, after);
}

/* One sendmsg of the waiting buckets (at most RH_UPLOAD_IOV of them). */
static ssize_t send_buckets(rh_upload *u)
{
    struct iovec iov[RH_UPLOAD_IOV];
    struct msghdr mh;
    int n = 0;
    ssize_t got;

    for (apr_bucket *b = APR_BRIGADE_FIRST(u->in);
         b != APR_BRIGADE_SENTINEL(u->in) && n < RH_UPLOAD_IOV; b = APR_BUCKET_NEXT(b)) {
        const char *data;
        apr_size_t len;
        if (apr_bucket_read(b, &data, &len, APR_BLOCK_READ) != APR_SUCCESS)
            return -1;
        iov[n].iov_base = (void *)data;
        iov[n++].iov_len = len;
    }
    memset(&mh, 0, sizeof(mh));
    mh.msg_iov = iov;
    mh.msg_iovlen = (size_t)n;
    do
        got = sendmsg(u->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
    while (got < 0 && errno == EINTR);
    return got;
}

/* Reads while the client has bytes at once, up to gather_more(), then sends
 * them to the core in one sendmsg; an empty read is made once per call (it
 * ends the gathering, and after the send nothing new is expected), unless a
 * frame has started (holding). */
static int move(rh_upload *u)
{
    int moved = 0;

    for (;;) {
        if (!u->drained && gather_more(u) && !u->eos && !u->core_done) {
            apr_size_t before = u->pend_len;
            int rv = take_input(u);
            if (rv < 0)
                return -1;
            u->took += u->pend_len - before;
            if (rv > 0) {
                moved = 1;
                continue;
            }
            u->drained = 1;
        }
        if (!rh_upload_pending(u)) {    /* nothing, or held: read on, or wait */
            if (!u->drained && !u->eos && !u->core_done)
                continue;   /* all sent: read on */
            return moved;
        }
        ssize_t n = send_buckets(u);
        if (n > 0) {
            sent_front(u, (apr_size_t)n);
            moved = 1;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return moved;
        /* the core ended the push (its answer says why): nothing more goes */
        u->core_done = 1;
        apr_brigade_cleanup(u->in);
        u->pend_len = 0;
        return 1;
    }
}

int rh_upload_move(rh_upload *u)
{
    u->drained = 0;
    u->took = 0;
    int rv = move(u);
    gather_idle(u, u->took);
    return rv;
}

int rh_upload_pollfd(const rh_upload *u, int cfd, struct pollfd *pf)
{
    if (rh_upload_pending(u)) {
        *pf = (struct pollfd){ .fd = u->fd, .events = POLLOUT };
        return 1;
    }
    if (u->eos || u->core_done || cfd < 0)
        return 0;
    *pf = (struct pollfd){ .fd = cfd, .events = POLLIN };
    return 1;
}

long rh_upload_allowance(const rh_upload *u)
{
    long a = u->gap_ms - u->gap_waited;
    if (rh_upload_in_frame(u) && u->frame_ms - u->frame_waited < a)
        a = u->frame_ms - u->frame_waited;
    return a > 0 ? a : 0;
}

int rh_upload_waited(rh_upload *u, long ms)
{
    u->gap_waited += ms;
    if (rh_upload_in_frame(u))
        u->frame_waited += ms;
    return rh_upload_allowance(u) > 0 ? 0 : -1;
}
