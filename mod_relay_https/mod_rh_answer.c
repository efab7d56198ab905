/* The handler's error answers (see mod_rh_answer.h): logged, then sent as one
 * line after RH_ERROR_PREFIX. */
#include <stdarg.h>
#include <string.h>

#include <apr_strings.h>
#include <http_protocol.h>

#include "mod_rh_private.h"
#include "mod_rh_answer.h"
#include "mod_rh_daemon.h"
#include "rh_proto.h"

static int fail_v(request_rec *r, int status, int kind, const char *fmt, va_list ap)
{
    const char *msg = apr_pvsprintf(r->pool, fmt, ap);
    ap_log_rerror(APLOG_MARK, status >= 500 ? APLOG_WARNING : APLOG_DEBUG, 0, r,
                  RHLOG(2001) "%d %s", status, msg);
    rh_stats *st = rh_daemon_stats();   /* refusals by why, for the status page */
    if (st)
        rh_stats_refused(st, kind);
    r->status = status;
    if (status == HTTP_SERVICE_UNAVAILABLE || status == HTTP_TOO_MANY_REQUESTS) {
        apr_table_setn(r->headers_out, "Retry-After", "1");
        /* a refused client must not keep a worker in keep-alive either */
        r->connection->keepalive = AP_CONN_CLOSE;
    }
    ap_set_content_type(r, "text/plain; charset=utf-8");
    const char *body = apr_pstrcat(r->pool, RH_ERROR_PREFIX, msg, "\n", NULL);
    ap_set_content_length(r, (apr_off_t)strlen(body));
    ap_rputs(body, r);
    return OK;
}

int rh_fail(request_rec *r, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rv = fail_v(r, status, rh_stats_refusal_of(status), fmt, ap);
    va_end(ap);
    return rv;
}

int rh_fail_as(request_rec *r, int status, int kind, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rv = fail_v(r, status, kind, fmt, ap);
    va_end(ap);
    return rv;
}

int rh_method_not_allowed(request_rec *r, const char *allow)
{
    apr_table_setn(r->headers_out, "Allow", allow);
    return rh_fail(r, HTTP_METHOD_NOT_ALLOWED, "method %s not allowed here (use %s)",
                   r->method, allow);
}

int rh_post_no_body(request_rec *r)
{
    if (r->method_number != M_POST)
        return rh_method_not_allowed(r, "POST");
    if (ap_discard_request_body(r) != OK)
        return rh_fail(r, HTTP_BAD_REQUEST, "unreadable request body");
    return DECLINED;
}
