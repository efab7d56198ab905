/* relay-https client: the frame streams. Streamed request bodies (stream
 * push, duplex) are made by body_read straight from the up buffer; frame
 * responses (pull, duplex) are parsed by resp_write, their data checked (C
 * frames) before it reaches the local side. */
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "rh_crc32c.h"
#include "rh_frame.h"
#include "rh_util.h"
#include "rhc_errors.h"
#include "rhc_gate.h"
#include "rhc_tunnel_int.h"

static size_t emit(char *buf, int type, const void *payload, size_t n)
{
    rh_frame_hdr((unsigned char *)buf, type, n);
    if (n)
        memcpy(buf + RH_FRAME_HDR, payload, n);
    return RH_FRAME_HDR + n;
}

/* Bodies have limits: httpd's LimitRequestBody is 1 GiB by default, and
 * proxies often set less. A stream push ends well before, at the data offset
 * fixed when it started (p_end, where the next one starts: spush_ahead), or
 * at the latest when its frames reach the limit. */
static void body_limit(rhc_tunnel *t, struct rhc_req *r)
{
    uint64_t max = t->route->pol.spush_max;

    /* ends while a frame still fits under the limit: body_read never lets the
     * frames pass it (a body limit of 1,000,000 bytes had got 1,310,660-byte
     * bodies, refused 413 for ever) */
    if (r->kind == REQ_PUSH && !r->end_wanted && !r->p_fin && !r->p_r && !t->push.r_pending &&
        (r->emitted + SPUSH_SLACK >= max || t->up.sent >= r->p_end)) {
        r->end_wanted = 1;
        r->refresh = 1;
        t_log(t, 2, "stream push: %" PRIu64 " bytes sent, ending it for a new one", r->emitted);
    }
}

/* The pending H frame, padded as asked as far as it fits. */
static size_t body_heartbeat(rhc_tunnel *t, char *buf, size_t room)
{
    if (!t->push.hb_pending || room < RH_FRAME_HDR)
        return 0;
    size_t pad = t->push.hb_pad < room - RH_FRAME_HDR ? t->push.hb_pad : room - RH_FRAME_HDR;
    rh_frame_hdr((unsigned char *)buf, RH_FRAME_HEARTBEAT, pad);
    memset(buf + RH_FRAME_HDR, 0, pad);
    t->push.hb_pending = 0;
    t->push.hb_pad = 0;
    return RH_FRAME_HDR + pad;
}

/* The pending A frame (the quiet ack, ack_by_push), into a stream push body. */
size_t ack_frame(rhc_tunnel *t, struct rhc_req *r, char *buf, size_t room)
{
    unsigned char off[8];

    if (!t->push.a_pending || r->kind != REQ_PUSH || room < RH_FRAME_HDR + sizeof(off))
        return 0;
    rh_put_u64(off, t->push.a_off);
    t->push.a_pending = 0;
    r->a_sent = t->push.a_off;
    return emit(buf, RH_FRAME_ACK, off, sizeof(off));
}

/* D frames of the up bytes up to have, every one followed by its C frame
 * (docs/PROTOCOL.md, Integrity), straight from the ring into buf. */
static size_t body_data(rhc_tunnel *t, char *buf, size_t room, uint64_t have)
{
    size_t used = 0;

    while (t->up.sent < have && room - used > RH_FRAME_HDR + CHECK_FRAME) {
        size_t n = room - used - RH_FRAME_HDR - CHECK_FRAME;
        if (n > RH_FRAME_MAX)
            n = RH_FRAME_MAX;
        if (n > have - t->up.sent)
            n = (size_t)(have - t->up.sent);
        uint32_t crc = rhc_upbuf_crc_at(&t->up, t->up.sent);
        unsigned char *d = (unsigned char *)buf + used + RH_FRAME_HDR;
        rh_frame_hdr((unsigned char *)buf + used, RH_FRAME_DATA, n);
        rhc_upbuf_copy(&t->up, t->up.sent, d, n);
        crc = rh_crc32c(crc, d, n);
        used += RH_FRAME_HDR + n;
        t->up.sent += n;
        used += rh_frame_check((unsigned char *)buf + used, t->up.sent, crc);
        rhc_upbuf_mark(&t->up, t->up.sent, crc);
    }
    return used;
}

/* The last frame of a body: R when the local side failed, F after its EOF. */
static size_t body_end(rhc_tunnel *t, struct rhc_req *r, char *buf, size_t room,
                       uint64_t have)
{
    static const char why[] = "client: local connection failed";

    if (t->push.r_pending) {
        if (room < RH_FRAME_HDR + sizeof(why) - 1)
            return 0;
        t->push.r_pending = 0;
        t->push.r_sent = 1;
        r->p_r = 1;
        return emit(buf, RH_FRAME_RESET, why, sizeof(why) - 1);
    }
    /* a duplex whose body hands up to a push: the push carries the F (or the
     * split is given up first: duplex_split) */
    if (!t->up.eof || t->up.sent != up_read_off(t) || t->up.fin_sent ||
        room < RH_FRAME_HDR || t->xp.up_hold || r->split_at)
        return 0;
    t->up.fin_sent = 1;
    r->p_fin = 1;
    t_log(t, 1, "local EOF after %" PRIu64 " bytes: sent F", have);
    return emit(buf, RH_FRAME_FIN, NULL, 0);
}

/* curl wants body bytes of a stream push or a duplex: frames straight from the
 * ring into curl's buffer, as many as it has room for. */
size_t body_read(char *buf, size_t size, size_t nitems, void *ud)
{
    struct rhc_req *r = ud;
    rhc_tunnel *t = r->t;
    size_t room = size * nitems;
    size_t used = 0;
    uint64_t sent_before = t->up.sent;

    rhc_gate_connected(r);      /* curl asks for the body: its connection is up */
    t_touch(t);
    if (r->body_ended)
        return 0;
    if (r == t->rq.spush_next) {
        r->send_paused = 1;         /* its bytes come after the current body's end */
        return CURL_READFUNC_PAUSE;
    }
    body_limit(t, r);
    /* The body ends after R, when given up, or after F. (Acknowledgements of
     * down bytes ride in a streamed body only when nothing is ahead of them:
     * behind up bytes that wait for the target, which waits for down bytes to
     * leave, they would stall an echo; see ack_by_push.) */
    if (r->end_wanted || r->p_r || r->p_fin) {
        r->body_ended = 1;
        if (r->kind == REQ_PUSH)
            spush_rotate(t, r);
        return 0;
    }
    if (r->split_at && t->up.sent >= r->split_at && duplex_split_turn(t, r)) {
        r->body_ended = 1;          /* a duplex's up side goes on in a stream push */
        return 0;
    }
    if (t->end.code && !t->push.r_pending) {
        r->send_paused = 1;         /* tearing down: stay quiet */
        return CURL_READFUNC_PAUSE;
    }
    if (!t->push.r_pending)
        up_fill(t);
    if (r->kind == REQ_PUSH && !t->push.r_pending && room > t->route->pol.spush_max - r->emitted)
        room = (size_t)(t->route->pol.spush_max - r->emitted);
    used += body_heartbeat(t, buf, room);
    used += ack_frame(t, r, buf + used, room - used);
    /* held: while the first response of an unproven path is awaited, nothing
     * goes up, so that the session can still start over if that response never
     * comes */
    uint64_t have = t->xp.up_hold && !t->push.r_pending ? t->up.sent : up_read_off(t);
    if (r->kind == REQ_PUSH && have > r->p_end)
        have = r->p_end;
    if (r->split_at && have > r->split_at)
        have = r->split_at;
    if (!t->push.r_pending)
        used += body_data(t, buf + used, room - used, have);
    used += body_end(t, r, buf + used, room - used, have);
    if (used == 0) {
        r->send_paused = 1;
        return CURL_READFUNC_PAUSE;
    }
    int64_t now = rh_now_ms();
    t->push.last_emit = now;
    if (t->up.sent > sent_before)
        t->push.last_data = now;
    if (t->up.sent > t->up.acked && !t->push.ack_wait_since)
        t->push.ack_wait_since = now;
    r->emitted += used;
    if (t->local.in_dry && up_read_off(t) == t->up.sent && !t->push.r_pending)
        csock_kick_later(t->ctx, r);     /* nothing more for now: pause it soon */
    return used;
}

/* curl wants to send the body again (an authentication round, or a retry on a
 * new connection): the ring still has the bytes, so the body starts over at its
 * Relay-Offset; the server refuses (409) what it already had. */
int body_seek(void *ud, curl_off_t offset, int origin)
{
    struct rhc_req *r = ud;
    rhc_tunnel *t = r->t;

    t_touch(t);
    if (offset != 0 || origin != SEEK_SET)
        return CURL_SEEKFUNC_CANTSEEK;
    if (r->emitted == 0)
        return CURL_SEEKFUNC_OK;
    if (r->p_r || r->body_ended || r->p_off < t->up.base || r->p_off < t->up.acked)
        return CURL_SEEKFUNC_CANTSEEK;
    t->up.sent = r->p_off;
    if (r->p_fin && !t->up.done)
        t->up.fin_sent = 0;
    r->p_fin = 0;
    r->emitted = 0;
    return CURL_SEEKFUNC_OK;
}

int down_headers_done(struct rhc_req *r)
{
    rhc_tunnel *t = r->t;

    if (r->status != 200)
        return 1;                   /* the body is an error text; judged when done */
    t->down.fresh = 0;
    t->down.retries = 0;
    t->ack.verify = 0;              /* the server knows the session */
    if (!r->have_offset || r->offset != t->down.off) {
        t_fail(t, RHC_EXIT_LOST, "%s: server resumes at offset %s%" PRIu64 ", expected %" PRIu64,
               kind_name[r->kind], r->have_offset ? "" : "(missing) ",
               r->have_offset ? r->offset : 0, t->down.off);
        return 0;
    }
    return 1;
}

/* D bytes wait in the response's pend buffer until their C frame vouches for
 * them: a cut response loses only unchecked bytes, which the next pull sends
 * again, and a wrong byte never reaches the local side. */
static int down_take(rhc_tunnel *t, struct rhc_req *r, const unsigned char *p, size_t n)
{
    if (!r->pend && !(r->pend = malloc(RH_FRAME_MAX))) {
        t_fail(t, RHC_EXIT_ERROR, "internal: out of memory");
        return -1;
    }
    if (n > RH_FRAME_MAX - r->pend_len) {
        t_fail(t, RHC_EXIT_INTEGRITY, "%s: " RH_REASON_INTEGRITY ": down data after %" PRIu64
               " without a check frame", kind_name[r->kind], t->down.off);
        return -1;
    }
    memcpy(r->pend + r->pend_len, p, n);
    r->pend_len += n;
    return 0;
}

static int down_check(rhc_tunnel *t, struct rhc_req *r, const rh_frame_event *ev,
                      int64_t now)
{
    uint32_t crc = rh_crc32c(t->down.crc, r->pend, r->pend_len);
    uint64_t end = t->down.off + r->pend_len;

    if (ev->offset != end || ev->crc != crc) {
        t_fail(t, RHC_EXIT_INTEGRITY, "%s: " RH_REASON_INTEGRITY ": down bytes %" PRIu64
               "..%" PRIu64 " (server's check at %" PRIu64 ", crc %08" PRIx32 ", ours %08"
               PRIx32 "); none of them was delivered", kind_name[r->kind], t->down.off, end,
               ev->offset, ev->crc, crc);
        return -1;
    }
    t->down.crc = crc;
    t->down.off = end;
    r->rx_data += r->pend_len;
    if (r->pend_len)
        t->down.last_data = t->sess.last_busy = now;
    deliver(t, r->pend, r->pend_len);
    r->pend_len = 0;
    return 0;
}

/* Frames of a pull or duplex response: data goes to the local side once
 * checked, A frames confirm up bytes. */
size_t resp_write(char *ptr, size_t size, size_t nmemb, void *ud)
{
    struct rhc_req *r = ud;
    rhc_tunnel *t = r->t;
    size_t len = size * nmemb;
    size_t off = 0;

    t_touch(t);
    if (r->status != 200)
        return body_cb(ptr, size, nmemb, ud);
    if (t->end.code)
        return 0;                   /* tearing down: stop this transfer */
    if (t->local.olen >= OBUF_SOFT) {
        /* Nothing of this call is consumed; curl hands the same bytes again on
         * unpause, so the parser sees every byte exactly once. */
        r->recv_paused = 1;
        return CURL_WRITEFUNC_PAUSE;
    }
    int64_t now = rh_now_ms();
    t->down.last_rx = now;
    pull_answered(t, r, now);
    while (off < len) {
        rh_frame_event ev;
        size_t n = rh_frame_parse(&r->parser, (const unsigned char *)ptr + off, len - off,
                                  "DHFREAC", &ev);
        off += n;
        if (ev.type == RH_FEV_NONE) {
            if (n == 0)
                off = len;          /* cannot happen: the parser takes all it gets */
            continue;
        }
        if (ev.type != RH_FEV_ERROR && (r->saw_fin || r->saw_end)) {
            t_fail(t, RHC_EXIT_LOST, "%s: protocol error: frame after %s", kind_name[r->kind],
                   r->saw_fin ? "F" : "E");
            return 0;
        }
        if (!r->got_frame) {
            r->got_frame = 1;
            t->xp.down_seen = t->xp.down;
            if (!r->batch) {
                /* the path passes this transport's responses: up bytes may go */
                t->route->pol.proven[r->kind == REQ_DUPLEX ? RHC_XP_DUPLEX : RHC_XP_STREAM] = 1;
                t->xp.up_hold = 0;
            }
        }
        switch (ev.type) {
        case RH_FEV_NONE:
            break;
        case RH_FEV_DATA:
            if (down_take(t, r, ev.data, ev.len) != 0)
                return 0;
            break;
        case RH_FEV_CHECK:
            if (down_check(t, r, &ev, now) != 0)
                return 0;
            break;
        case RH_FEV_HEARTBEAT:
            break;
        case RH_FEV_ACK:
            if (ev.offset > up_read_off(t)) {
                t_fail(t, RHC_EXIT_LOST, "%s: protocol error: server confirms %" PRIu64
                       " up bytes of %" PRIu64, kind_name[r->kind], ev.offset, up_read_off(t));
                return 0;
            }
            up_ack(t, ev.offset);
            break;
        case RH_FEV_FIN:
            if (r->pend_len) {
                t_fail(t, RHC_EXIT_INTEGRITY, "%s: " RH_REASON_INTEGRITY ": F after unchecked "
                       "down bytes at %" PRIu64, kind_name[r->kind], t->down.off);
                return 0;
            }
            r->saw_fin = 1;
            t->down.fin = 1;
            t_log(t, 1, "server finished after %" PRIu64 " bytes (F)", t->down.off);
            break;
        case RH_FEV_END:
            r->saw_end = 1;
            /* a duplex whose response ended: its body ends too, then a new one */
            if (r->kind == REQ_DUPLEX && r->streamed)
                r->end_wanted = 1;
            break;
        case RH_FEV_RESET: {
            char why[256];
            size_t k = 0;
            for (size_t i = 0; i < ev.len && k + 1 < sizeof(why); ++i)
                why[k++] = (ev.data[i] >= 0x20 && ev.data[i] < 0x7f) ? (char)ev.data[i] : '?';
            why[k] = '\0';
            t_fail(t, strncmp(why, RH_REASON_INTEGRITY, strlen(RH_REASON_INTEGRITY))
                      ? RHC_EXIT_LOST : RHC_EXIT_INTEGRITY,
                   "session reset by the server%s%s", k ? ": " : "", why);
            t->end.server_gone = 1;
            return 0;
        }
        case RH_FEV_ERROR:
            t_fail(t, RHC_EXIT_LOST, "%s: protocol error: %s", kind_name[r->kind],
                   r->parser.error ? r->parser.error : "bad frame");
            return 0;
        }
        if (t->end.code)
            return 0;
    }
    return len;
}

/* A request held for the tunnel's life (a stream pull, a duplex) goes on a new
 * connection unless streams share connections (as stream pushes always do).
 * A pooled connection idles in the Apache child that accepted it, and the
 * event MPM serves it only there: once every thread of that child is held by
 * other tunnels' requests, a held request sent on it is never taken up
 * (docs/BENCHMARKS.md, CPU while idle). The event MPM accepts a new connection
 * only in a child with a free thread. */
static int down_req_fresh(const struct rhc_req *r)
{
    return !r->batch && !rhc_curl_multiplex_ok();
}

/* Starts a request whose response is a down frame stream (pull, duplex): from
 * down.off, which its Relay-Ack told the server, on a new connection after a
 * cut. */
int down_req_go(rhc_tunnel *t, struct rhc_req *r, int64_t now)
{
    rh_frame_parser_init(&r->parser);
    curl_easy_setopt(r->h, CURLOPT_BUFFERSIZE, PULL_BUFFERSIZE);
    curl_easy_setopt(r->h, CURLOPT_WRITEFUNCTION, resp_write);
    if (t->down.fresh || down_req_fresh(r))
        curl_easy_setopt(r->h, CURLOPT_FRESH_CONNECT, 1L);
    if (t->down.fresh)
        t->ack.verify = t->sess.resume;
    if (req_go(r) < 0)
        return -1;
    t->down.repull_at = 0;
    t->down.last_rx = now;
    t->ack.sent = t->ack.conf = t->down.off;   /* Relay-Ack */
    return 0;
}
