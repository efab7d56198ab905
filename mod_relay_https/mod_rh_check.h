/* Configuration traps caught at configtest (see mod_rh_check.c). */
#ifndef MOD_RH_CHECK_H
#define MOD_RH_CHECK_H

#include <httpd.h>
#include <http_config.h>

/* Called by the directives: notes where each one is. */
void rh_check_note_target(cmd_parms *cmd);
void rh_check_note_timeout(cmd_parms *cmd, int is_idle, int seconds);
void rh_check_note_async(cmd_parms *cmd, int on);

/* pre_config and check_config hooks */
int rh_check_pre_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp);
int rh_check_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp, server_rec *s);

#endif
