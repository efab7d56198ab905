/* relay-https client: the watch (docs/PROTOCOL.md, watch): a route's idle
 * batch tunnels wait in one long-poll that answers which sessions have down
 * bytes. This file is the pure part: the answer's parser and a watch group's
 * set and clock (who is in it, whether the watch in flight covers them all,
 * when the next watch goes). The requests and the tunnels are rhc_xp_watch.c's. */
#ifndef RHC_WATCH_H
#define RHC_WATCH_H

#include <stddef.h>
#include <stdint.h>

#include "rh_proto.h"

/* An answer line is "<session id> SP <state> LF": at most RH_WATCH_MAX of them. */
#define RHC_WATCH_ANSWER_LINE (RH_SID_LEN + 1 + 4 + 1)
#define RHC_WATCH_ANSWER_MAX  (RH_WATCH_MAX * RHC_WATCH_ANSWER_LINE)

struct rhc_watch_hit {
    char sid[RH_SID_LEN + 1];   /* lowercase hex */
    int gone;                   /* RH_WATCH_GONE, else RH_WATCH_DATA */
};

/* Parses an answer body strictly: lines of 16 lowercase hex, a space, "data"
 * or "gone", LF; no other byte, no session twice, at most cap lines. 0 with
 * *n hits sorted by id, or -1 (malformed: the watch failed). */
int rhc_watch_parse(const char *body, size_t len, struct rhc_watch_hit *hits, size_t cap,
                    size_t *n);

/* What the sorted hits say of sid: -1 nothing, 0 data, 1 gone. */
int rhc_watch_find(const struct rhc_watch_hit *hits, size_t n, const char *sid);

/* One watch group: at most RH_WATCH_MAX members; its watch in flight (if
 * any) lists the members covered by it. A member is an opaque pointer. */
struct rhc_wmember {
    void *who;
    int covered;                /* listed in the watch in flight */
};

struct rhc_wgroup {
    struct rhc_wmember *m;
    size_t n, cap;
    size_t ncovered;
    int inflight;               /* a watch of this group is out (the current one) */
    int64_t last_send;          /* the last watch went then (0: never) */
    int64_t retry_at;           /* none before then (after a failure) */
};

/* Adds who; *idx is its place (until a leave moves it). -1: full or out of memory. */
int rhc_wgroup_join(struct rhc_wgroup *g, void *who, size_t *idx);

/* Takes out the member at idx; returns the member moved into idx (the last
 * one), whose place is now idx, or NULL. */
void *rhc_wgroup_leave(struct rhc_wgroup *g, size_t idx);

/* A new watch is due now: members not covered (or none out), the last one
 * went at least RH_WATCH_JOIN_MS ago, and no failure's wait is running. */
int rhc_wgroup_due(const struct rhc_wgroup *g, int64_t now);

/* When rhc_wgroup_due becomes true, if nothing else happens; -1: never. */
int64_t rhc_wgroup_next(const struct rhc_wgroup *g);

/* A watch listing every member went out now (it supersedes the one before). */
void rhc_wgroup_sent(struct rhc_wgroup *g, int64_t now);

/* The current watch is over (answered, failed or given up): nobody is
 * covered; a new one may go at retry_at (0: as the join rate allows), or at
 * once when at_once (it named members, which left: the others, maybe ready
 * at the same moment on another relay core, are watched again without the
 * join rate's wait; each such renewal follows a wake, so they cannot run
 * away). */
void rhc_wgroup_ended(struct rhc_wgroup *g, int64_t retry_at, int at_once);

void rhc_wgroup_free(struct rhc_wgroup *g);

#endif
