/* Small helpers that the core, the glue and the client share, one copy each. */
#ifndef RH_UTIL_H
#define RH_UTIL_H
#endif
