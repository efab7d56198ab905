/* Starting, supervising and stopping the relay core process from httpd. */
#ifndef MOD_RH_DAEMON_H
#define MOD_RH_DAEMON_H

#include <httpd.h>
#include "rh_registry.h"

/* post_config: create the registry and socket, fork the core. */
int rh_daemon_post_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp,
                          server_rec *s);

/* For handlers in the children (set before the MPM forks them). */
const char *rh_daemon_socket(void);
const rh_registry *rh_daemon_registry(void);
/* After an upgrade, until its last session ends: the old core's table and
 * socket (NULL when there is no such core). */
const rh_registry *rh_daemon_old_registry(void);
const char *rh_daemon_old_socket(void);
/* The counters in the registry, for the handlers' atomic adds; NULL before the
 * core is set up. */
rh_stats *rh_daemon_stats(void);

#endif
