/* relay-https client: proxy mode. Each -L port speaks SOCKS5 (RFC 1928:
 * CONNECT, no authentication or RFC 1929 username/password) and HTTP CONNECT,
 * told apart by the first byte; every connection becomes one tunnel to the
 * destination it names, on the server's BASE/RH_DEST_TARGET (RelayAllow). */
#ifndef RHC_PXY_H
#define RHC_PXY_H

#include "rhc_opts.h"
#include "rhc_tunnel.h"

#define RHC_PXY_CONNS_DEFAULT     512    /* local connections at once */
#define RHC_PXY_HANDSHAKE_DEFAULT 10000  /* ms for a client to name its destination */

/* Listens on every route's -L, checks the server of each (rhc_check_start),
 * then serves until a signal. Exit codes as rhc_forward_run's. */
int rhc_pxy_run(rhc_ctx *c, const struct rhc_cmd *cmd);

/* Option setters (rhc_opts.c's table): --local-user, --max-connections,
 * --handshake-timeout. */
struct opt_def;
int rhc_pxy_set_max_conns(struct rhc_opts *o, const struct opt_def *d, char *arg);
int rhc_pxy_set_handshake(struct rhc_opts *o, const struct opt_def *d, char *arg);
int rhc_pxy_set_local_user(struct rhc_opts *o, const struct opt_def *d, char *arg);

#endif
