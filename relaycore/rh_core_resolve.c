/* The relay core's RESOLVE request: a destination's name looked up for a
 * handler (the handler checks the addresses against RelayAllow, then OPENs
 * one of them by number, so what is checked is what is connected). The
 * lookup runs in rh_resolve.c's threads; the loop only waits on their
 * eventfd, each request with its own deadline. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>

#include "rh_allow.h"
#include "rh_core_int.h"
#include "rh_resolve.h"
#include "rh_util.h"

static void unlink_waiting(core *c, conn *k)
{
    for (conn **p = &c->resolving; *p; p = &(*p)->res_next)
        if (*p == k) {
            *p = k->res_next;
            k->res_next = NULL;
            return;
        }
}

/* The earliest deadline of the waiting lookups, 0 when none waits. */
static void due_again(core *c)
{
    c->resolve_due = 0;
    for (conn *k = c->resolving; k; k = k->res_next)
        if (!c->resolve_due || k->resolve_deadline < c->resolve_due)
            c->resolve_due = k->resolve_deadline;
}

void rh_core_req_resolve(core *c, conn *k, const rh_ipc_req *rq)
{
    if (!rh_allow_valid_name(rq->name)) {
        rh_core_conn_error(c, k, 400, "'%s' is not a host name", rq->name);
        return;
    }
    if (rh_core_conn_hold(c, k, NULL) != 0)
        return;
    if (!c->resolver) {
        if (!(c->resolver = rh_resolver_new())) {
            rh_core_conn_error(c, k, 503, "cannot start name lookups");
            return;
        }
        struct epoll_event e = { .events = EPOLLIN, .data.ptr = &c->resolver_src };
        epoll_ctl(c->ep, EPOLL_CTL_ADD, rh_resolver_fd(c->resolver), &e);
    }
    k->resolve_id = ++c->resolve_seq;
    if (rh_resolver_submit(c->resolver, k->resolve_id, rq->name) != 0) {
        ++c->refused;
        rh_core_conn_error(c, k, 503, "too many name lookups at once");
        return;
    }
    snprintf(k->resolve_name, sizeof(k->resolve_name), "%s", rq->name);
    k->kind = CK_RESOLVE;
    k->resolve_deadline = rh_now_ms() + 1000L * rq->timeout_s;
    k->res_next = c->resolving;
    c->resolving = k;
    due_again(c);
    rh_core_arm(c, k->fd, k, &k->ev, EPOLLIN);   /* the handler giving up shows as EOF */
}

static void answer(core *c, conn *k, const rh_resolved *res)
{
    char line[RH_IPC_LINE_MAX] = "OK";
    size_t len = 2;

    if (res->err) {
        rh_core_conn_error(c, k, 502, "reason=" RH_REASON_TOKEN_RESOLVE " cannot resolve '%s': %s",
                           k->resolve_name, gai_strerror(res->err));
        return;
    }
    for (int i = 0; i < res->n; ++i) {
        char a[64];
        rh_addr_format(&res->addr[i], a, sizeof(a));
        len += (size_t)snprintf(line + len, sizeof(line) - len, " %s", a);
    }
    rh_core_out_printf(k, "%s", line);
    rh_core_conn_reply_done(c, k);
}

void rh_core_resolve_event(core *c)
{
    rh_resolved res;
    while (rh_resolver_take(c->resolver, &res)) {
        conn *k = c->resolving;
        while (k && k->resolve_id != res.id)
            k = k->res_next;
        if (!k)
            continue;   /* its handler went away, or it timed out */
        unlink_waiting(c, k);
        answer(c, k, &res);
    }
    due_again(c);
}

void rh_core_resolve_timers(core *c, long now)
{
    if (!c->resolve_due || now < c->resolve_due)
        return;
    conn *k = c->resolving;
    while (k) {
        conn *next = k->res_next;
        if (k->resolve_deadline <= now) {
            unlink_waiting(c, k);
            rh_core_conn_error(c, k, 504, "reason=" RH_REASON_TOKEN_RESOLVE
                               " looking up '%s' timed out", k->resolve_name);
        }
        k = next;
    }
    due_again(c);
}

void rh_core_resolve_gone(core *c, conn *k)
{
    unlink_waiting(c, k);
    due_again(c);
    rh_core_conn_kill(c, k);
}

void rh_core_resolve_stop(core *c)
{
    rh_resolver_free(c->resolver);   /* lookups still running end on their own */
    c->resolver = NULL;
}
