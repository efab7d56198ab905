/* relay-https client: how the end of a push, pull or duplex is judged. The
 * classifiers are pure: from the answer (struct rhc_req: status, Relay-Offset,
 * frames seen), the curl result and what the tunnel knows (struct rhc_facts)
 * they say what happens next (struct rhc_outcome); the *_done functions of the
 * rhc_xp_*.c files act on that. */
#ifndef RHC_OUTCOME_H
#define RHC_OUTCOME_H

#include <stdint.h>
#include <curl/curl.h>

#include "rhc_req.h"

enum rhc_verdict {
    RHC_OUT_OK,         /* answered as hoped (from: the offset confirmed) */
    RHC_OUT_DONE,       /* the up direction is complete (F confirmed) */
    RHC_OUT_RETRY,      /* the request goes again (from, after delay ms) */
    RHC_OUT_REWIND,     /* up bytes go again from `from` (what the server has) */
    RHC_OUT_FALLBACK,   /* another transport carries on */
    RHC_OUT_RESTART,    /* nothing exchanged yet: a new session */
    RHC_OUT_LOST,       /* the session is lost (why says how) */
    RHC_OUT_FAIL_HTTP,  /* an answer we cannot go on with: fail_http */
    RHC_OUT_FAIL_CURL   /* a curl error we cannot go on with: fail_curl */
};

enum rhc_cause {
    RHC_WHY_NONE,
    RHC_WHY_PARK,       /* stream push ended because idle */
    RHC_WHY_REFRESH,    /* stream push ended to learn the server's offset */
    RHC_WHY_ENDED,      /* stream push ended for a switch to batch */
    RHC_WHY_TOO_LONG,   /* 413 after bytes went through: shorter bodies */
    RHC_WHY_BUSY,       /* 503 / 429 */
    RHC_WHY_REFUSED,    /* 409 */
    RHC_WHY_FIN_HAD,    /* 409 fin: an earlier push had it all */
    RHC_WHY_HAD_IT,     /* batch 409: the server had this push already */
    RHC_WHY_CUT_ON_WAY, /* 400 with the server's offset: body cut on the way */
    RHC_WHY_CUT,        /* cut before an answer */
    RHC_WHY_RESUME,     /* response cut: resume on a new connection */
    RHC_WHY_BODY_LIMIT, /* auto: 413 on a streamed body: batch */
    RHC_WHY_BODY_CUT,   /* auto: streamed bodies cut before a byte was confirmed */
    RHC_WHY_NO_DUPLEX,  /* 501/404/405 on duplex: stream */
    RHC_WHY_SPLIT,      /* batch 413: the push is split */
    RHC_WHY_SHORT,      /* batch 200 for less than the push carried */
    RHC_WHY_TOO_MANY,   /* batch: refused or cut too often */
    RHC_WHY_PROTO,      /* the server confirms bytes never sent */
    RHC_WHY_H2_RESETS,  /* duplex reset unanswered too often */
    RHC_WHY_NO_END,     /* response ended without F or E */
    RHC_WHY_SECOND_PULL,/* 409: the given-up pull is still held: start over */
    RHC_WHY_HELD,       /* 409: the given-up pull is held and will stay */
    RHC_WHY_LOST_416,   /* 416: down bytes lost with the given-up pull */
    RHC_WHY_GATEWAY     /* 502/504 not from the module: a gateway lost the server */
};

/* What the tunnel knows when a request ends. */
struct rhc_facts {
    uint64_t read;          /* up: offset after the last byte read locally */
    uint64_t sent, acked;   /* up: handed to pushes, confirmed by the server */
    uint64_t down_off;      /* down: bytes received */
    int eof;                /* up: local EOF seen */
    int autox;              /* --transport auto */
    int resume;             /* the server keeps bytes until acknowledged */
    int can_retry;          /* retry_ok() for this request's counter */
    int unanswered_ok;      /* down: unanswered_retry_ok() */
    unsigned retries;       /* refusals or cuts in a row of this direction */
    int switched_pull;      /* a stream pull was given up */
    int up_hold;            /* no up byte went out yet */
    unsigned restarts;      /* sessions started over */
    int up_on_it;           /* duplex: it carries the up direction too */
    unsigned h2_resets;     /* duplex: unanswered resets in a row so far */
    int slots_full;         /* batch: no slot free for a split */
};

struct rhc_outcome {
    enum rhc_verdict v;
    enum rhc_cause why;
    uint64_t from;          /* the offset things go on from */
    uint64_t ack;           /* up bytes below this are confirmed first (0: none) */
    int64_t delay;          /* ms until the next try; -1: none */
    size_t split;           /* batch 413: data bytes the push keeps (0: no split) */
    int h2_reset;           /* duplex: counts as one more unanswered reset */
};

void rhc_classify_spush(const struct rhc_req *r, CURLcode rc, const struct rhc_facts *f,
                        struct rhc_outcome *o);
void rhc_classify_bpush(const struct rhc_req *r, CURLcode rc, const struct rhc_facts *f,
                        struct rhc_outcome *o);
void rhc_classify_duplex(const struct rhc_req *r, CURLcode rc, const struct rhc_facts *f,
                         struct rhc_outcome *o);
void rhc_classify_pull(const struct rhc_req *r, CURLcode rc, const struct rhc_facts *f,
                       struct rhc_outcome *o);

/* Data bytes a batch push keeps after a 413 on a body of p_len bytes carrying
 * data bytes: what fits the largest power of two below the body (limits are
 * 1m, 2m...), else half the data; never below BATCH_DATA_MIN. */
size_t rhc_split_size(size_t p_len, size_t data);

#endif
