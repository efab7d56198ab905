/* mod_relay_https: host a TCP relay under a path of an Apache website.
 * This file only wires the pieces into httpd. */
#define RH_MODULE_MAIN
#include <httpd.h>
#include <http_config.h>
#include <http_protocol.h>
#include <http_request.h>

#include "mod_rh_private.h"
#include "mod_rh_async.h"
#include "mod_rh_check.h"
#include "mod_rh_config.h"
#include "mod_rh_daemon.h"
#include "mod_rh_handler.h"
#include "mod_rh_keepfree.h"
#include "mod_rh_nice.h"
#include "mod_rh_status.h"

static void register_hooks(apr_pool_t *p)
{
    ap_hook_pre_config(rh_check_pre_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_check_config(rh_check_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_post_config(rh_daemon_post_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_handler(rh_handler, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_translate_name(rh_translate, NULL, NULL, APR_HOOK_FIRST);
    ap_hook_map_to_storage(rh_map_to_storage, NULL, NULL, APR_HOOK_FIRST);
    rh_status_register_hooks();
    rh_async_register_hooks();
    rh_nice_register_hooks();
    rh_keepfree_register_hooks();
}

AP_DECLARE_MODULE(relay_https) = {
    STANDARD20_MODULE_STUFF,
    rh_create_dir_conf,
    rh_merge_dir_conf,
    rh_create_srv_conf,
    rh_merge_srv_conf,
    rh_cmds,
    register_hooks,
#if defined(AP_MODULE_FLAG_ALWAYS_MERGE)
    AP_MODULE_FLAG_ALWAYS_MERGE
#endif
};
