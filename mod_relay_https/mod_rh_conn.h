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

#endif
