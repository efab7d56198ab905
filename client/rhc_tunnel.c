/* relay-https client: tunnel sessions over one libcurl multi handle, driven by
 * one poll() loop (curl_multi_socket_action) that also watches the local fds.
 * See docs/PROTOCOL.md. This file holds a tunnel's life: start, open,
 * restart, advance, finish; the other rhc_*.c files one concern each.
 *
 * A session carries its bytes with one transport per direction:
 *   duplex  one POST .../duplex: its body is the up frame stream, its response
 *           the down frame stream (HTTP/2 end to end);
 *   stream  one streamed push (a chunked body that stays open) and one long pull;
 *   batch   complete pushes with Content-Length, up to BATCH_INFLIGHT in flight
 *           (the server applies them in offset order), and long-poll pulls that
 *           come back with a Content-Length as soon as there is anything.
 * --transport auto starts with the best the connection allows (duplex on HTTP/2,
 * else stream), watches for intermediaries that hold bytes back (no first frame
 * on a response within PROBE_FIRST_MS; pushed bytes not acknowledged by A frames
 * for ACK_STALL_MS; a 413 on a streamed body) and falls back duplex -> stream ->
 * batch, per direction; the process remembers what worked for its later
 * sessions. On a path not proven yet, up bytes wait for the first frame of the
 * down response (xp.up_hold, about one round trip): if it never comes, nothing has
 * reached the target and the session can start over on batch (restart_session)
 * even where the server keeps the given-up pull attached.
 *
 * Up bytes read from the local side go into the up buffer (t->up, rhc_upbuf.c,
 * on an rh_ring) and stay there until the server confirms them (A frames, push
 * answers). A push can therefore
 * be ended, cut, retried or replaced by another transport without losing or
 * doubling a byte: every push says where its bytes start (Relay-Offset) and the
 * server refuses (409 with its own offset) what it already has. Down bytes are
 * only ever taken from the response they arrive on at the offset we expect
 * (version 1 servers keep no copy of what they handed out), so pulls are only
 * switched when the old one has ended or gave nothing but a heartbeat.
 *
 * Nothing blocks: local fds are non-blocking (or, for a tty/file on stdio, only
 * touched when poll says so), curl callbacks never wait, and flow control in
 * both directions uses curl's pause: a streamed body pauses when the local side
 * has nothing, a response pauses while OBUF_SOFT undelivered bytes wait for the
 * local side. Callbacks only record what happened; requests are started,
 * restarted and freed from the loop, outside of any curl callback. */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <fcntl.h>

#include <curl/curl.h>

#include "rh_util.h"
#include "rhc_check.h"
#include "rhc_errors.h"
#include "rhc_tunnel_int.h"

/* Every request of the session in flight (the open aside). */
void reqs_free(rhc_tunnel *t)
{
    req_free(t->rq.pull);
    req_free(t->rq.spush);
    req_free(t->rq.spush_next);
    req_free(t->rq.spush_prev);
    req_free(t->rq.duplex);
    t->rq.pull = t->rq.spush = t->rq.spush_next = t->rq.spush_prev = t->rq.duplex = NULL;
    for (int i = 0; i < t->ack.n; ++i)
        req_free(t->ack.req[i]);
    t->ack.n = 0;
    for (int i = 0; i < t->rq.nbpush; ++i)
        req_free(t->rq.bpush[i]);
    t->rq.nbpush = 0;
}

void start_close_try(rhc_ctx *c, const struct rhc_route *route, const char *token,
                     const char *label,
                     const char *sid, unsigned tries, int integrity)
{
    struct rhc_req *r = req_new(c, route, NULL, REQ_CLOSE, token);

    if (!r)
        return;
    /* the server logs and counts a failed check we found, as its own */
    if (add_header(r, "Content-Type:") < 0 ||
        (integrity && add_header(r, RH_HDR_REASON ": " RH_REASON_TOKEN_INTEGRITY) < 0)) {
        req_free(r);
        return;
    }
    req_empty_body(r);
    curl_easy_setopt(r->h, CURLOPT_TIMEOUT_MS, (long)CLOSE_TIMEOUT_MS);
    if (tries)
        curl_easy_setopt(r->h, CURLOPT_FRESH_CONNECT, 1L);
    r->tries = tries;
    r->integrity = integrity;
    if (req_go(r) < 0) {
        req_free(r);
        return;
    }
    snprintf(r->token, sizeof(r->token), "%s", token);
    snprintf(r->label, sizeof(r->label), "%s", label);
    snprintf(r->sid, sizeof(r->sid), "%s", sid);
    r->next = c->closers;
    c->closers = r;
    ++c->nclosers;
}

void start_close(rhc_ctx *c, const struct rhc_route *route, const char *token,
                 const char *label, const char *sid)
{
    start_close_try(c, route, token, label, sid, 0, 0);
}

/* Resume (the server keeps down bytes until acknowledged) is asked for only
 * where the pulls will be batch long-polls: each one acknowledges with its
 * Relay-Ack. On a streamed pull the acknowledgements would have to travel as A
 * frames in the push body, behind up bytes that may wait for the target, which
 * waits for down bytes to leave, which wait for the acknowledgements: an echo
 * with both directions busy stalls. */
static int want_resume(const rhc_tunnel *t)
{
    return !t->route->o->no_resume;
}

struct rhc_req *start_open(rhc_tunnel *t)
{
    const struct rhc_opts *o = t->route->o;
    struct rhc_req *r = req_new(t->ctx, t->route, t, REQ_OPEN, NULL);
    long total = OPEN_TIMEOUT_MS;

    if (!r)
        return NULL;
    if (add_header(r, "Content-Type:") < 0 ||
        add_header(r, RH_HDR_INTEGRITY ": " RH_INTEGRITY_CRC32C) < 0 ||
        (want_resume(t) && add_header(r, RH_HDR_RESUME ": " RH_RESUME_YES) < 0) ||
        (t->greet.dest[0] && add_header(r, RH_HDR_DESTINATION ": %s", t->greet.dest) < 0) ||
        (t->greet.dgram && add_header(r, RH_HDR_DATAGRAM ": " RH_DATAGRAM_LEN16) < 0))
        goto fail;
    if (total < o->connect_timeout_ms + 15000)
        total = o->connect_timeout_ms + 15000;
    req_empty_body(r);
    curl_easy_setopt(r->h, CURLOPT_TIMEOUT_MS, total);
    if (t->sess.open_retries)
        curl_easy_setopt(r->h, CURLOPT_FRESH_CONNECT, 1L);
    if (req_go(r) < 0)
        goto fail;
    return r;
fail:
    req_free(r);
    return NULL;
}

static void open_take(rhc_tunnel *t, struct rhc_req *r);

void open_done(rhc_tunnel *t, struct rhc_req *r, CURLcode rc)
{
    char what[384];

    snprintf(what, sizeof(what), "open %.300s/%s", t->route->o->base_url, t->route->o->target);
    /* a connection cut before the answer, in the TLS handshake too (a proxy
     * that resets it), or under its HTTP/2 stream (an open of a service waits
     * for its serve, long enough for a cut to land), or a gateway's 502/504
     * (it lost the server: gateway_cut): tried again; a refused certificate
     * is another code */
    if ((open_cut(r, rc) || gateway_cut(r)) && t->sess.open_retries < OPEN_RETRIES &&
        !t->end.code) {
        /* At worst the server made a session we never hear of; it idles out. */
        t_log(t, 1, "open: %s; trying again on a new connection", req_error(r, rc));
        req_free(r);
        ++t->sess.open_retries;
        if (!(t->rq.open = start_open(t)))
            t_fail(t, RHC_EXIT_ERROR, "open: cannot start a request (out of memory)");
        return;
    }
    if (created_then_cut(r, rc)) {
        t_log(t, 1, "open: %s after the whole 201; the session stands", req_error(r, rc));
        rc = CURLE_OK;
    }
    t->greet.status = r->hdr_done ? r->status : 0;
    snprintf(t->greet.reason, sizeof(t->greet.reason), "%s", r->reason);
    if (r->hdr_done && r->status != 201)
        fail_http(t, r, what);
    else if (rc != CURLE_OK)
        fail_curl(t, r, rc, what);
    else if (!r->have_token)
        t_fail(t, RHC_EXIT_ERROR, "%s: HTTP 201 without a valid Relay-Session", what);
    else if (!r->check_ok)
        t_fail(t, RHC_EXIT_ERROR, "%s: the server does not check the bytes end to end (no "
               RH_HDR_INTEGRITY " in its answer): it runs an older mod_relay_https", what);
    if (t->end.code)
        return;
    open_take(t, r);
    req_free(r);
    t->rq.open = NULL;
}

/* The session an open (or a serve's listen) answered: its token and terms,
 * then the transport. r stays the caller's. */
static void open_take(rhc_tunnel *t, struct rhc_req *r)
{
    memcpy(t->token, r->token, sizeof(t->token));
    memcpy(t->sid, r->token, RH_SID_LEN);
    t->sid[RH_SID_LEN] = '\0';
    t->sess.resume = r->resume_ok;
    t->sess.idle_ms = 1000 * (int64_t)(r->idle_s ? r->idle_s : RH_DEFAULT_IDLE_S);
    t->sess.poll_ms = r->poll_s <= 86400 ? 1000 * (int64_t)r->poll_s : 0;
    t->sess.last_contact = rh_now_ms();
    /* the server keeps what it sent until acknowledged, up to its window (older
     * servers: within Relay-Buffer): acknowledge every quarter of that, or it
     * stops reading the target */
    uint64_t keep = r->window >= 16384 ? r->window
                  : r->buffer >= 16384 ? r->buffer : RH_DEFAULT_BUFSIZE;
    t->ack.every = keep / 4;
    /* but no less often than every ACK_MAX_GAP: on a fast short path that keeps
     * the server's memory down; on a long one the acks (ACK_INFLIGHT in
     * flight) cover more each as the gap grows during their round trip */
    if (t->ack.every > ACK_MAX_GAP)
        t->ack.every = ACK_MAX_GAP;
    t->ack.sent = t->ack.conf = t->down.off;
    /* the request's round trip: to its (short) answer's end, after the
     * connection was made; over HTTP/2 libcurl 7.88 takes the first byte's
     * time when the request goes (0.01 ms after it through a 20 ms proxy) */
    curl_off_t pre = 0, done = 0;
    curl_easy_getinfo(r->h, CURLINFO_PRETRANSFER_TIME_T, &pre);
    curl_easy_getinfo(r->h, CURLINFO_TOTAL_TIME_T, &done);
    t->sess.rtt_ms = done > pre ? (int64_t)((done - pre) / 1000) : 0;
    t_log(t, 1, "session %s opened", t->sid);
    rhc_report_open_ok(t);
    if (t->greet.fn && !t->greet.done) {
        struct rhc_open_result ok = { 1, r->status, "", "" };
        t->greet.done = 1;
        if (t->greet.fn(t->greet.arg, t->local.in_fd, &ok) < 0) {
            t_fail(t, RHC_EXIT_LOCAL, "the local client went away before the tunnel was up");
            return;
        }
    }
    choose_transport(t, r);
}

void t_finish(rhc_tunnel *t)
{
    rhc_ctx *c = t->ctx;
    int code = t->end.code;

    rhc_wake_forget(t);     /* before its socket closes; nothing wakes it now */
    watch_leave(t);
    req_free(t->rq.open);
    t->rq.open = NULL;
    reqs_free(t);
    /* a resumable session lingers on the server after a clean end, for a client
     * that missed the last bytes: this one has them all */
    if ((code || t->sess.resume || t->end.quiet) && t->token[0] && !t->end.server_gone)
        start_close_try(c, t->route, t->token, t->label, t->sid, 0, code == RHC_EXIT_INTEGRITY);
    int greeted = 0;
    if (t->greet.fn && !t->greet.done) {
        /* the open failed: the local client hears why in its own protocol,
         * and a plain close after it (a reset could drop the answer) */
        struct rhc_open_result no = { 0, t->greet.status, t->greet.reason, t->end.msg };
        t->greet.done = greeted = 1;
        t->greet.fn(t->greet.arg, t->local.in_fd, &no);
    }
    if (t->local.kind == RHC_LOCAL_SOCKET) {
        if (code && !greeted) {
            /* A broken tunnel must not look like a clean end to the application. */
            struct linger lg = { .l_onoff = 1, .l_linger = 0 };
            setsockopt(t->local.in_fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        }
        close(t->local.in_fd);
    }
    if (code)
        rhc_report_failure(t);
    else if (t->end.quiet)
        t_log(t, 1, "session %s: the local side is done; closed without waiting longer for "
              "the server's end", t->sid);
    else
        t_log(t, 1, "session %s closed cleanly (up %" PRIu64 " bytes, down %" PRIu64 " bytes)",
              t->sid, up_read_off(t), t->down.off);

    stat_end(t, code);
    if (t->prev)
        t->prev->next = t->next;
    else
        c->tunnels = t->next;
    if (t->next)
        t->next->prev = t->prev;
    --c->ntunnels;
    rhc_ctx_size_cache(c);
    if (t->done)
        t->done(t->done_arg, code);
    free(t->local.obuf);
    rhc_upbuf_free(&t->up);
    free(t);
}

void rhc_tunnel_end_quietly(rhc_tunnel *t)
{
    t->end.quiet = 1;
    t_finish(t);
}

/* Moves a tunnel on after events; frees it when it is over (0). */
int t_advance(rhc_tunnel *t, int64_t now)
{
    if (t->local.olen > 0 && !t->local.out_blocked && !t->local.out_err && !t->end.code)
        drain_out(t);
    /* an ended duplex body: its bytes are confirmed once A frames say so */
    if (t->xp.switching && t->rq.duplex && t->rq.duplex->body_ended && t->up.acked >= t->up.sent)
        t->xp.switching = 0;
    duplex_split(t, now);
    spush_refresh(t);
    push_park(t, now);
    watch_idle(t, now);     /* may give the down request up */
    spush_ahead(t, now);
    watch_local_sent(t);    /* bytes to send: polls again (before they go) */
    park_unstick(t);
    up_kick(t);
    if (t->sess.resume)
        maybe_ack(t, now);
    if (t->end.code) {
        if (t->end.linger_until && (t->rq.spush || t->rq.duplex) && now < t->end.linger_until)
            return 1;   /* give the R frame its chance */
        t_finish(t);
        return 0;
    }
    if (t->down.fin && t->local.olen == 0 && !t->local.out_shut)
        shut_output(t);
    if (t->local.out_shut && t->up.done && !t->rq.pull && !t->rq.duplex && !t->rq.spush && !t->rq.nbpush &&
        !t->rq.open && !t->ack.n) {
        t_finish(t);
        return 0;
    }
    return 1;
}

static rhc_tunnel *tunnel_new(rhc_ctx *c, struct rhc_route *route, int in_fd, int out_fd,
                              enum rhc_local_kind kind, const char *label, rhc_done_fn done,
                              void *arg)
{
    rhc_tunnel *t = calloc(1, sizeof(*t));

    if (!t) {
        if (kind == RHC_LOCAL_SOCKET)
            close(in_fd);
        return NULL;
    }
    t->ctx = c;
    t->route = route;
    /* datagrams wait in the udp queue (drop oldest), not seconds behind 32 MiB */
    rhc_upbuf_init(&t->up, route->o->udp ? UPBUF_UDP_MAX : UPBUF_MAX);
    t->local.kind = kind;
    t->local.in_fd = in_fd;
    t->local.out_fd = out_fd;
    int fl = fcntl(in_fd, F_GETFL);
    t->local.in_nb = fl >= 0 && (fl & O_NONBLOCK);
    fl = fcntl(out_fd, F_GETFL);
    t->local.out_nb = fl >= 0 && (fl & O_NONBLOCK);
    t->done = done;
    t->done_arg = arg;
    snprintf(t->label, sizeof(t->label), "%s", label ? label : "");
    if (rhc_wake_add(t) < 0) {
        if (kind == RHC_LOCAL_SOCKET)
            close(in_fd);
        rhc_upbuf_free(&t->up);
        free(t);
        return NULL;
    }
    stat_start(t);

    t->next = c->tunnels;
    if (c->tunnels)
        c->tunnels->prev = t;
    c->tunnels = t;
    ++c->ntunnels;
    rhc_ctx_size_cache(c);
    return t;
}

rhc_tunnel *rhc_tunnel_start(rhc_ctx *c, struct rhc_route *route, int in_fd, int out_fd, enum rhc_local_kind kind,
                             const char *label, rhc_done_fn done, void *arg)
{
    rhc_tunnel *t = tunnel_new(c, route, in_fd, out_fd, kind, label, done, arg);

    if (!t)
        return NULL;
    t_log(t, 1, "open %s/%s", t->route->o->base_url, t->route->o->target);
    t->rq.open = start_open(t);
    if (!t->rq.open)
        t_fail(t, RHC_EXIT_ERROR, "open: cannot start a request (out of memory)");
    /* A failure is reported by the next rhc_ctx_step, like any other. */
    return t;
}

rhc_tunnel *rhc_tunnel_start_to(rhc_ctx *c, struct rhc_route *route, int fd, const char *label,
                                const char *dest, rhc_greet_fn greet, void *arg)
{
    rhc_tunnel *t = tunnel_new(c, route, fd, fd, RHC_LOCAL_SOCKET, label, NULL, NULL);

    if (!t)
        return NULL;
    snprintf(t->greet.dest, sizeof(t->greet.dest), "%s", dest);
    t->greet.fn = greet;
    t->greet.arg = arg;
    t_log(t, 1, "open %s/%s to %s", t->route->o->base_url, t->route->o->target, dest);
    t->rq.open = start_open(t);
    if (!t->rq.open)
        t_fail(t, RHC_EXIT_ERROR, "open: cannot start a request (out of memory)");
    return t;
}

rhc_tunnel *rhc_tunnel_start_dgram_to(rhc_ctx *c, struct rhc_route *route, int fd,
                                      const char *label, const char *dest, rhc_done_fn done,
                                      void *arg)
{
    rhc_tunnel *t = tunnel_new(c, route, fd, fd, RHC_LOCAL_SOCKET, label, done, arg);

    if (!t)
        return NULL;
    snprintf(t->greet.dest, sizeof(t->greet.dest), "%s", dest);
    t->greet.dgram = 1;
    rhc_upbuf_free(&t->up);   /* nothing in it yet: a datagram tunnel's smaller bound */
    rhc_upbuf_init(&t->up, UPBUF_UDP_MAX);
    t_log(t, 1, "open %s/%s to %s (datagrams)", t->route->o->base_url, t->route->o->target,
          dest);
    t->rq.open = start_open(t);
    if (!t->rq.open)
        t_fail(t, RHC_EXIT_ERROR, "open: cannot start a request (out of memory)");
    return t;
}

/* serve mode: the session a listen's answer handed over (a serve leg, already
 * open on the server), on the local socket fd. */
rhc_tunnel *rhc_tunnel_accept(rhc_ctx *c, struct rhc_route *route, int fd, const char *label,
                              struct rhc_req *answer)
{
    rhc_tunnel *t = tunnel_new(c, route, fd, fd, RHC_LOCAL_SOCKET, label, NULL, NULL);

    if (t) {
        open_take(t, answer);
        /* an ack at once, with no body: it takes the serve leg within the
         * server's claim time, and a leg the server dropped meanwhile (it gave
         * the client to another serve) hears its 410 at once, where a duplex
         * may see only a reset stream */
        t->ack.verify = 1;
        t->sess.serve_leg = 1;
    }
    return t;
}
