/* relay-https client: the loop's epoll set. A descriptor's interest is
 * changed only when it changes (the caller remembers what it registered); each
 * entry carries a tag: a tunnel's pointer, or a curl socket's number. */
#ifndef RHC_EPOLL_H
#define RHC_EPOLL_H

#include <stdint.h>

#define RHC_EP_NONE (-1)     /* "not in the set", for was and want */

/* Moves fd from interest was to want (poll() events: POLLIN, POLLOUT, or 0,
 * which still reports errors and hangups; RHC_EP_NONE: out of the set).
 * ADD and MOD fall back to each other (a descriptor closed and reused in
 * between). 0, or -1 with errno (EPERM: a file or tty epoll cannot watch). */
int rhc_ep_set(int epfd, int fd, int was, int want, uint64_t tag);

/* The tags: a curl socket's is odd, a pointer's even (aligned). */
static inline uint64_t rhc_ep_sock_tag(int fd)
{
    return ((uint64_t)(unsigned)fd << 1) | 1u;
}

static inline int rhc_ep_is_sock(uint64_t tag)
{
    return (int)(tag & 1u);
}

static inline int rhc_ep_sock_of(uint64_t tag)
{
    return (int)(tag >> 1);
}

/* epoll's events as poll()'s (POLLIN, POLLOUT, POLLERR, POLLHUP) */
short rhc_ep_revents(uint32_t events);

#endif
