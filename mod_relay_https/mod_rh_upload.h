/* A push or duplex request body on its way to the core's push socket: read
 * without blocking, so that the thread can watch the client and the core while
 * it waits, and held to a minimum of progress: a frame that has started must
 * arrive whole within RelayFrameTimeout, and a whole frame (heartbeats count)
 * must come at least every RH_BODY_GAP_S. Only time spent waiting for the
 * client counts: a body held back because the core (the target) takes nothing
 * is not slow. httpd glue. */
#ifndef MOD_RH_UPLOAD_H
#define MOD_RH_UPLOAD_H

#include <poll.h>
#include <httpd.h>
#include <apr_buckets.h>

#define RH_UPLOAD_BUF (64 * 1024)
#define RH_UPLOAD_IOV 64            /* buckets per sendmsg to the core */
/* What is read from the client before it goes to the core, when the client
 * has that much at once: mod_ssl hands at most 8 KiB per read, and a sendmsg
 * per 8 KiB was a wake-up, an epoll_wait and a recv of the core each */
#define RH_UPLOAD_GATHER (64 * 1024)
/* ... and up to four frames while the bytes come in transient buckets
 * (mod_ssl's), which are copied into the upload's own gather buffer: a bulk
 * upload then costs the core one wake, one recv and one send per 256 KiB
 * (docs/BENCHMARKS.md, item 16) */
#define RH_UPLOAD_GATHER_BULK (256 * 1024)

/* Where the bytes of transient buckets wait for the core: mod_ssl's point
 * into a buffer that its next read reuses. Setting them aside the APR way
 * copies each into a block of the connection's allocator, which with a low
 * MaxMemFree is unmapped when freed and mapped again for the next one (two
 * system calls per 24 KiB of an upload with MaxMemFree 64). malloc'd while
 * the body moves, freed when it stops (and at the end of the request). */
typedef struct rh_gather {
    unsigned char *buf;             /* RH_UPLOAD_GATHER_BULK bytes, or NULL */
    apr_size_t len;                 /* used; the waiting buckets point into it */
} rh_gather;

typedef struct rh_upload {
    request_rec *r;
    int fd;                         /* the core's push socket */
    apr_bucket_brigade *in;         /* read from the client, not yet taken by the core */
    apr_bucket_brigade *tmp;        /* ... the latest read, before it joins in */
    apr_size_t pend_len;            /* ... its bytes */
    rh_gather *g;                   /* ... those of transient buckets (pool-owned) */
    int eos;                        /* the whole body was read */
    int drained;                    /* the last move found no more input: the
                                       next would only read nothing again */
    apr_size_t took;                /* bytes the last move read */
    int core_done;                  /* the core took no more (it answered) */
    /* frame progress */
    unsigned hdr_have;
    unsigned char hdr[4];
    apr_size_t remain;              /* payload bytes of the current frame still to come */
    long frame_waited;              /* ms waited on the client inside the current frame */
    long gap_waited;                /* ms waited on the client since the last whole frame */
    long frame_ms, gap_ms;          /* the limits */
    apr_size_t mem_free;            /* what the connection's allocator keeps
                                       freed: MaxMemFree, or a duplex's lift
                                       (mod_rh_keepfree.h); 0: no limit */
} rh_upload;

void rh_upload_init(rh_upload *u, request_rec *r, int core_fd, long frame_ms, long gap_ms);

/* Moves what can move without blocking: 1 when something moved, 0 when it has
 * to wait, -1 when the body broke (client gone, cut, read error). */
int rh_upload_move(rh_upload *u);

/* Takes bytes of the body read before the core took the push (set aside
 * in the request's pool) as the first to send: 0, or -1 on an unreadable bucket. */
int rh_upload_preload(rh_upload *u, apr_bucket_brigade *bb);

/* 1 while bytes wait for the core (then the wait is on the core, not the
 * client); not the bytes of a started frame held for the rest of it. */
int rh_upload_pending(const rh_upload *u);

/* The descriptor to wait on: the client input cfd, or the core's socket while
 * bytes wait for room. Returns how many entries it filled (0 or 1). */
int rh_upload_pollfd(const rh_upload *u, int cfd, struct pollfd *pf);

/* Milliseconds the client may still take before a progress limit is hit. */
long rh_upload_allowance(const rh_upload *u);

/* Counts ms waited on the client; returns -1 when a limit is now exceeded. */
int rh_upload_waited(rh_upload *u, long ms);

/* What the bytes of a started frame may wait for the rest of it: 64 KiB
 * (RH_UPLOAD_GATHER), or a quarter of what the connection keeps freed
 * (u->mem_free) when that is lower: past it APR gives freed memory back at
 * once, and Debian's APR unmaps it, so holding 64 KiB of buckets with
 * MaxMemFree 64 cost an mmap and a munmap more per 36 KiB of a duplex upload
 * (docs/BENCHMARKS.md, item 13). */
apr_size_t rh_upload_hold_max(const rh_upload *u);


/* The body waits for the client for a while (a parked request): the gather
 * buffer goes, unless bytes wait in it. */
void rh_upload_rest(rh_upload *u);

/* 1 while a frame has started and not arrived whole. */
int rh_upload_in_frame(const rh_upload *u);

/* 1 inside a D frame of a length the core accepts, its rest still to come:
 * what is held back for it (anything else goes to the core at once, so that a
 * bad frame is refused as soon as its header is in). */
int rh_upload_mid_data(const rh_upload *u);

#endif
