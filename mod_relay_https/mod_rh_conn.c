/* The client's connection as a tunnel request needs it (see mod_rh_conn.h). */
#include <poll.h>
#include <string.h>

#include <apr_poll.h>
#include <apr_portable.h>
#include <http_core.h>
#include <util_filter.h>

#include "mod_rh_conn.h"

/* Takes mod_reqtimeout out of this request's input: a push or duplex body idles
 * between keystrokes; heartbeats and RelayIdleTimeout cover it. Removing it from
 * c->input_filters alone is not enough: ap_remove_input_filter fixes only the
 * connection's list head, and a request filter in front of it (mod_http2's on
 * a stream, which got mod_reqtimeout from the stream's process_connection)
 * still points at it, so an idle duplex stream died after the body timeout. */
void rh_drop_reqtimeout(request_rec *r)
{
    ap_filter_rec_t *rec = ap_get_input_filter_handle("reqtimeout");
    ap_filter_t **heads[3] = { &r->input_filters, &r->proto_input_filters,
                               &r->connection->input_filters };
    if (!rec)
        return;
    for (int i = 0; i < 3; ++i)
        for (ap_filter_t **pp = heads[i]; *pp; )
            if ((*pp)->frec == rec)
                *pp = (*pp)->next;
            else
                pp = &(*pp)->next;
}

static apr_status_t restore_timeout(void *data)
{
    request_rec *r = data;
    apr_socket_t *sock = ap_get_conn_socket(r->connection);
    if (sock)
        apr_socket_timeout_set(sock, r->server->timeout);
    return APR_SUCCESS;
}

/* A response whose client stops reading must not hold its worker for the
 * server's Timeout: its writes may block RelayWriteTimeout at most (HTTP/1.1;
 * an HTTP/2 stream is bounded by mod_http2's H2StreamTimeout). */
void rh_limit_writes(request_rec *r, int write_s)
{
    apr_socket_t *sock;
    if (r->connection->master || !(sock = ap_get_conn_socket(r->connection)))
        return;
    apr_socket_timeout_set(sock, apr_time_from_sec(write_s));
    apr_pool_cleanup_register(r->pool, r, restore_timeout, apr_pool_cleanup_null);
}

/* Raw descriptor behind the pollfd httpd gives for a connection's input: the
 * socket (HTTP/1.1) or mod_http2's notification pipe (HTTP/2 stream). */
int rh_client_input_fd(conn_rec *c)
{
    apr_pollfd_t pfd;
    apr_os_sock_t sock;
    apr_os_file_t file;
    memset(&pfd, 0, sizeof(pfd));
    if (ap_get_pollfd_from_conn(c, &pfd, NULL) != APR_SUCCESS)
        return -1;
    if (pfd.desc_type == APR_POLL_SOCKET && apr_os_sock_get(&sock, pfd.desc.s) == APR_SUCCESS)
        return (int)sock;
    if (pfd.desc_type == APR_POLL_FILE && apr_os_file_get(&file, pfd.desc.f) == APR_SUCCESS)
        return (int)file;
    return -1;
}

void rh_h2_linger(request_rec *r)
{
    conn_rec *c = r->connection;
    int cfd = c->master ? rh_client_input_fd(c) : -1;
    if (cfd < 0 || c->aborted)
        return;
    apr_bucket_brigade *bb = apr_brigade_create(r->pool, c->bucket_alloc);
    if (!r->eos_sent) {
        APR_BRIGADE_INSERT_TAIL(bb, apr_bucket_eos_create(c->bucket_alloc));
        if (ap_pass_brigade(r->output_filters, bb) != APR_SUCCESS || c->aborted)
            return;
        apr_brigade_cleanup(bb);
    }
    apr_time_t until = apr_time_now() + apr_time_from_msec(RH_H2_LINGER_MS);
    for (;;) {
        apr_status_t st = ap_get_brigade(r->input_filters, bb, AP_MODE_READBYTES,
                                         APR_NONBLOCK_READ, 65536);
        int eos = st == APR_SUCCESS && !APR_BRIGADE_EMPTY(bb) &&
                  APR_BUCKET_IS_EOS(APR_BRIGADE_LAST(bb));
        apr_brigade_cleanup(bb);
        if (eos || (st != APR_SUCCESS && !APR_STATUS_IS_EAGAIN(st)))
            break;
        long left = (long)apr_time_as_msec(until - apr_time_now());
        if (left <= 0)
            break;
        struct pollfd pf = { .fd = cfd, .events = POLLIN };
        if (st != APR_SUCCESS && poll(&pf, 1, (int)left) <= 0)
            break;
    }
    apr_brigade_destroy(bb);
}
