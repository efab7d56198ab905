/* The relay request as the handler's files share it (rh_req), and the
 * endpoints that have a file of their own. Private to the handler. */
#ifndef MOD_RH_REQ_H
#define MOD_RH_REQ_H

#include <httpd.h>
#include <apr_tables.h>

#include "mod_rh_config.h"
#include "mod_rh_wait.h"
#include "rh_registry.h"
#include "rh_util.h"

struct rh_ipc_reply;

typedef struct rh_req {
    request_rec *r;
    const rh_dir_conf *dc;
    const rh_srv_conf *sc;
    rh_watch watch;             /* the client and the core, during every wait */
    const char *target_name;    /* as named in the URL */
    const rh_target *target;    /* its configuration; looked up for open only */
    const char *op;
    rh_slot_view view;
    int shard;              /* the core asked (RelayCoreProcesses); -1 until chosen */
    int old_core;           /* the session lives in the core an upgrade replaced */
    int fd;                 /* to the core */
    struct rh_kept *kept;   /* ... its fate when the request ends (kept or closed) */
    /* bytes sent right behind the request line (a small push's whole body,
     * docs/ARCHITECTURE.md): the connection to the core is then half-closed */
    const char *trail;
    apr_size_t trail_len;
    int cold;               /* the answer will not come soon: park at once */
    /* a parked request (RelayAsync): what follows the core's answer, and the
     * endpoint's own state */
    int (*then)(struct rh_req *q, int rv, struct rh_ipc_reply *rep);
    void *ctx;
} rh_req;

/* A Relay-* header holding a decimal u64: 0, or -1 when missing or malformed. */
static inline int rh_hdr_u64(request_rec *r, const char *name, apr_uint64_t *v)
{
    return rh_parse_u64(apr_table_get(r->headers_in, name), (size_t)-1, v);
}

/* mod_rh_handler.c: an open's terms (everything but the target's address and
 * connect timeout), and the 201 answer with the new session's token. */
#include "rh_ipc.h"
void rh_open_terms(rh_req *q, rh_ipc_req *rq);
int rh_open_answer(rh_req *q, const rh_ipc_req *rq, const char *token);
/* The client's bytes are datagrams (Relay-Datagram: len16): 1, else 0. */
int rh_req_datagrams(request_rec *r);
/* An open of datagrams: the location's UDP idle timeout and queue bound. */
void rh_udp_terms(rh_req *q, rh_ipc_req *rq);

/* mod_rh_listen.c: rendezvous, a serve's listen and a client's open of a
 * RelayService. */
int rh_do_listen(rh_req *q);
int rh_do_service_open(rh_req *q);

/* mod_rh_dest.c: open and check of BASE/RH_DEST_TARGET (RelayAllow). */
int rh_do_dest_open(rh_req *q);
int rh_do_dest_check(rh_req *q);

/* mod_rh_push.c: a push, and the start of one (also the up side of a duplex):
 * DECLINED when the core takes it, else the request is answered. */
int rh_do_push(rh_req *q);
int rh_start_push(rh_req *q, const char *token, apr_uint64_t offset, int timeout_ms);

/* mod_rh_pull.c: a pull, stream or batch. */
int rh_do_pull(rh_req *q);

/* mod_rh_duplex.c: push and pull in one request. */
int rh_do_duplex(rh_req *q);

/* mod_rh_watch.c: one long-poll for many idle sessions. */
int rh_do_watch(rh_req *q);

#endif
