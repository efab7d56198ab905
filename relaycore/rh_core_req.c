/* The relay core's requests on an existing session (PUSH, PULL, CLOSE, ACK)
 * and STAT, the request line they arrive on, and the dispatch of a
 * connection's events by what it is. Separate from the directions: this is
 * where a connection becomes a push or a pull. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "rh_core_int.h"
#include "rh_core_watch.h"
#include "rh_util.h"

#define PUSH_AHEAD_MAX (64ull << 20) /* a push may start this far beyond the accepted offset:
                                        a stream push asked for before the one it follows
                                        ends may be 32 MiB in flight + 32 MiB ahead */

static void req_push(core *c, conn *k, const rh_ipc_req *rq)
{
    session *s = rh_core_session_find(c, k, rq->token);
    if (!s || rh_core_conn_hold(c, k, s->cl) != 0)
        return;
    k->has_len = rq->has_len;
    k->body_len = rq->body_len;
    /* the active push holds its whole body and only its end is still to come:
     * a push that starts where it stops is the next one, not a retry */
    int next_one = s->push && s->push->has_len && s->push->body_in >= s->push->body_len
        && rq->offset == s->up_acc;
    if (s->resumable && rq->offset <= s->up_acc && !next_one) {
        /* a retry after a cut: it replaces a push the server may still think is
         * alive, and what the session already has is dropped from it; a late
         * push that began before the active one must not cut it off */
        if (s->push && rq->offset < s->push->start_off) {
            rh_core_push_behind(c, k, rq->offset, s->up_acc);
            return;
        }
        if (s->push) {
            conn *old = s->push;
            rh_core_push_detach(s);
            rh_core_conn_error(c, old, 409, "replaced by a newer push of this session");
            rh_stats_resumed(&c->cfg->reg->stats);
            rh_core_log(c, RH_LOG_DEBUG, "session %s: push taken over at %" PRIu64, s->sid,
                        rq->offset);
        }
        k->skip = s->up_acc - rq->offset;
        k->start_off = rq->offset;
        rh_core_push_attach(c, s, k);
        rh_core_session_pump(c, s);
        return;
    }
    if (s->up_fin) {
        rh_core_conn_error(c, k, RH_STATUS_CONFLICT, "reason=" RH_REASON_TOKEN_FIN
                           " the client already finished sending (fin)");
        return;
    }
    if (rq->offset < s->up_acc) {
        rh_core_push_behind(c, k, rq->offset, s->up_acc);
        return;
    }
    if (s->push || rq->offset > s->up_acc) {
        /* a later push of several in flight: it waits for its turn, unread, a
         * short while (it holds an httpd worker) and only if it is near */
        rh_limits lim;
        rh_registry_get_limits(c->cfg->reg, &lim);
        rh_core_push_wait_replace(c, s, rq->offset);
        if (s->nwait >= PUSH_WAIT_MAX) {
            rh_core_conn_error(c, k, 409, "too many pushes in flight for this session");
            return;
        }
        if (rq->offset - s->up_acc > PUSH_AHEAD_MAX) {
            rh_core_conn_error(c, k, 409, "push offset %" PRIu64 " is too far ahead of accepted %"
                               PRIu64, rq->offset, s->up_acc);
            return;
        }
        k->kind = CK_PUSHWAIT;
        k->s = s;
        k->want_off = rq->offset;
        k->wait_until = rh_now_ms() + 1000L * (lim.push_wait_s ? lim.push_wait_s : s->idle_s);
        s->push_wait[s->nwait++] = k;
        /* nothing is read while it waits, but a handler that hangs up must be seen:
         * epoll reports HUP/ERR whatever the mask */
        rh_core_arm(c, k->fd, k, &k->ev, EPOLLHUP);
        if (k->wait_until < s->timer.deadline) {
            s->timer.deadline = k->wait_until;
            rh_timers_fix(&c->timers, &s->timer);
        }
        return;
    }
    k->start_off = rq->offset;
    rh_core_push_attach(c, s, k);
    rh_core_session_pump(c, s);
}


static void req_pull(core *c, conn *k, const rh_ipc_req *rq)
{
    session *s = rh_core_session_find(c, k, rq->token);
    if (!s || rh_core_conn_hold(c, k, s->cl) != 0)
        return;
    int batch = !strcmp(rq->mode, RH_MODE_BATCH);
    if (!batch && strcmp(rq->mode, RH_MODE_STREAM) != 0) {
        rh_core_conn_error(c, k, 400, "unsupported pull mode '%s'", rq->mode);
        return;
    }
    if (s->resumable) {
        /* up to the most ever sent, not down_sent: a pull a proxy held took the
         * session over with its old ack and rewound down_sent; the client's
         * next pull acks what it got before (416 here had ended the tunnel) */
        if (rq->offset < s->down_acked || rq->offset > s->down_sent_max) {
            rh_core_conn_error(c, k, 416, "ack %" PRIu64 " is outside the bytes kept (%" PRIu64
                               " to %" PRIu64 ")", rq->offset, s->down_acked, s->down_sent_max);
            return;
        }
        /* resume: a new pull replaces one the server may still think is alive,
         * and everything after the client's ack is sent again */
        if (s->pull) {
            conn *old = s->pull;
            s->pull = NULL;
            old->s = NULL;
            rh_core_conn_kill(c, old);
            rh_stats_resumed(&c->cfg->reg->stats);
            rh_core_log(c, RH_LOG_DEBUG, "session %s: pull taken over at %" PRIu64, s->sid,
                        rq->offset);
        }
        if (rq->offset > s->down_sent)
            s->down_sent = rq->offset;   /* the ring holds them: never consumed */
        rh_core_down_ack(c, s, rq->offset);
        s->down_sent = rq->offset;   /* == down_acked now */
        s->down_crc_sent = s->down_crc_acked;
        s->down_crc_off = s->down_sent;
        s->down_fin_sent = 0;   /* it asks again: it did not get the F */
    }
    if (s->pull) {
        rh_core_conn_error(c, k, 409, "a pull is already active for this session");
        return;
    }
    /* checked: a pull starts where a C frame vouched for the bytes before */
    if (rq->offset != s->down_sent || (s->check && rq->offset != s->down_crc_off)) {
        rh_core_conn_error(c, k, 416, "ack %" PRIu64 " does not match sent %" PRIu64
                           ": bytes were lost and the session cannot resume",
                           rq->offset, s->down_sent);
        rh_core_session_end(c, s, 1, "down bytes lost with a cut pull");
        return;
    }
    if (s->down_fin_sent) {
        rh_core_conn_error(c, k, 410, "session already finished");
        return;
    }
    k->kind = CK_PULL;
    k->s = s;
    k->last_write = rh_now_ms();
    s->pull = k;
    /* a stream pull drains the ring as the target fills it: reading ahead by
     * bufsize is enough. A batch pull takes a round trip per answer, so each
     * answer carries all the ring may hold (the window included) */
    s->readahead = batch ? s->down.cap : s->down.cap - s->window;
    if (batch) {
        k->batch = 1;
        k->keep = rq->keep;
        k->poll_deadline = k->last_write + 1000L * (rq->poll_s ? rq->poll_s : RH_DEFAULT_POLL_S);
    } else {
        /* an H at once lets the client see whether the path buffers responses */
        rh_core_out_printf(k, "OK %" PRIu64, s->down_sent);
        rh_core_out_frame(k, RH_FRAME_HEARTBEAT, NULL, 0);
        rh_core_out_ack(k, s->up_acc);
        k->a_sent = s->up_acc;
    }
    if (s->timer.deadline > rh_core_session_next_deadline(s)) {
        s->timer.deadline = rh_core_session_next_deadline(s);
        rh_timers_fix(&c->timers, &s->timer);
    }
    rh_core_session_pump(c, s);
}

static void req_close(core *c, conn *k, const rh_ipc_req *rq)
{
    session *s = rh_core_session_lookup(c, k, rq->token);
    if (!s)
        return;
    if (s->unclaimed && !rq->integrity) {
        /* a serve that cannot take the connection: its client tries another */
        rh_pair_decline(c, s, "its serve declined the connection");
        rh_core_out_printf(k, "OK");
        rh_core_conn_reply_done(c, k);
        return;
    }
    if (s->unclaimed)
        rh_pair_claimed(c, s);
    if (rq->integrity) {
        /* the client's check of down bytes failed: as serious as ours */
        ++c->integrity_failures;
        rh_core_log(c, RH_LOG_ERR, "session %s: " RH_REASON_INTEGRITY " (down bytes, found "
                    "by the client)", s->sid);
        rh_core_session_end(c, s, 1, RH_REASON_INTEGRITY " (down bytes, found by the client)");
    } else if (s->finished)
        rh_core_session_end(c, s, 0, "closed by both ends");
    else if ((s->up_fin || s->push) && s->down_fin_sent && !s->down_reset) {
        /* the client has received everything and sent its last push: up bytes
         * the target has not taken yet (a slow target, a rendezvous peer), and
         * the rest of that push, still go to it; then the session ends cleanly,
         * once a pull still attached (a duplex the handler holds) has gone too
         * (a push that never ends leaves it to the idle timeout). Ending it now
         * reset a rendezvous peer before it had its last bytes. */
        s->close_asked = 1;
        rh_core_session_pump(c, s);
    } else
        rh_core_session_end(c, s, 1, "closed by client");
    rh_core_out_printf(k, "OK");
    rh_core_conn_reply_done(c, k);
}

/* An acknowledgement on its own request, so it never waits behind up data. */
static void req_ack(core *c, conn *k, const rh_ipc_req *rq)
{
    session *s = rh_core_session_find(c, k, rq->token);
    if (!s)
        return;
    if (rq->offset > s->down_sent_max) {
        rh_core_conn_error(c, k, 416, "ack %" PRIu64 " is beyond the bytes sent (%" PRIu64 ")",
                           rq->offset, s->down_sent_max);
        return;
    }
    /* beyond down_sent (a late pull rewound it): kept, freed by the next pull */
    rh_core_down_ack(c, s, rq->offset);
    rh_core_out_printf(k, "OK %" PRIu64, s->down_acked);
    rh_core_conn_reply_done(c, k);
    rh_core_session_pump(c, s);   /* freed room may let the target be read again */
}

static void req_stat(core *c, conn *k)
{
    const rh_registry *r = c->cfg->reg;
    rh_core_out_printf(k, "OK active=%u opened=%" PRIu64 " closed=%" PRIu64 " integrity=%" PRIu64
                       " held=%u refused=%" PRIu64, r->active, r->total_opened, r->total_closed,
                       c->integrity_failures, c->held, c->refused);
    rh_core_conn_reply_done(c, k);
}

/* A new connection: its request line, as far as it came, then the request. */
/* LOGS: the httpd parent, after a restart, hands over its new error log and
 * the module's log level (a rotated log is then written, not the old file). */
static void req_logs(core *c, conn *k, const rh_ipc_req *rq)
{
    struct ucred cred;
    socklen_t len = sizeof(cred);
    /* only httpd's parent: the unix socket lets every child of httpd in */
    if (getsockopt(k->fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0
        || (cred.pid != getppid() && cred.uid != 0) || !c->cfg->relog) {
        rh_core_conn_error(c, k, 403, "LOGS is for the httpd parent");
        return;
    }
    c->log_level = c->cfg->relog(c->cfg->log_ctx, k->passed_fd, (int)rq->log_level);
    k->passed_fd = -1;   /* the callback owns it */
    rh_core_log(c, RH_LOG_DEBUG, "logs reopened after a restart of httpd (level %u)",
                rq->log_level);
    rh_core_out_printf(k, "OK");
    rh_core_conn_reply_done(c, k);
}

/* Reads what came of the request line; a descriptor passed with it (LOGS)
 * is kept in passed_fd. */
static ssize_t conn_recv(conn *k)
{
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } ctl;
    struct iovec iov = { k->line + k->line_len, sizeof(k->line) - k->line_len };
    struct msghdr msg = { 0 };
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = ctl.buf;
    msg.msg_controllen = sizeof(ctl.buf);
    ssize_t n = recvmsg(k->fd, &msg, MSG_CMSG_CLOEXEC);
    for (struct cmsghdr *cm = n > 0 ? CMSG_FIRSTHDR(&msg) : NULL; cm;
         cm = CMSG_NXTHDR(&msg, cm)) {
        if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
            continue;
        int fd;
        memcpy(&fd, CMSG_DATA(cm), sizeof(fd));
        if (k->passed_fd >= 0)
            close(fd);   /* one per request line */
        else
            k->passed_fd = fd;
    }
    return n;
}

static void conn_new_readable(core *c, conn *k)
{
    ssize_t n = conn_recv(k);
    if (n <= 0) {
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        rh_core_conn_kill(c, k);
        return;
    }
    k->line_len += (size_t)n;
    unsigned char *nl = memchr(k->line, '\n', k->line_len);
    if (!nl) {
        if (k->line_len == sizeof(k->line))
            rh_core_conn_error(c, k, 400, "request line too long");
        return;
    }
    char line[RH_IPC_LINE_MAX];
    size_t ll = (size_t)(nl - k->line);
    memcpy(line, k->line, ll);
    line[ll] = '\0';
    rh_ipc_req rq;
    if (rh_ipc_parse_req(line, &rq) != 0) {
        rh_core_conn_error(c, k, 400, "malformed core request");
        return;
    }
    switch (rq.op) {
    case RH_IPC_OPEN:  rh_core_req_open(c, k, &rq); break;
    case RH_IPC_PUSH:  req_push(c, k, &rq); break;
    case RH_IPC_PULL:  req_pull(c, k, &rq); break;
    case RH_IPC_CLOSE: req_close(c, k, &rq); break;
    case RH_IPC_ACK:   req_ack(c, k, &rq); break;
    case RH_IPC_STAT:  req_stat(c, k); break;
    case RH_IPC_LOGS:  req_logs(c, k, &rq); break;
    case RH_IPC_LISTEN: rh_pair_listen(c, k, &rq); break;
    case RH_IPC_RESOLVE: rh_core_req_resolve(c, k, &rq); break;
    case RH_IPC_GONE:  rh_core_session_gone(c, k, rq.token); break;
    case RH_IPC_WATCH: rh_core_watch_req(c, k, &rq, k->line + ll + 1, k->line_len - ll - 1);
                       break;
    default:           rh_core_conn_error(c, k, 400, "unknown core request"); break;
    }
}

/* An event on a connection from an httpd child, by what the connection is now. */
void rh_core_conn_event(core *c, conn *k, uint32_t events)
{
    session *s = k->s;
    switch (k->kind) {
    case CK_NEW:
        conn_new_readable(c, k);
        return;
    case CK_OPEN:
        /* the handler gave up waiting for the connect */
        if (s)
            rh_core_session_end(c, s, 1, "opener went away");
        rh_core_conn_kill(c, k);
        return;
    case CK_REPLY: {
        int rv = rh_core_out_flush(k);
        if (rv == 0)
            rh_core_conn_replied(c, k);
        else if (rv != 1)
            rh_core_conn_kill(c, k);
        return;
    }
    case CK_PUSHWAIT:
        /* the handler hung up while waiting: its place is free again */
        if (s)
            for (int i = 0; i < s->nwait; ++i)
                if (s->push_wait[i] == k) {
                    s->push_wait[i] = s->push_wait[--s->nwait];
                    break;
                }
        k->s = NULL;
        rh_core_conn_kill(c, k);
        return;
    case CK_LISTEN:
    case CK_SVCWAIT:
        rh_pair_conn_gone(c, k);   /* the handler hung up while it waited */
        return;
    case CK_RESOLVE:
        rh_core_resolve_gone(c, k);   /* the handler gave up on the lookup */
        return;
    case CK_PUSH:
        rh_core_push_event(c, k, events);
        return;
    case CK_PULL:
        rh_core_pull_event(c, k, events);
        return;
    case CK_WATCH:
        rh_core_watch_event(c, k, events);
        return;
    }
}
