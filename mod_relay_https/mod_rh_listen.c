/* Rendezvous in the handler (docs/PROTOCOL.md, Rendezvous): a serve's listen
 * long-poll on BASE/NAME/listen, and a client's open of a RelayService. Both
 * are one question to the core (rh_pair.c pairs them) and a complete answer
 * with a Content-Length, so buffering intermediaries pass them whole. Who may
 * serve is Apache's Require on the listen's <Location>. */
#include <string.h>

#include <apr_strings.h>
#include <http_protocol.h>
#include <http_request.h>

#include "mod_rh_private.h"
#include "mod_rh_answer.h"
#include "mod_rh_corelink.h"
#include "mod_rh_req.h"

#define LISTEN_GRACE_MS 10000   /* the core answers a listen by its poll time; then this */

/* The core's answer to a listen: 201 with the serve leg's session, or 204. */
static int listen_answered(rh_req *q, int rv, rh_ipc_reply *rep)
{
    request_rec *r = q->r;
    if (rv != 0)
        return rh_core_unavailable(r);
    if (!rep->ok)
        return rh_fail_reply(r, rep);
    if (!rep->text[0]) {
        r->status = HTTP_NO_CONTENT;
        return OK;
    }
    return rh_open_answer(q, q->ctx, rep->text);
}

/* POST BASE/NAME/listen: 201 with a serve leg's session when a client opened
 * NAME, 204 when none came within the poll time (the serve polls again). The
 * wait is parked where the request may park (RelayAsync). */
int rh_do_listen(rh_req *q)
{
    request_rec *r = q->r;
    rh_ipc_req *rq;
    int rv;

    if (!q->target->service)
        return rh_fail(r, HTTP_NOT_FOUND, "'%s' is a target, not a service (RelayService)",
                       q->target->name);
    if ((rv = rh_post_no_body(r)) != DECLINED)
        return rv;
    rq = apr_pcalloc(r->pool, sizeof(*rq));
    rq->op = RH_IPC_LISTEN;
    rh_open_terms(q, rq);
    /* like a batch long-poll: answered before an intermediary's idle cut */
    rq->poll_s = (unsigned)rh_dir_poll(q->dc);
    if (rq->poll_s > RH_LISTEN_POLL_S)
        rq->poll_s = RH_LISTEN_POLL_S;
    q->ctx = rq;
    return rh_core_ask_then(q, rq, (int)rq->poll_s * 1000 + LISTEN_GRACE_MS, listen_answered);
}

/* POST BASE/NAME/open of a RelayService: paired with a waiting listen, or a
 * 503 (Relay-Reason: no-server) when no serve listens within a few seconds. */
int rh_do_service_open(rh_req *q)
{
    request_rec *r = q->r;
    rh_ipc_req rq;
    rh_ipc_reply rep;
    int rv;

    if ((rv = rh_post_no_body(r)) != DECLINED)
        return rv;
    memset(&rq, 0, sizeof(rq));
    rq.op = RH_IPC_OPEN;
    rq.service = 1;
    apr_cpystrn(rq.host, "-", sizeof(rq.host));
    rh_open_terms(q, &rq);
    rq.connect_s = RH_SERVICE_WAIT_S;
    if (rh_core_ask(q, &rq, &rep, (RH_SERVICE_WAIT_S + 8) * 1000) != 0)
        return rh_core_unavailable(r);
    if (!rep.ok) {
        if (rep.status == HTTP_SERVICE_UNAVAILABLE)
            apr_table_setn(r->headers_out, "Retry-After", "1");
        return rh_fail_reply(r, &rep);
    }
    return rh_open_answer(q, &rq, rep.text);
}
