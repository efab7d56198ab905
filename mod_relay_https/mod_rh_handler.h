/* The request handler: maps HTTP requests onto relay core requests. */
#ifndef MOD_RH_HANDLER_H
#define MOD_RH_HANDLER_H

#include <httpd.h>

int rh_handler(request_rec *r);
/* translate_name: TRACE is refused (405) on relay locations, and a URL
 * whose <Location> sets the relay's handler is marked as no file ... */
int rh_translate(request_rec *r);
/* ... which map_to_storage then walks through no directory (OK). */
int rh_map_to_storage(request_rec *r);

#endif
