/* Destinations named per connection (docs/PROTOCOL.md, Destinations): the
 * open and check of BASE/RH_DEST_TARGET, with Relay-Destination HOST:PORT
 * checked against the location's RelayAllow list. A name is checked, then
 * resolved by the relay core (its threads: no handler and no loop blocks on
 * DNS beyond RelayConnectTimeout), then each address it resolved to is
 * checked again, and the first one allowed is opened by number: what was
 * checked is what is connected, whatever DNS answers next. Every refusal is
 * a 403 with Relay-Reason: destination, a log line and a count. */
#include <string.h>

#include <apr_strings.h>
#include <http_protocol.h>

#include "mod_rh_private.h"
#include "mod_rh_answer.h"
#include "mod_rh_corelink.h"
#include "mod_rh_daemon.h"
#include "mod_rh_req.h"
#include "rh_allow.h"

/* 403: the destination is not for this location. */
static int refuse(rh_req *q, const char *dest, const char *why)
{
    request_rec *r = q->r;
    ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r, RHLOG(2050)
                  "destination %s refused: %s", dest, why);
    apr_table_setn(r->headers_out, RH_HDR_REASON, RH_REASON_TOKEN_DEST);
    return rh_fail_as(r, HTTP_FORBIDDEN, RH_REFUSE_DEST, "destination %s refused: %s",
                      dest, why);
}

static const rh_allow_rule *rules_of(const rh_dir_conf *dc, size_t *n)
{
    *n = dc->allows ? (size_t)dc->allows->nelts : 0;
    return *n ? (const rh_allow_rule *)dc->allows->elts : NULL;
}

/* Relay-Destination split into host and port; the request is answered
 * (400) when it is missing or malformed. */
static int dest_of(rh_req *q, char *host, size_t hostlen, unsigned *port, const char **dest)
{
    *dest = apr_table_get(q->r->headers_in, RH_HDR_DESTINATION);
    if (!*dest || rh_allow_split_dest(*dest, host, hostlen, port) != 0)
        return rh_fail(q->r, HTTP_BAD_REQUEST, "missing or malformed " RH_HDR_DESTINATION
                       " (HOST:PORT, or [IPV6]:PORT)");
    return DECLINED;
}

/* The checks that need no lookup: an address against the address rules, a
 * name against the name rules. DECLINED to go on (*is_addr says which). */
static int check_named(rh_req *q, const char *dest, const char *host, unsigned port,
                       rh_addr *a, int *is_addr)
{
    size_t n;
    const rh_allow_rule *rules = rules_of(q->dc, &n);
    const char *why;

    if (!n)
        return refuse(q, dest, "this location has no RelayAllow: nothing is reachable "
                      "through it");
    *is_addr = rh_addr_parse(host, a) == 0;
    if (*is_addr)
        return rh_allow_addr(rules, n, a, port, 0, &why) ? refuse(q, dest, why) : DECLINED;
    if (!rh_allow_valid_name(host))
        return rh_fail(q->r, HTTP_BAD_REQUEST, "destination %s: '%s' is neither a host name "
                       "nor an address", dest, host);
    if (!rh_allow_name(rules, n, host, port))
        return refuse(q, dest, "no RelayAllow lists this name and port");
    return DECLINED;
}

/* The core looks host up; the first address the rules allow goes to *a.
 * DECLINED to go on, else the request is answered. */
static int resolve_checked(rh_req *q, const char *dest, const char *host, unsigned port,
                           rh_addr *a)
{
    request_rec *r = q->r;
    size_t n;
    const rh_allow_rule *rules = rules_of(q->dc, &n);
    rh_ipc_req rq;
    rh_ipc_reply rep;
    const char *why = NULL;

    memset(&rq, 0, sizeof(rq));
    rq.op = RH_IPC_RESOLVE;
    apr_cpystrn(rq.name, host, sizeof(rq.name));
    rq.timeout_s = (unsigned)rh_dir_connect(q->dc);
    if (rh_core_ask(q, &rq, &rep, (rh_dir_connect(q->dc) + 5) * 1000) != 0)
        return rh_core_unavailable(r);
    if (!rep.ok)
        return rh_fail_reply(r, &rep);
    char *save = NULL;
    char *list = apr_pstrdup(r->pool, rep.text);
    for (char *w = apr_strtok(list, " ", &save); w; w = apr_strtok(NULL, " ", &save)) {
        const char *w_why;
        if (rh_addr_parse(w, a) != 0)
            continue;
        if (rh_allow_addr(rules, n, a, port, 1, &w_why) == 0)
            return DECLINED;
        if (!why)
            why = w_why;
    }
    return refuse(q, dest, apr_psprintf(r->pool, "'%s' resolves to %s: %s", host, rep.text,
                                        why ? why : "no address"));
}

int rh_do_dest_open(rh_req *q)
{
    request_rec *r = q->r;
    char host[RH_HOST_MAX + 8], ip[64];
    unsigned port;
    const char *dest;
    rh_addr a;
    int rv, is_addr;
    rh_ipc_req rq;
    rh_ipc_reply rep;

    if ((rv = rh_post_no_body(r)) != DECLINED)
        return rv;
    /* datagrams (SOCKS5 UDP ASSOCIATE): only to udp/ ports of the list */
    unsigned udp = rh_req_datagrams(r) ? RH_ALLOW_UDP : 0;
    if ((rv = dest_of(q, host, sizeof(host), &port, &dest)) != DECLINED
        || (rv = check_named(q, dest, host, port | udp, &a, &is_addr)) != DECLINED
        || (!is_addr && (rv = resolve_checked(q, dest, host, port | udp, &a)) != DECLINED))
        return rv;
    rh_addr_format(&a, ip, sizeof(ip));
    memset(&rq, 0, sizeof(rq));
    if (udp)
        rh_udp_terms(q, &rq);
    rq.op = RH_IPC_OPEN;
    apr_cpystrn(rq.host, ip, sizeof(rq.host));
    rq.port = port;
    rh_open_terms(q, &rq);     /* target RH_DEST_TARGET: its requests' URLs say so */
    rq.connect_s = (unsigned)rh_dir_connect(q->dc);
    if (rh_core_ask(q, &rq, &rep, (rh_dir_connect(q->dc) + 5) * 1000) != 0)
        return rh_core_unavailable(r);
    if (!rep.ok)
        return rh_fail_reply(r, &rep);
    rv = rh_open_answer(q, &rq, rep.text);
    ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, RHLOG(2051) "session %.*s to destination %s "
                  "(%s port %u)", RH_SID_LEN, rep.text, dest, ip, port);
    return rv;
}

/* check of BASE/RH_DEST_TARGET: does this location let clients name
 * destinations (a RelayAllow), and with Relay-Destination, is that one
 * listed (no lookup: its addresses are checked at open)? */
int rh_do_dest_check(rh_req *q)
{
    request_rec *r = q->r;
    char host[RH_HOST_MAX + 8];
    unsigned port;
    const char *dest;
    rh_addr a;
    int rv, is_addr;
    size_t n;

    unsigned udp = rh_req_datagrams(r) ? RH_ALLOW_UDP : 0;

    if (r->method_number != M_GET)
        return rh_method_not_allowed(r, "GET");
    if (!rules_of(q->dc, &n)) {
        apr_table_setn(r->headers_out, RH_HDR_REASON, RH_REASON_TOKEN_NO_TARGET);
        return rh_fail(r, HTTP_NOT_FOUND, "this location has no RelayAllow: clients cannot "
                       "name destinations here");
    }
    if (apr_table_get(r->headers_in, RH_HDR_DESTINATION)
        && ((rv = dest_of(q, host, sizeof(host), &port, &dest)) != DECLINED
            || (rv = check_named(q, dest, host, port | udp, &a, &is_addr)) != DECLINED))
        return rv;
    ap_set_content_type(r, "text/plain; charset=utf-8");
    ap_rprintf(r, RH_ERROR_PREFIX "destinations ready (%d RelayAllow)\n", (int)n);
    return OK;
}
