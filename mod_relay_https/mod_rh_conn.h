/* What a tunnel request changes on, or takes from, the client's connection:
 * mod_reqtimeout out of its input, a bound on its writes, the descriptor to
 * poll for its input. */
#ifndef MOD_RH_CONN_H
#define MOD_RH_CONN_H

#include <httpd.h>

/* Takes mod_reqtimeout out of this request's input (a body that idles). */
void rh_drop_reqtimeout(request_rec *r);

/* Writes to a client that stops reading block write_s seconds at most
 * (HTTP/1.1; restored with the request's pool). */
void rh_limit_writes(request_rec *r, int write_s);

/* The raw descriptor to poll for the client's input, or -1. */
int rh_client_input_fd(conn_rec *c);

/* An HTTP/2 request answered while its client may still send the body: as
 * the handler returns, mod_http2 resets the stream (NO_ERROR) to stop the
 * body, and nghttp2 sends that RST_STREAM ahead of the answer's frames still
 * queued: on a loaded machine the client saw a stream error instead of a 503,
 * or lost an R frame at the end of a duplex. So the answer ends here (EOS),
 * then the body is read and dropped until the client ends it (it does once
 * it has the answer), at most RH_H2_LINGER_MS. Nothing on HTTP/1.1. */
#define RH_H2_LINGER_MS 1000
void rh_h2_linger(request_rec *r);

#endif
