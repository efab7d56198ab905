/* The relay's status page and its mod_status section (see mod_rh_status.c). */
#ifndef MOD_RH_STATUS_H
#define MOD_RH_STATUS_H

#include <httpd.h>

int rh_status_handler(request_rec *r);
void rh_status_register_hooks(void);

#endif
