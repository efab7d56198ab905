/* Starting, supervising and stopping the relay core process from httpd. */
#ifndef MOD_RH_DAEMON_H
#define MOD_RH_DAEMON_H

#include <httpd.h>
#include "rh_registry.h"

/* post_config: create the registries and sockets, fork the cores. */
int rh_daemon_post_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp,
                          server_rec *s);

/* The longest RelaySocket path: a unix socket's name, less the suffix that
 * an upgrade or core k adds to it. */
size_t rh_daemon_socket_path_max(void);

/* For handlers in the children (set before the MPM forks them): how many
 * cores (shards) there are, 0 before they are set up, and core k's socket
 * and table (NULL past the last). */
unsigned rh_daemon_cores(void);
const char *rh_daemon_socket(unsigned k);
const rh_registry *rh_daemon_registry(unsigned k);
/* After an upgrade, until its last session ends: the old core k's table and
 * socket (NULL when there is no such core). */
const rh_registry *rh_daemon_old_registry(unsigned k);
const char *rh_daemon_old_socket(unsigned k);
/* Core k's table's extension (the watch's figures), or NULL: none (a table
 * an older module made), or past the last core. */
const rh_registry_ext *rh_daemon_ext(unsigned k);
/* The counters in the registry, for the handlers' atomic adds; NULL before the
 * core is set up. */
rh_stats *rh_daemon_stats(void);

#endif
