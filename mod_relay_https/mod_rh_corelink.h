/* The handler's side of the link to the relay core: one request line asked
 * over the core's unix socket, the answers built from its refusals, and what
 * the core is told about the client (its session check, its keys). */
#ifndef MOD_RH_CORELINK_H
#define MOD_RH_CORELINK_H

#include <httpd.h>

#include "mod_rh_req.h"
#include "rh_ipc.h"
#include "rh_ipc_client.h"

#define CORE_REPLY_MS   10000
#define GONE_REPLY_MS   2000    /* why a session is gone: the core answers at once */

/* Sends one request line and reads the core's answer; q->fd is the connection
 * to the core afterwards (closed with the request's pool). 0, or -errno. */
int rh_core_ask(rh_req *q, const rh_ipc_req *rq, rh_ipc_reply *rep, int timeout_ms);

/* The core's answer was read whole (a batch pull's, asked with keep): the
 * connection goes back to the child's kept ones when the request ends. */
void rh_core_keep(rh_req *q);

/* What is done with the core's answer: rv 0 with *rep, or -errno (no answer). */
typedef int rh_answer_fn(rh_req *q, int rv, rh_ipc_reply *rep);

/* rh_core_ask, then then(). Where the request may park (RelayAsync), the wait
 * for the answer is parked and this returns SUSPENDED; then() runs on a
 * worker with a copy of q in the request's pool, and may park again. */
int rh_core_ask_then(rh_req *q, const rh_ipc_req *rq, int timeout_ms, rh_answer_fn *then);

/* 503: the core could not be asked, or answered nonsense. */
int rh_core_unavailable(request_rec *r);

/* Answers with a refusal of the core. */
int rh_fail_reply(request_rec *r, const rh_ipc_reply *rep);

/* The session of the request's Relay-Session: DECLINED to go on (q->view and
 * *token set), else the request is answered. */
int rh_check_session(rh_req *q, const char **token);

/* The authenticated user's hash, 0 without authentication. */
apr_uint64_t rh_user_hash(const request_rec *r);

/* The client as the limits see it: its user, else its address. */
const char *rh_client_key(request_rec *r);

#endif
