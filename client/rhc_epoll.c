/* relay-https client: the loop's epoll set (rhc_epoll.h). */
#include <errno.h>
#include <poll.h>
#include <stddef.h>
#include <sys/epoll.h>

#include "rhc_epoll.h"

static uint32_t ep_events(int want)
{
    return ((want & POLLIN) ? EPOLLIN : 0u) | ((want & POLLOUT) ? EPOLLOUT : 0u);
}

short rhc_ep_revents(uint32_t events)
{
    return (short)(((events & EPOLLIN) ? POLLIN : 0) | ((events & EPOLLOUT) ? POLLOUT : 0) |
                   ((events & EPOLLERR) ? POLLERR : 0) | ((events & EPOLLHUP) ? POLLHUP : 0));
}

int rhc_ep_set(int epfd, int fd, int was, int want, uint64_t tag)
{
    struct epoll_event ev = { .events = 0, .data.u64 = tag };

    if (want == RHC_EP_NONE) {
        /* a descriptor already closed left the set by itself */
        if (was != RHC_EP_NONE && epoll_ctl(epfd, EPOLL_CTL_DEL, fd, &ev) < 0 &&
            errno != ENOENT && errno != EBADF)
            return -1;
        return 0;
    }
    ev.events = ep_events(want);
    int op = was == RHC_EP_NONE ? EPOLL_CTL_ADD : EPOLL_CTL_MOD;
    if (epoll_ctl(epfd, op, fd, &ev) == 0)
        return 0;
    if (op == EPOLL_CTL_ADD && errno == EEXIST)
        op = EPOLL_CTL_MOD;
    else if (op == EPOLL_CTL_MOD && errno == ENOENT)
        op = EPOLL_CTL_ADD;
    else
        return -1;
    return epoll_ctl(epfd, op, fd, &ev);
}
