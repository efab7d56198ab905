/* The request handler: maps HTTP requests onto relay core requests. */
#ifndef MOD_RH_HANDLER_H
#define MOD_RH_HANDLER_H

#include <httpd.h>

int rh_handler(request_rec *r);
/* translate_name: TRACE is refused (405) on relay locations. */
int rh_refuse_trace(request_rec *r);

#endif
