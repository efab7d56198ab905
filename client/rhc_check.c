/* relay-https client: the server check at start and the rate-limited report
 * of failed opens (see rhc_check.h). */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <curl/curl.h>

#include "rh_proto.h"
#include "rh_util.h"
#include "rhc_check.h"
#include "rhc_errors.h"
#include "rhc_signals.h"
#include "rhc_tunnel_int.h"

int rhc_ratelog_fail(struct rhc_ratelog *rl, int code, int64_t now, unsigned *held)
{
    ++rl->failed;
    if (code == rl->code && now < rl->until) {
        ++rl->held;
        return 0;
    }
    *held = rl->held;
    rl->held = 0;
    rl->code = code;
    rl->until = now + RHC_RATELOG_MS;
    return 1;
}

unsigned rhc_ratelog_ok(struct rhc_ratelog *rl)
{
    unsigned n = rl->failed;

    /* the next failure is news again */
    memset(rl, 0, sizeof(*rl));
    return n;
}

enum rhc_check_verdict rhc_check_judge(long status, int from_module, const char *reason)
{
    if (status == 200)
        return RHC_CHECK_PASS;
    if (status == 404 && from_module && strcmp(reason, RH_REASON_TOKEN_NO_TARGET) != 0)
        return RHC_CHECK_NO_ENDPOINT;
    return RHC_CHECK_FAIL;
}

int64_t rhc_retry_start_ms(unsigned n)
{
    int64_t ms = RHC_RETRY_START_MIN_MS;

    while (n-- > 1 && ms < RHC_RETRY_START_MAX_MS)
        ms *= 2;
    return ms < RHC_RETRY_START_MAX_MS ? ms : RHC_RETRY_START_MAX_MS;
}

/* The one check in flight (a process checks one route at a time). */
static struct {
    struct rhc_req *r;
    int done;
    CURLcode rc;
} pending;

void rhc_check_done(struct rhc_req *r, CURLcode rc)
{
    if (r == pending.r) {
        pending.done = 1;
        pending.rc = rc;
    }
}

static struct rhc_req *check_req(struct rhc_ctx *c, const struct rhc_route *route,
                                 unsigned tries)
{
    const struct rhc_opts *o = route->o;
    struct rhc_req *r = req_new(c, route, NULL, REQ_CHECK, NULL);
    long total = OPEN_TIMEOUT_MS;

    if (!r)
        return NULL;
    if (total < o->connect_timeout_ms + 15000)
        total = o->connect_timeout_ms + 15000;
    curl_easy_setopt(r->h, CURLOPT_HTTPGET, 1L);
    curl_easy_setopt(r->h, CURLOPT_TIMEOUT_MS, total);
    if (tries)
        curl_easy_setopt(r->h, CURLOPT_FRESH_CONNECT, 1L);
    if (req_go(r) < 0) {
        req_free(r);
        return NULL;
    }
    return r;
}

/* Waits for ms (-1: until the check in flight ends). 1 after a signal. */
static int wait_loop(struct rhc_ctx *c, int64_t ms)
{
    int64_t until = ms >= 0 ? rh_now_ms() + ms : -1;

    for (;;) {
        int64_t now = rh_now_ms();
        if (until < 0 ? pending.done : now >= until)
            return 0;
        struct pollfd ex = { .fd = rhc_signals_fd(), .events = POLLIN };
        if (rhc_ctx_step(c, &ex, 1, until < 0 ? -1 : (long)(until - now)) < 0)
            return 1;
        if (ex.revents && rhc_signals_drain())
            return 1;
    }
}

/* The check's connection was cut before its whole answer: a proxy or path
 * that dropped it, which a new connection may not meet (a check changes
 * nothing on the server, so any cut may go again). */
static int check_cut(const struct rhc_req *r, CURLcode rc)
{
    /* an open's cut, or one after the answer's headers: a check may go again */
    return open_cut(r, rc) || rc == CURLE_HTTP2_STREAM || rc == CURLE_PARTIAL_FILE ||
           rc == CURLE_RECV_ERROR;
}

/* One check, with the tries an open gets when its connection dies before the
 * answer (any cut: check_cut). Returns 0 (passed), -1 (signal) or an exit code with msg. */
static int check_once(struct rhc_ctx *c, const struct rhc_route *route, char *msg,
                      size_t msgsz)
{
    const struct rhc_opts *o = route->o;
    char what[384], line[BODY_MAX + 1];
    int code = RHC_EXIT_ERROR;

    snprintf(what, sizeof(what), "check %.300s/%s", o->base_url, o->target);
    snprintf(msg, msgsz, "%s: cannot start a request (out of memory)", what);
    for (unsigned tries = 0;; ++tries) {
        memset(&pending, 0, sizeof(pending));
        if (!(pending.r = check_req(c, route, tries)))
            return RHC_EXIT_ERROR;
        if (wait_loop(c, -1)) {
            code = -1;
            goto leave;
        }
        struct rhc_req *r = pending.r;
        if (check_cut(r, pending.rc) && tries < OPEN_RETRIES) {
            rhc_info("%s: %s; trying again on a new connection", what, req_error(r, pending.rc));
            req_free(r);
            continue;
        }
        if (!r->hdr_done) {
            code = rhc_curl_failure(o, r, pending.rc, what, msg, msgsz);
            goto leave;
        }
        body_line(r, line, sizeof(line));
        switch (rhc_check_judge(r->status, !strncmp(line, RH_ERROR_PREFIX,
                                                    strlen(RH_ERROR_PREFIX)), r->reason)) {
        case RHC_CHECK_PASS:
            rhc_info("%s: the server is ready", what);
            code = 0;
            break;
        case RHC_CHECK_NO_ENDPOINT:
            rhc_info("%s: HTTP 404 (an older mod_relay_https without the check endpoint): "
                     "the server answers; the target is checked by the first open", what);
            code = 0;
            break;
        default:
            code = rhc_http_failure(o, r, what, msg, msgsz);
        }
        goto leave;
    }
leave:
    req_free(pending.r);
    memset(&pending, 0, sizeof(pending));
    return code;
}

int rhc_check_start(struct rhc_ctx *c, const struct rhc_route *route, int retry)
{
    char msg[768];

    for (unsigned n = 1;; ++n) {
        int code = check_once(c, route, msg, sizeof(msg));
        if (code <= 0)
            return code;
        if (!retry) {
            rhc_err("%s", msg);
            return code;
        }
        int64_t ms = rhc_retry_start_ms(n);
        rhc_err("%s; --retry-start: trying again in %lld s (try %u failed)", msg,
                (long long)(ms / 1000), n);
        if (wait_loop(c, ms))
            return -1;
    }
}

void rhc_report_failure(rhc_tunnel *t)
{
    unsigned held = 0;

    /* a failed open says the same for every connection: one line a while */
    if (t->sid[0] || rhc_ratelog_fail(&t->route->fails, t->end.code, rh_now_ms(), &held) == 1) {
        if (held)
            t_log(t, 0, "%s (and %u more like it since the last line)", t->end.msg, held);
        else
            t_log(t, 0, "%s", t->end.msg);
        return;
    }
    t_log(t, 1, "%s", t->end.msg);
}

void rhc_report_open_ok(rhc_tunnel *t)
{
    unsigned n = rhc_ratelog_ok(&t->route->fails);

    if (n)
        t_log(t, 0, "the server answers again: session opened (%u connection(s) failed "
                    "before)", n);
}
