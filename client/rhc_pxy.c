/* relay-https client: proxy mode (see rhc_pxy.h). A local connection first
 * goes through a handshake here, non-blocking on the shared loop and bounded
 * in time (--handshake-timeout) and in number (--max-connections, handshakes
 * and tunnels together); once it names a destination it becomes a tunnel
 * (rhc_tunnel_start_to) with every transport, resume and check of forward
 * mode, and the tunnel answers the client (greet_*) when the server's open
 * ended: the SOCKS5 reply or the HTTP status, before any byte of the
 * destination's.
 *
 * The handshake reads only the bytes of its messages: SOCKS5 says how long
 * each is (rhc_socks_need), and an HTTP head is peeked and taken up to its
 * empty line. What the client sends after that stays in the socket for the
 * tunnel. SOCKS5 commands are dispatched in socks_request: CONNECT here; a
 * UDP ASSOCIATE goes to rhc_socks_udp.c, which keeps the connection for the
 * association's life. */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "rh_util.h"
#include "rhc_check.h"
#include "rhc_forward.h"
#include "rhc_local.h"
#include "rhc_httpc.h"
#include "rhc_opts_int.h"
#include "rhc_pxy.h"
#include "rhc_route.h"
#include "rhc_signals.h"
#include "rhc_socks.h"
#include "rhc_socks_udp.h"
#include "rhc_stats.h"

#define ACCEPT_BACKOFF_MS 1000     /* after EMFILE and friends */

struct plistener {
    int fd;
    struct rhc_route *route;
    char bound[128];
};

enum pc_proto { PC_SNIFF, PC_SOCKS, PC_HTTP };

/* a local connection still in its handshake */
struct pconn {
    struct pconn *next;
    int fd;
    int64_t deadline;
    enum pc_proto proto;
    enum rhc_socks_phase ph;
    size_t have;
    struct plistener *l;
    char peer[64];
    unsigned char buf[RHC_HTTPC_HEAD_MAX];
};

struct proxy {
    rhc_ctx *c;
    struct plistener *ls;
    size_t nls;
    struct pconn *hs;           /* handshakes */
    size_t nhs;
    size_t max_conns;
    unsigned long serial;
    struct rhc_sudp *udp;       /* UDP associations (rhc_socks_udp.c) */
};

static const char greet_socks_tag, greet_http_tag;   /* the greet's arg: which protocol */

/* ------------------------------------------------------------- options */

int rhc_pxy_set_max_conns(struct rhc_opts *o, const struct opt_def *d, char *arg)
{
    uint64_t v;
    if (rh_parse_u64(arg, strlen(arg), &v) != 0 || v < 1 || v > 1000000)
        return rhc_usage_error("--max-connections %s: expected 1 to 1000000", arg);
    o->max_conns = (long)v;
    return -1;
}

int rhc_pxy_set_handshake(struct rhc_opts *o, const struct opt_def *d, char *arg)
{
    char *end = NULL;
    double s = strtod(arg, &end);
    if (end == arg || *end || !(s >= 0.1) || s > 3600)
        return rhc_usage_error("--handshake-timeout %s: expected seconds (0.1 to 3600)", arg);
    o->handshake_ms = (long)(s * 1000.0 + 0.5);
    return -1;
}

int rhc_pxy_set_local_user(struct rhc_opts *o, const struct opt_def *d, char *arg)
{
    const char *colon = strchr(arg, ':');
    /* RFC 1929 carries each in at most 255 bytes */
    if (!colon || colon == arg || !colon[1] || colon - arg > 255 || strlen(colon + 1) > 255)
        return rhc_usage_error("--local-user: expected USER:PASSWORD (each 1 to 255 bytes)");
    o->local_user = arg;
    return -1;
}

/* ------------------------------------------------------------ answers */

/* A handshake answer or a tunnel's greeting, written at once: the socket's
 * buffer is empty this early. 0, or -1. */
static int say(int fd, const void *p, size_t n)
{
    ssize_t w = send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    return w == (ssize_t)n ? 0 : -1;
}

static int greet_socks(void *arg, int fd, const struct rhc_open_result *res)
{
    unsigned char rep[10];
    struct rhc_refusal f = { RHC_SOCKS_OK, 200, NULL };
    if (!res->ok)
        rhc_socks_refusal(res->status, res->reason, &f);
    return say(fd, rep, rhc_socks_reply(rep, f.socks));
}

static int greet_http(void *arg, int fd, const struct rhc_open_result *res)
{
    char rep[1024];
    struct rhc_refusal f = { RHC_SOCKS_OK, 200, NULL };
    if (!res->ok)
        rhc_socks_refusal(res->status, res->reason, &f);
    return say(fd, rep, rhc_httpc_reply(rep, sizeof(rep), f.http, f.proxy_status,
                                        res->msg ? res->msg : ""));
}

/* ----------------------------------------------------------- handshakes */

static void pc_close(struct proxy *p, struct pconn *pc)
{
    for (struct pconn **q = &p->hs; *q; q = &(*q)->next)
        if (*q == pc) {
            *q = pc->next;
            break;
        }
    --p->nhs;
    if (pc->fd >= 0)
        close(pc->fd);
    free(pc);
}

/* The handshake is over: the socket goes to a tunnel to dest. */
static void pc_tunnel(struct proxy *p, struct pconn *pc, const char *dest, int http)
{
    char label[112];
    int fd = pc->fd;
    struct rhc_route *route = pc->l->route;
    snprintf(label, sizeof(label), "#%lu %.40s %.60s", ++p->serial, pc->peer, dest);
    pc->fd = -1;
    pc_close(p, pc);
    if (!rhc_tunnel_start_to(p->c, route, fd, label, dest,
                             http ? greet_http : greet_socks,
                             (void *)(http ? &greet_http_tag : &greet_socks_tag)))
        rhc_err("%s: out of memory", label);   /* the socket is closed */
}

/* Reads what the current SOCKS5 message still needs: 1 when it is whole, 0
 * to wait, -1 when the connection is to end. */
static int socks_read(struct pconn *pc)
{
    for (;;) {
        size_t need = rhc_socks_need(pc->ph, pc->buf, pc->have);
        if (need == 0 || need > sizeof(pc->buf))
            return -1;
        if (pc->have >= need)
            return 1;
        ssize_t n = recv(pc->fd, pc->buf + pc->have, need - pc->have, 0);
        if (n > 0) {
            pc->have += (size_t)n;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return 0;
        return -1;
    }
}

/* A UDP ASSOCIATE: the connection goes to rhc_socks_udp.c (its DST, often
 * 0.0.0.0:0, is the client's own: datagrams are taken from its address). */
static void socks_associate(struct proxy *p, struct pconn *pc)
{
    char peer[sizeof(pc->peer)];
    int fd = pc->fd;
    struct rhc_route *route = pc->l->route;
    memcpy(peer, pc->peer, sizeof(peer));
    pc->fd = -1;
    pc_close(p, pc);
    rhc_sudp_associate(p->udp, route, fd, peer);
}

/* A whole SOCKS5 request: CONNECT becomes a tunnel, UDP ASSOCIATE an
 * association; BIND is refused. 0, or -1. */
static int socks_request(struct proxy *p, struct pconn *pc)
{
    struct rhc_socks_req rq;
    unsigned char rep[10];
    int code = rhc_socks_request(pc->buf, pc->have, &rq);

    if (code == RHC_SOCKS_OK && rq.cmd == RHC_SOCKS_CONNECT) {
        pc_tunnel(p, pc, rq.dest, 0);
        return 0;
    }
    if (rq.cmd == RHC_SOCKS_UDP && (code == RHC_SOCKS_OK || code == RHC_SOCKS_HOST_UNREACH)) {
        socks_associate(p, pc);
        return 0;
    }
    if (code == RHC_SOCKS_OK)
        code = RHC_SOCKS_BAD_COMMAND;
    rhc_info("%s: SOCKS5 request refused (reply %d)", pc->peer, code);
    say(pc->fd, rep, rhc_socks_reply(rep, (unsigned char)code));
    return -1;
}

/* One step of a SOCKS5 handshake: 0 to go on, -1 to end the connection (or
 * it went to a tunnel: then pc is gone, and 0). */
static int socks_step(struct proxy *p, struct pconn *pc)
{
    const char *userpass = pc->l->route->o->local_user;
    int rv;
    while ((rv = socks_read(pc)) == 1) {
        unsigned char ans[2];
        if (pc->ph == RHC_SOCKS_GREET) {
            unsigned char m = rhc_socks_method(pc->buf, pc->have, userpass);
            ans[0] = RHC_SOCKS_VERSION;
            ans[1] = m;
            if (say(pc->fd, ans, 2) < 0 || m == RHC_SOCKS_NO_METHOD) {
                rhc_info("%s: SOCKS5 client offers no method we take%s", pc->peer,
                         userpass ? " (--local-user wants username/password)" : "");
                return -1;
            }
            pc->ph = m == RHC_SOCKS_USERPASS ? RHC_SOCKS_AUTH : RHC_SOCKS_REQUEST;
        } else if (pc->ph == RHC_SOCKS_AUTH) {
            int ok = rhc_socks_auth_ok(pc->buf, pc->have, userpass);
            ans[0] = RHC_SOCKS_AUTH_VERSION;
            ans[1] = ok ? 0 : 1;
            if (say(pc->fd, ans, 2) < 0 || !ok) {
                rhc_err("%s: SOCKS5 username or password wrong", pc->peer);
                return -1;
            }
            pc->ph = RHC_SOCKS_REQUEST;
        } else {
            return socks_request(p, pc);
        }
        pc->have = 0;
    }
    return rv;
}

/* One step of an HTTP CONNECT head: peeked, then taken up to its end. */
static int http_step(struct proxy *p, struct pconn *pc)
{
    char rep[1024], dest[RH_HOST_MAX + 16];
    size_t room = sizeof(pc->buf) - pc->have;
    ssize_t n = recv(pc->fd, pc->buf + pc->have, room, MSG_PEEK);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return 0;
    if (n <= 0)
        return -1;
    size_t from = pc->have > 3 ? pc->have - 3 : 0;
    size_t end = rhc_httpc_head_len((char *)pc->buf + from, pc->have + (size_t)n - from);
    size_t take = end ? from + end - pc->have : (size_t)n;
    if (recv(pc->fd, pc->buf + pc->have, take, 0) != (ssize_t)take)
        return -1;
    pc->have += take;
    if (!end) {
        if (pc->have < sizeof(pc->buf))
            return 0;
        say(pc->fd, rep, rhc_httpc_reply(rep, sizeof(rep), 431, NULL, "request head too long"));
        return -1;
    }
    int st = rhc_httpc_parse((char *)pc->buf, pc->have, pc->l->route->o->local_user, dest,
                             sizeof(dest));
    if (st) {
        rhc_info("%s: HTTP request refused (%d)", pc->peer, st);
        say(pc->fd, rep, rhc_httpc_reply(rep, sizeof(rep), st, NULL,
                                         st == 405 ? "relay-https proxy: only CONNECT"
                                         : st == 407 ? "relay-https proxy: credentials needed"
                                         : "relay-https proxy: malformed CONNECT"));
        return -1;
    }
    pc_tunnel(p, pc, dest, 1);
    return 0;
}

/* The first byte says the protocol: 5 SOCKS5, a letter HTTP. */
static int sniff(struct pconn *pc)
{
    unsigned char b;
    ssize_t n = recv(pc->fd, &b, 1, MSG_PEEK);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return 0;
    if (n <= 0)
        return -1;
    if (b == RHC_SOCKS_VERSION) {
        pc->proto = PC_SOCKS;
        pc->ph = RHC_SOCKS_GREET;
    } else if (b >= 'A' && b <= 'Z') {
        pc->proto = PC_HTTP;
    } else {
        static const unsigned char socks4_no[8] = { 0, 0x5b };
        if (b == 4)
            say(pc->fd, socks4_no, sizeof(socks4_no));
        rhc_info("%s: neither SOCKS5 nor HTTP (first byte 0x%02x)", pc->peer, b);
        return -1;
    }
    return 0;
}

static void pc_event(struct proxy *p, struct pconn *pc)
{
    int rv = 0;
    if (pc->proto == PC_SNIFF)
        rv = sniff(pc);
    if (rv == 0 && pc->proto == PC_SOCKS)
        rv = socks_step(p, pc);
    else if (rv == 0 && pc->proto == PC_HTTP)
        rv = http_step(p, pc);
    if (rv < 0)
        pc_close(p, pc);
}

/* ------------------------------------------------------------- the loop */

static size_t conns(const struct proxy *p)
{
    return p->nhs + rhc_ctx_tunnels(p->c) + rhc_sudp_count(p->udp);
}

/* Accepts what waits, within --max-connections; -1 when accepting must
 * pause (descriptors). */
static int accept_some(struct proxy *p, struct plistener *l, const struct rhc_opts *o)
{
    while (conns(p) < p->max_conns) {
        struct sockaddr_storage ss;
        socklen_t sl;
        int fd = rhc_accept_local(l->fd, &ss, &sl);
        if (fd < 0)
            return fd == RHC_ACCEPT_NONE ? 0 : -1;
        struct pconn *pc = calloc(1, sizeof(*pc));
        if (!pc) {
            close(fd);
            return -1;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        pc->fd = fd;
        pc->l = l;
        pc->deadline = rh_now_ms() + (o->handshake_ms > 0 ? o->handshake_ms
                                                          : RHC_PXY_HANDSHAKE_DEFAULT);
        rhc_addr_text((struct sockaddr *)&ss, sl, pc->peer, sizeof(pc->peer));
        pc->next = p->hs;
        p->hs = pc;
        ++p->nhs;
    }
    return 0;
}

/* Handshakes past their time end (an HTTP client hears 408); returns the
 * wait until the next one is due, or -1. */
static long expire(struct proxy *p, int64_t now)
{
    long wait = -1;
    for (struct pconn *pc = p->hs, *next; pc; pc = next) {
        next = pc->next;
        if (now >= pc->deadline) {
            char rep[256];
            rhc_info("%s: no destination named in time: closed", pc->peer);
            if (pc->proto == PC_HTTP)
                say(pc->fd, rep, rhc_httpc_reply(rep, sizeof(rep), 408, NULL,
                                                 "relay-https proxy: request too slow"));
            pc_close(p, pc);
        } else if (wait < 0 || pc->deadline - now < wait) {
            wait = (long)(pc->deadline - now);
        }
    }
    return wait;
}

static int open_listeners(struct proxy *p, const struct rhc_cmd *cmd)
{
    for (size_t i = 0; i < cmd->nroutes; ++i) {
        const struct rhc_opts *o = &cmd->routes[i];
        struct plistener *l = &p->ls[i];
        if ((l->fd = rhc_bound_socket(o, l->bound, sizeof(l->bound))) < 0)
            return RHC_EXIT_LOCAL;
        if (!(l->route = rhc_ctx_add_route(p->c, o, cmd->nroutes > 1 && o->name ? o->name
                                                                                : l->bound))) {
            rhc_err("out of memory");
            return RHC_EXIT_ERROR;
        }
        ++p->nls;
    }
    return -1;
}

/* Checks each route's server, then listens. -1 to serve, else the exit code. */
static int start(struct proxy *p, const struct rhc_cmd *cmd)
{
    for (size_t i = 0; i < p->nls; ++i) {
        int crc = rhc_check_start(p->c, p->ls[i].route, cmd->routes[0].retry_start);
        if (crc != 0)
            return crc < 0 ? RHC_EXIT_OK : crc;
    }
    for (size_t i = 0; i < p->nls; ++i) {
        if (listen(p->ls[i].fd, RHC_LISTEN_BACKLOG) != 0) {
            rhc_err("listen %s: %s", p->ls[i].bound, strerror(errno));
            return RHC_EXIT_LOCAL;
        }
        rhc_err("proxy (SOCKS5, HTTP CONNECT) on %s for %s", p->ls[i].bound,
                p->ls[i].route->o->base_url);
    }
    return -1;
}

static int serve(struct proxy *p, struct pollfd **exp, size_t *excap)
{
    int64_t accept_again = 0;
    for (;;) {
        int64_t now = rh_now_ms();
        size_t n = 1 + p->nls + p->nhs + rhc_sudp_nfds(p->udp);
        if (n > *excap) {
            struct pollfd *e = realloc(*exp, n * 2 * sizeof(*e));
            if (!e)
                return RHC_EXIT_ERROR;
            *exp = e;
            *excap = n * 2;
        }
        struct pollfd *ex = *exp;
        int can_accept = now >= accept_again && conns(p) < p->max_conns;
        ex[0] = (struct pollfd){ .fd = rhc_signals_fd(), .events = POLLIN };
        for (size_t i = 0; i < p->nls; ++i)
            ex[1 + i] = (struct pollfd){ .fd = can_accept ? p->ls[i].fd : -1, .events = POLLIN };
        size_t k = 1 + p->nls;
        for (struct pconn *pc = p->hs; pc; pc = pc->next)
            ex[k++] = (struct pollfd){ .fd = pc->fd, .events = POLLIN };
        long wait = expire(p, now), uwait = rhc_sudp_tick(p->udp, now);
        size_t ktot = k + rhc_sudp_pollfds(p->udp, ex + k, n - k);
        if (uwait >= 0 && (wait < 0 || uwait < wait))
            wait = uwait;
        if (now < accept_again && (wait < 0 || accept_again - now < wait))
            wait = (long)(accept_again - now);
        wait = rhc_stats_tick(p->c, now, rhc_signals_took(SIGUSR1), wait);
        if (rhc_ctx_step(p->c, ex, ktot, wait) < 0) {
            rhc_err("poll: %s", strerror(errno));
            return RHC_EXIT_ERROR;
        }
        if (ex[0].revents && rhc_signals_drain())
            return RHC_EXIT_OK;
        /* handshakes first (by fd: a step may free its pconn or others) */
        for (size_t i = 1 + p->nls; i < k; ++i) {
            if (!ex[i].revents)
                continue;
            for (struct pconn *pc = p->hs; pc; pc = pc->next)
                if (pc->fd == ex[i].fd) {
                    pc_event(p, pc);
                    break;
                }
        }
        rhc_sudp_events(p->udp, ex + k, ktot - k);
        for (size_t i = 0; i < p->nls; ++i)
            if ((ex[1 + i].revents & POLLIN) && accept_some(p, &p->ls[i], p->ls[i].route->o) < 0)
                accept_again = rh_now_ms() + ACCEPT_BACKOFF_MS;
    }
}

int rhc_pxy_run(rhc_ctx *c, const struct rhc_cmd *cmd)
{
    struct proxy p;
    struct pollfd *ex = NULL;
    size_t excap = 0;
    int rc;

    memset(&p, 0, sizeof(p));
    p.c = c;
    p.ls = calloc(cmd->nroutes, sizeof(*p.ls));
    p.udp = rhc_sudp_new(c);
    if (!p.ls || !p.udp) {
        free(p.ls);
        rhc_sudp_free(p.udp);
        rhc_err("out of memory");
        return RHC_EXIT_ERROR;
    }
    size_t fit = rhc_raise_fd_limit();
    long want = cmd->routes[0].max_conns > 0 ? cmd->routes[0].max_conns : RHC_PXY_CONNS_DEFAULT;
    p.max_conns = (size_t)want < fit ? (size_t)want : fit;
    if ((rc = open_listeners(&p, cmd)) < 0 && (rc = start(&p, cmd)) < 0) {
        rc = serve(&p, &ex, &excap);
        rhc_info("stopping: %zu tunnel(s) open", rhc_ctx_tunnels(c));
        rhc_wind_down(c, "stopped by a signal");
    }
    while (p.hs)
        pc_close(&p, p.hs);
    rhc_sudp_free(p.udp);     /* after the tunnels (wind-down) */
    for (size_t i = 0; i < p.nls; ++i)
        close(p.ls[i].fd);
    free(p.ls);
    free(ex);
    return rc;
}
