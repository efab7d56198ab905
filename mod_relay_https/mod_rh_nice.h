/* RelayNice: the relay's work runs at a lower CPU priority than the website
 * beside it, so that a busy tunnel does not make the site's pages wait for a
 * CPU. The relay cores run niced for good; a child's thread is niced while it
 * serves a relay request and given back its own priority after it (Linux
 * keeps a nice value per thread). */
#ifndef MOD_RH_NICE_H
#define MOD_RH_NICE_H

#include <httpd.h>
#include <http_config.h>

/* The parent, as root, before children start: lets httpd's processes come
 * back from a raised nice to the parent's own (RLIMIT_NICE), no further. */
void rh_nice_parent(server_rec *s, int nice);
/* A child: whether its threads can be niced and given back (RLIMIT_NICE). */
void rh_nice_child_init(server_rec *s, int nice);
/* A relay core, for good. */
void rh_nice_core(server_rec *s, int nice);
/* Around a relay request on a child's thread: enter returns what leave needs. */
int rh_nice_enter(void);
void rh_nice_leave(int entered, request_rec *r);
void rh_nice_register_hooks(void);

#endif
