/* Shared declarations of the httpd glue. */
#ifndef MOD_RH_PRIVATE_H
#define MOD_RH_PRIVATE_H

#include <httpd.h>
#include <http_config.h>
#include <http_log.h>

#define MOD_RELAY_HTTPS_VERSION "0.1.0"

/* SetHandler names */
#define RH_HANDLER_NAME "relay-https"
#define RH_STATUS_HANDLER_NAME "relay-https-status"

extern module AP_MODULE_DECLARE_DATA relay_https_module;

#if defined(APLOG_USE_MODULE) && !defined(RH_MODULE_MAIN)  /* AP_DECLARE_MODULE declares it there */
APLOG_USE_MODULE(relay_https);
#endif

/* Our own message tags, in place of httpd's AHxxxxx numbers: grep-able and stable. */
#define RHLOG(n) "RH" #n ": "

#endif
