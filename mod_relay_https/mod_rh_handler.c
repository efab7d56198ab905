/* The relay-https handler: splits the URI into target and endpoint, checks
 * what every endpoint shares (protocol version, target name) and dispatches.
 * Open, check and the control endpoints (ack, close) are answered here; push, pull,
 * duplex and watch have files of their own. Also the refusal of TRACE. */
#include <string.h>

#include <apr_strings.h>
#include <http_protocol.h>
#include <http_core.h>
#include <http_request.h>

#include "mod_rh_private.h"
#include "mod_rh_config.h"
#include "mod_rh_answer.h"
#include "mod_rh_async.h"
#include "mod_rh_child.h"
#include "mod_rh_conn.h"
#include "mod_rh_corelink.h"
#include "mod_rh_req.h"
#include "mod_rh_handler.h"
#include "mod_rh_daemon.h"
#include "mod_rh_nice.h"

/* Every answer of a relay location: never cached, buffered or compressed. */
static void common_headers(request_rec *r)
{
    apr_table_setn(r->headers_out, "Cache-Control", "no-store");
    apr_table_setn(r->headers_out, "X-Accel-Buffering", "no");
    apr_table_setn(r->subprocess_env, "no-gzip", "1");   /* compressing would buffer */
}

/* open: the core connects to the target (its address resolved here) and
 * hands out the session's token; the client hears 201 and the session's terms. */
static int do_open(rh_req *q)
{
    request_rec *r = q->r;
    apr_sockaddr_t *sa;
    char *ip;
    rh_ipc_req rq;
    rh_ipc_reply rep;
    int rv;

    if ((rv = rh_post_no_body(r)) != DECLINED)
        return rv;
    if (apr_sockaddr_info_get(&sa, q->target->host, APR_UNSPEC, q->target->port, 0,
                              r->pool) != APR_SUCCESS
        || apr_sockaddr_ip_get(&ip, sa) != APR_SUCCESS)
        return rh_fail(r, HTTP_BAD_GATEWAY, "cannot resolve the address of target '%s'",
                       q->target->name);
    memset(&rq, 0, sizeof(rq));
    rq.op = RH_IPC_OPEN;
    apr_cpystrn(rq.host, ip, sizeof(rq.host));
    rq.port = q->target->port;
    rh_open_terms(q, &rq);
    rq.connect_s = (unsigned)rh_dir_connect(q->dc);
    if (q->target->udp)
        rh_udp_terms(q, &rq);
    if (rh_core_ask(q, &rq, &rep, (rh_dir_connect(q->dc) + 5) * 1000) != 0)
        return rh_core_unavailable(r);
    if (!rep.ok)
        return rh_fail_reply(r, &rep);
    return rh_open_answer(q, &rq, rep.text);
}

/* What an open (or a listen) asks of the session: the location's buffer and
 * timeouts, resume and checks as the client asks, who asks. */
void rh_open_terms(rh_req *q, rh_ipc_req *rq)
{
    request_rec *r = q->r;
    apr_cpystrn(rq->target, q->target ? q->target->name : q->target_name, sizeof(rq->target));
    rq->bufsize = (unsigned)rh_dir_bufsize(q->dc);
    rq->idle_s = (unsigned)rh_dir_idle(q->dc);
    /* a client that can resume asks the server to keep bytes until acknowledged */
    const char *res = apr_table_get(r->headers_in, RH_HDR_RESUME);
    rq->window = (unsigned)rh_dir_window(q->dc);
    rq->resume = res && !strcmp(res, RH_RESUME_YES) && rq->window > 0;
    /* end-to-end checks: C frames after every D frame, both ways */
    const char *chk = apr_table_get(r->headers_in, RH_HDR_INTEGRITY);
    rq->check = chk && !strcmp(chk, RH_INTEGRITY_CRC32C);
    apr_cpystrn(rq->client, rh_client_key(r), sizeof(rq->client));
    rq->owner = rh_user_hash(r);
}

/* 201 with the new session's token and terms (an open, or a listen that
 * got a client). */
int rh_open_answer(rh_req *q, const rh_ipc_req *rq, const char *token)
{
    request_rec *r = q->r;
    if (strlen(token) != RH_TOKEN_LEN)
        return rh_core_unavailable(r);
    apr_table_setn(r->notes, "relay-session", apr_pstrndup(r->pool, token, RH_SID_LEN));
    apr_table_setn(r->headers_out, RH_HDR_SESSION, apr_pstrdup(r->pool, token));
    apr_table_setn(r->headers_out, RH_HDR_BUFFER, apr_itoa(r->pool, rh_dir_bufsize(q->dc)));
    apr_table_setn(r->headers_out, RH_HDR_IDLE, apr_itoa(r->pool, rh_dir_idle(q->dc)));
    apr_table_setn(r->headers_out, RH_HDR_HEARTBEAT, apr_itoa(r->pool, RH_HEARTBEAT_S));
    apr_table_setn(r->headers_out, RH_HDR_POLL, apr_itoa(r->pool, rh_dir_poll(q->dc)));
    if (rq->resume) {
        apr_table_setn(r->headers_out, RH_HDR_RESUME, RH_RESUME_YES);
        apr_table_setn(r->headers_out, RH_HDR_WINDOW, apr_itoa(r->pool, (int)rq->window));
    }
    if (rq->check)
        apr_table_setn(r->headers_out, RH_HDR_INTEGRITY, RH_INTEGRITY_CRC32C);
    ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r, RHLOG(2010) "session %.*s %s %s",
                  RH_SID_LEN, token, rq->op == RH_IPC_LISTEN ? "accepted for" : "opened to",
                  rq->target);
    r->status = HTTP_CREATED;
    ap_set_content_length(r, 0);
    return OK;
}

/* close and ack: a session request with no body that the core answers at once;
 * the client hears 204. */
static int do_control(rh_req *q, rh_ipc_op op)
{
    request_rec *r = q->r;
    const char *token;
    rh_ipc_req rq;
    rh_ipc_reply rep;
    int rv;

    if ((rv = rh_post_no_body(r)) != DECLINED
        || (rv = rh_check_session(q, &token)) != DECLINED)
        return rv;
    memset(&rq, 0, sizeof(rq));
    rq.op = op;
    apr_cpystrn(rq.token, token, sizeof(rq.token));
    if (op == RH_IPC_ACK
        && rh_hdr_u64(r, RH_HDR_ACK, &rq.offset) != 0)
        return rh_fail(r, HTTP_BAD_REQUEST, "missing or malformed Relay-Ack header");
    const char *why = apr_table_get(r->headers_in, RH_HDR_REASON);
    rq.integrity = op == RH_IPC_CLOSE && why && !strcmp(why, RH_REASON_TOKEN_INTEGRITY);
    if (rh_core_ask(q, &rq, &rep, CORE_REPLY_MS) != 0)
        return rh_core_unavailable(r);
    if (!rep.ok)
        return rh_fail_reply(r, &rep);
    r->status = HTTP_NO_CONTENT;
    return OK;
}

/* check: the client's cheap question at start. Apache's authentication and
 * authorization ran before the handler; the target was found; the core
 * answers STAT (a core that is gone or stuck: 503). Nothing connects to the
 * target and no session is made. */
static int do_check(rh_req *q)
{
    request_rec *r = q->r;
    rh_ipc_req rq;
    rh_ipc_reply rep;

    if (r->method_number != M_GET)
        return rh_method_not_allowed(r, "GET");
    memset(&rq, 0, sizeof(rq));
    rq.op = RH_IPC_STAT;
    if (rh_core_ask(q, &rq, &rep, CORE_REPLY_MS) != 0 || !rep.ok)
        return rh_core_unavailable(r);
    ap_set_content_type(r, "text/plain; charset=utf-8");
    ap_rprintf(r, RH_ERROR_PREFIX "target '%s' ready\n", q->target->name);
    return OK;
}

int rh_req_datagrams(request_rec *r)
{
    const char *dg = apr_table_get(r->headers_in, RH_HDR_DATAGRAM);
    return dg && !strcmp(dg, RH_DATAGRAM_LEN16);
}

void rh_udp_terms(rh_req *q, rh_ipc_req *rq)
{
    rq->udp = 1;
    rq->udp_idle_s = q->dc->udp_idle_s > 0 ? (unsigned)q->dc->udp_idle_s : RH_UDP_IDLE_S;
    rq->udp_queue = q->dc->udp_queue > 0 ? (unsigned)q->dc->udp_queue : RH_UDP_QUEUE;
}

/* Open and check: the client's bytes are datagrams (Relay-Datagram) exactly
 * when the target is a udp: one; else 400 with the reason, before anything
 * connects (length-prefixed bytes to a TCP service would be garbage to it). */
static int datagram_mismatch(rh_req *q)
{
    request_rec *r = q->r;
    int datagrams = rh_req_datagrams(r);
    if (datagrams == q->target->udp)
        return DECLINED;
    apr_table_setn(r->headers_out, RH_HDR_REASON, RH_REASON_TOKEN_DATAGRAM);
    if (datagrams)
        return rh_fail(r, HTTP_BAD_REQUEST, "target '%s' is not UDP: forward it with "
                       "-L [ADDR:]PORT, not -L udp:", q->target->name);
    return rh_fail(r, HTTP_BAD_REQUEST, "target '%s' is UDP: forward it with "
                   "-L udp:[ADDR:]PORT", q->target->name);
}

/* Splits the URI below the location into TARGET and OP. */
static int split_uri(request_rec *r, const rh_dir_conf *dc, const char **target,
                     const char **op)
{
    const char *rel = r->uri;
    size_t ll = dc->location ? strlen(dc->location) : 0;
    if (ll && !strncmp(rel, dc->location, ll) && (rel[ll] == '/' || rel[ll] == '\0'))
        rel += ll;
    else {
        /* not under a plain <Location> prefix: take the last two segments */
        const char *last = strrchr(rel, '/');
        const char *p = last;
        while (p > rel && *(p - 1) != '/')
            --p;
        rel = p > rel ? p - 1 : rel;
    }
    while (*rel == '/')
        ++rel;
    if (!*rel)
        return 0;   /* the base itself */
    const char *slash = strchr(rel, '/');
    if (!slash || strchr(slash + 1, '/'))
        return -1;
    *target = apr_pstrndup(r->pool, rel, (apr_size_t)(slash - rel));
    *op = slash + 1;
    return 1;
}

/* Requests by transport, for the status page: a push with a length is a batch
 * push, a pull says its mode. */
static void count_request(request_rec *r, const char *op)
{
    rh_stats *st = rh_daemon_stats();
    const char *mode = apr_table_get(r->headers_in, RH_HDR_MODE);
    if (!st)
        return;
    if (!strcmp(op, RH_EP_PUSH))
        rh_stats_request(st, apr_table_get(r->headers_in, "Content-Length")
                             ? RH_XP_PUSH_BATCH : RH_XP_PUSH_STREAM);
    else if (!strcmp(op, RH_EP_PULL))
        rh_stats_request(st, mode && !strcasecmp(mode, RH_MODE_BATCH)
                             ? RH_XP_PULL_BATCH : RH_XP_PULL_STREAM);
    else if (!strcmp(op, RH_EP_DUPLEX))
        rh_stats_request(st, RH_XP_DUPLEX);
}

/* TRACE would echo the request, Relay-Session included: httpd answers it
 * before any handler (map_to_storage), so a relay location refuses it here,
 * where the <Location> configuration is already known. */
static int refuse_trace(request_rec *r)
{
    const rh_dir_conf *dc;
    if (r->method_number != M_TRACE)
        return DECLINED;
    dc = ap_get_module_config(r->per_dir_config, &relay_https_module);
    if (!dc || ((!dc->targets || dc->targets->nelts == 0) && !rh_dir_allows(dc)))
        return DECLINED;
    r->allowed = AP_METHOD_BIT << M_GET | AP_METHOD_BIT << M_POST;
    return HTTP_METHOD_NOT_ALLOWED;
}

/* The <Location> configuration (all httpd has walked at translate_name)
 * says SetHandler relay-https. A forward proxy's request is mod_proxy's. */
static int relay_location(request_rec *r)
{
    core_dir_config *d = ap_get_core_module_config(r->per_dir_config);
    const char *err = NULL;
    if (r->proxyreq || !d || !d->expr_handler)
        return 0;
    const char *h = ap_expr_str_exec(r, d->expr_handler, &err);
    return !err && h && !strcmp(h, RH_HANDLER_NAME);
}

static const char relay_url_mark[] = "relay-url";

int rh_translate(request_rec *r)
{
    int rv = refuse_trace(r);
    if (rv == DECLINED && relay_location(r))
        ap_set_module_config(r->request_config, &relay_https_module, (void *)relay_url_mark);
    return rv;
}

/* A relay URL names no file: httpd's directory and file walks (a stat per
 * path segment, an .htaccess open per directory where AllowOverride is not
 * None) are skipped, as mod_proxy skips them for its URLs; the <Location>
 * and <If> walks that follow this hook still run, and with them
 * authentication and authorization. <Directory>, <Files> and .htaccess do
 * not apply to relay URLs (docs/ARCHITECTURE.md, Security). */
int rh_map_to_storage(request_rec *r)
{
    if (ap_get_module_config(r->request_config, &relay_https_module) != relay_url_mark)
        return DECLINED;
    return OK;
}

/* An endpoint whose request may wait long on its thread (pull, push, duplex,
 * listen): it runs only while this child has threads to spare for it
 * (mod_rh_child.h). One whose body streams (push, duplex) and is answered
 * while the body may still come lingers on HTTP/2 (rh_h2_linger). */
static int held_call(rh_req *q, int (*fn)(rh_req *q), int body)
{
    int rv;
    /* one that parks (RelayAsync) waits on its thread for RH_ASYNC_HOT_MS
     * at most: not a hold */
    if (rh_async_may_park(q->r, q->sc))
        return fn(q);
    if (!rh_child_enter(q->r, q->sc)) {
        rv = OK;   /* answered 503 */
    } else {
        rv = fn(q);
        rh_child_leave();
    }
    if (body && rv == OK)
        rh_h2_linger(q->r);
    return rv;
}

static int dispatch(request_rec *r)
{
    rh_req q;
    const char *target = NULL, *op = NULL;

    memset(&q, 0, sizeof(q));
    q.r = r;
    q.fd = -1;
    q.shard = -1;
    q.dc = ap_get_module_config(r->per_dir_config, &relay_https_module);
    q.sc = ap_get_module_config(r->server->module_config, &relay_https_module);
    rh_watch_init(&q.watch, r->connection);
    common_headers(r);

    int where = split_uri(r, q.dc, &target, &op);
    if (where == 0) {
        if (r->method_number != M_GET)
            return rh_method_not_allowed(r, "GET");
        ap_set_content_type(r, "text/plain; charset=utf-8");
        ap_rputs(RH_ERROR_PREFIX "relay endpoint\n", r);
        return OK;
    }
    int dest = where > 0 && !strcmp(target, RH_DEST_TARGET);
    if (where < 0 || (!dest && !rh_valid_target_name(target)))
        return rh_fail(r, HTTP_NOT_FOUND, "no such relay endpoint");
    const char *ver = apr_table_get(r->headers_in, RH_HDR_VERSION);
    if (ver && strcmp(ver, RH_PROTO_VERSION) != 0)
        return rh_fail(r, HTTP_BAD_REQUEST, "unsupported " RH_HDR_VERSION " %s "
                       "(this server speaks " RH_PROTO_VERSION ")", ver);
    q.target_name = target;
    q.op = op;
    if (dest && (!strcmp(op, RH_EP_OPEN) || !strcmp(op, RH_EP_CHECK)))
        return !strcmp(op, RH_EP_OPEN) ? rh_do_dest_open(&q) : rh_do_dest_check(&q);
    if (!strcmp(op, RH_EP_OPEN) || !strcmp(op, RH_EP_CHECK) || !strcmp(op, RH_EP_LISTEN)) {
        /* Only open, check and listen consult the RelayTarget list: a session
         * opened before a reload that removed its target goes on to the
         * address it was given. */
        q.target = rh_find_target(q.dc, target);
        if (!q.target) {
            apr_table_setn(r->headers_out, RH_HDR_REASON, RH_REASON_TOKEN_NO_TARGET);
            return rh_fail(r, HTTP_NOT_FOUND, "unknown target '%s'", target);
        }
        if (!strcmp(op, RH_EP_LISTEN))
            return held_call(&q, rh_do_listen, 0);
        int rv = datagram_mismatch(&q);
        if (rv != DECLINED)
            return rv;
        if (!strcmp(op, RH_EP_CHECK))
            return do_check(&q);
        return q.target->service ? rh_do_service_open(&q) : do_open(&q);
    }
    count_request(r, op);
    if (!strcmp(op, RH_EP_PUSH))
        return held_call(&q, rh_do_push, 1);
    if (!strcmp(op, RH_EP_PULL))
        return held_call(&q, rh_do_pull, 0);
    if (!strcmp(op, RH_EP_CLOSE))
        return do_control(&q, RH_IPC_CLOSE);
    if (!strcmp(op, RH_EP_DUPLEX))
        return held_call(&q, rh_do_duplex, 1);
    if (!strcmp(op, RH_EP_ACK))
        return do_control(&q, RH_IPC_ACK);
    if (!strcmp(op, RH_EP_WATCH))
        return rh_do_watch(&q);
    return rh_fail(r, HTTP_NOT_FOUND, "no such relay endpoint '%s'", op);
}

int rh_handler(request_rec *r)
{
    if (!r->handler || strcmp(r->handler, RH_HANDLER_NAME) != 0)
        return DECLINED;
    /* the relay's work at the relay's priority (RelayNice), the site's at its own */
    int niced = rh_nice_enter();
    int rv = dispatch(r);
    rh_nice_leave(niced, r);
    return rv;
}
