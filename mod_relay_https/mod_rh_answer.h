/* The handler's own error answers: one plain-text line, the same shape for
 * every status. */
#ifndef MOD_RH_ANSWER_H
#define MOD_RH_ANSWER_H

#include <httpd.h>

/* Answers the request with status and a formatted message; returns OK. */
int rh_fail(request_rec *r, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The same, counted as refusal kind (RH_REFUSE_*) on the status page. */
int rh_fail_as(request_rec *r, int status, int kind, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* 405 with an Allow header. */
int rh_method_not_allowed(request_rec *r, const char *allow);

/* What requests that carry nothing (open, listen, close, ack) check first:
 * POST, and a body, if any, read and dropped. DECLINED to go on, else answered. */
int rh_post_no_body(request_rec *r);

#endif
