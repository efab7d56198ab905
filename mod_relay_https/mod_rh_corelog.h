/* The relay core's error log (see mod_rh_corelog.c). */
#ifndef MOD_RH_CORELOG_H
#define MOD_RH_CORELOG_H

#include <httpd.h>

/* post_config: the generation's pool, where a new level is kept. */
void rh_corelog_init(apr_pool_t *pconf);

/* In the core (rh_core_config's log and relog; ctx: the main server). */
void rh_corelog_log(void *ctx, int level, const char *msg);
int rh_corelog_relog(void *ctx, int fd, int level);

/* In the parent, after a restart that kept the core at socket: hand it the
 * reopened error log and the module's level. */
void rh_corelog_send(server_rec *s, const char *socket);

#endif
