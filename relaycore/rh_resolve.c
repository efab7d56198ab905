/* The relay core's resolver threads (see rh_resolve.h). One mutex guards two
 * bounded queues: names waiting for a thread, answers waiting for the loop.
 * The loop owns one reference and each thread one; whoever drops the last
 * frees the whole, so the loop never waits for a lookup that hangs. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <unistd.h>

#include "rh_resolve.h"

struct job {
    uint64_t id;
    char name[RH_HOST_MAX + 2];
};

struct rh_resolver {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int efd;
    int refs;                    /* the owner's, and one per thread */
    int stopping;
    int threads, idle;
    struct job jobs[RH_RESOLVE_QUEUE];
    unsigned jhead, jlen;
    rh_resolved done[RH_RESOLVE_QUEUE + RH_RESOLVE_THREADS];
    unsigned dhead, dlen;
};

#define DONE_CAP (RH_RESOLVE_QUEUE + RH_RESOLVE_THREADS)

/* With r->mu held: one reference fewer; 1 when it was the last. */
static int unref_locked(rh_resolver *r)
{
    return --r->refs == 0;
}

static void destroy(rh_resolver *r)
{
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    close(r->efd);
    free(r);
}

/* getaddrinfo's answer, TCP addresses only, in its order. */
static void lookup(const char *name, rh_resolved *out)
{
    struct addrinfo hints, *res = NULL;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    /* no AI_ADDRCONFIG: it hides loopback answers on a host with only loopback */
    out->err = getaddrinfo(name, NULL, &hints, &res);
    for (struct addrinfo *ai = res; !out->err && ai && out->n < RH_RESOLVE_ADDRS; ai = ai->ai_next) {
        rh_addr *a = &out->addr[out->n];
        memset(a, 0, sizeof(*a));
        if (ai->ai_family == AF_INET) {
            a->family = 4;
            memcpy(a->a, &((struct sockaddr_in *)ai->ai_addr)->sin_addr, 4);
        } else if (ai->ai_family == AF_INET6) {
            static const unsigned char mapped[12] = { [10] = 0xff, [11] = 0xff };
            a->family = 6;
            memcpy(a->a, &((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr, 16);
            if (!memcmp(a->a, mapped, sizeof(mapped))) {
                memmove(a->a, a->a + 12, 4);
                memset(a->a + 4, 0, 12);
                a->family = 4;
            }
        } else {
            continue;
        }
        ++out->n;
    }
    if (res)
        freeaddrinfo(res);
    if (!out->err && out->n == 0)
        out->err = EAI_NONAME;
}

static void *worker(void *arg)
{
    rh_resolver *r = arg;
    pthread_mutex_lock(&r->mu);
    for (;;) {
        while (!r->stopping && r->jlen == 0) {
            ++r->idle;
            pthread_cond_wait(&r->cv, &r->mu);
            --r->idle;
        }
        if (r->stopping)
            break;
        struct job j = r->jobs[r->jhead];
        r->jhead = (r->jhead + 1) % RH_RESOLVE_QUEUE;
        --r->jlen;
        pthread_mutex_unlock(&r->mu);

        rh_resolved ans;
        memset(&ans, 0, sizeof(ans));
        ans.id = j.id;
        lookup(j.name, &ans);

        pthread_mutex_lock(&r->mu);
        if (r->stopping)
            break;
        /* room is certain: answers are at most the queue plus the threads */
        r->done[(r->dhead + r->dlen) % DONE_CAP] = ans;
        ++r->dlen;
        uint64_t one = 1;
        if (write(r->efd, &one, sizeof(one)) < 0) {
            /* the counter cannot overflow at these numbers */
        }
    }
    int last = unref_locked(r);
    pthread_mutex_unlock(&r->mu);
    if (last)
        destroy(r);
    return NULL;
}

rh_resolver *rh_resolver_new(void)
{
    rh_resolver *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (r->efd < 0) {
        free(r);
        return NULL;
    }
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    r->refs = 1;
    return r;
}

int rh_resolver_fd(const rh_resolver *r)
{
    return r->efd;
}

/* With r->mu held: one more thread, signals blocked in it (the core's
 * handlers stay the loop's). 0, or -1. */
static int add_thread(rh_resolver *r)
{
    pthread_attr_t at;
    pthread_t th;
    sigset_t all, old;

    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&at, 512 * 1024);   /* NSS modules may want more than a little */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&th, &at, worker, r);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&at);
    if (rc != 0)
        return -1;
    ++r->threads;
    ++r->refs;
    return 0;
}

int rh_resolver_submit(rh_resolver *r, uint64_t id, const char *name)
{
    int rc = -1;
    pthread_mutex_lock(&r->mu);
    /* every lookup queued or running has room for its answer */
    unsigned busy = (unsigned)(r->threads - r->idle);
    if (r->jlen < RH_RESOLVE_QUEUE && r->jlen + busy + r->dlen < DONE_CAP
        && strlen(name) <= RH_HOST_MAX + 1) {
        struct job *j = &r->jobs[(r->jhead + r->jlen) % RH_RESOLVE_QUEUE];
        j->id = id;
        strcpy(j->name, name);
        ++r->jlen;
        if (r->idle < (int)r->jlen && r->threads < RH_RESOLVE_THREADS)
            add_thread(r);
        if (r->threads > 0) {
            pthread_cond_signal(&r->cv);
            rc = 0;
        } else {
            --r->jlen;   /* no thread to run it */
        }
    }
    pthread_mutex_unlock(&r->mu);
    return rc;
}

int rh_resolver_take(rh_resolver *r, rh_resolved *out)
{
    uint64_t v;
    int got = 0;
    pthread_mutex_lock(&r->mu);
    if (r->dlen > 0) {
        *out = r->done[r->dhead];
        r->dhead = (r->dhead + 1) % DONE_CAP;
        --r->dlen;
        got = 1;
    }
    if (r->dlen == 0 && read(r->efd, &v, sizeof(v)) < 0) {
        /* EAGAIN: nothing was signalled */
    }
    pthread_mutex_unlock(&r->mu);
    return got;
}

void rh_resolver_free(rh_resolver *r)
{
    if (!r)
        return;
    pthread_mutex_lock(&r->mu);
    r->stopping = 1;
    pthread_cond_broadcast(&r->cv);
    int last = unref_locked(r);
    pthread_mutex_unlock(&r->mu);
    if (last)
        destroy(r);
}
