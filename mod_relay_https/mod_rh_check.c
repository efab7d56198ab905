/* Configuration traps caught at configtest (check_config): a RelayTarget that
 * no relay <Location> serves, and a RelayIdleTimeout at or below the
 * RelayPollTimeout in force. Both pass httpd's own syntax check and then fail
 * quietly at run time, so they are refused with the file and line.
 *
 * The directives are noted while httpd reads them (only active ones are read:
 * a false <IfDefine> does not reach us), with their place in the config tree;
 * the sections around them come from that tree. */
#include <string.h>
#include <strings.h>
#include <httpd.h>
#include <apr_strings.h>
#include <http_config.h>
#include <http_log.h>
#include <util_cfgtree.h>
#include <ap_mpm.h>

#include "mod_rh_private.h"
#include "mod_rh_check.h"

typedef struct mark {
    const ap_directive_t *d;   /* the directive, with file and line */
    int value;                 /* timeouts: seconds */
} mark;

/* One config read's notes, in the configuration pool (reset by pre_config). */
static apr_array_header_t *g_targets, *g_idle, *g_poll, *g_async;

static void note(apr_array_header_t **arr, cmd_parms *cmd, int value)
{
    if (!*arr)
        *arr = apr_array_make(cmd->pool, 8, sizeof(mark));
    mark *m = &APR_ARRAY_PUSH(*arr, mark);
    m->d = cmd->directive;
    m->value = value;
}

void rh_check_note_target(cmd_parms *cmd)
{
    note(&g_targets, cmd, 0);
}

void rh_check_note_timeout(cmd_parms *cmd, int is_idle, int seconds)
{
    note(is_idle ? &g_idle : &g_poll, cmd, seconds);
}

void rh_check_note_async(cmd_parms *cmd, int on)
{
    note(&g_async, cmd, on);
}

static apr_status_t forget(void *unused)
{
    g_targets = g_idle = g_poll = g_async = NULL;
    return APR_SUCCESS;
}

int rh_check_pre_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp)
{
    forget(NULL);
    apr_pool_cleanup_register(pconf, NULL, forget, apr_pool_cleanup_null);
    return OK;
}

/* <If...>, <Else...>: conditions, not places */
static int is_condition(const ap_directive_t *d)
{
    return !strncasecmp(d->directive, "<If", 3) || !strncasecmp(d->directive, "<Else", 5);
}

static int is_location(const ap_directive_t *d)
{
    return d && (!strcasecmp(d->directive, "<Location")
                 || !strcasecmp(d->directive, "<LocationMatch"));
}

static int is_vhost(const ap_directive_t *d)
{
    return d && !strcasecmp(d->directive, "<VirtualHost");
}

/* The section a directive is in: a <Location>, <Directory>, <VirtualHost>...,
 * or NULL for the main server. */
static const ap_directive_t *section_of(const ap_directive_t *d)
{
    const ap_directive_t *p = d->parent;
    while (p && is_condition(p))
        p = p->parent;
    return p;
}

/* The server a section belongs to: its <VirtualHost>, or NULL (main server). */
static const ap_directive_t *server_of(const ap_directive_t *sec)
{
    while (sec && !is_vhost(sec))
        sec = section_of(sec);
    return sec;
}

static int is_relay_handler(const char *args)
{
    size_t n = strlen(args);
    if (n >= 2 && (args[0] == '"' || args[0] == '\'') && args[n - 1] == args[0])
        return n - 2 == strlen(RH_HANDLER_NAME) && !strncasecmp(args + 1, RH_HANDLER_NAME, n - 2);
    return !strcasecmp(args, RH_HANDLER_NAME);
}

/* "SetHandler relay-https" directly in this section (or in conditions in it). */
static int has_relay_handler(const ap_directive_t *sec)
{
    for (const ap_directive_t *c = sec->first_child; c; c = c->next) {
        if (!strcasecmp(c->directive, "SetHandler") && c->args && is_relay_handler(c->args))
            return 1;
        if (is_condition(c) && has_relay_handler(c))
            return 1;
    }
    return 0;
}

/* The first child list of a server: the <VirtualHost>'s, or the whole tree's. */
static const ap_directive_t *server_children(const ap_directive_t *vhost)
{
    return vhost ? vhost->first_child : ap_conftree;
}

/* Calls fn for every relay <Location> of a server (sections of the same path
 * merge in httpd, so a handler in any of them serves the path). */
static int each_relay_location(const ap_directive_t *list, const char *path,
                               int (*fn)(const ap_directive_t *, void *), void *ctx)
{
    for (const ap_directive_t *c = list; c; c = c->next) {
        if (is_condition(c)) {
            int rv = each_relay_location(c->first_child, path, fn, ctx);
            if (rv)
                return rv;
        } else if (is_location(c) && has_relay_handler(c)
                   && (!path || (c->args && !strcmp(c->args, path)))) {
            int rv = fn(c, ctx);
            if (rv)
                return rv;
        }
    }
    return 0;
}

static int found(const ap_directive_t *loc, void *ctx)
{
    return 1;
}

static int check_target(const mark *m, server_rec *s)
{
    const ap_directive_t *sec = section_of(m->d);
    /* RelayTarget or RelayAllow: both do nothing outside a relay location */
    const char *where = apr_psprintf(s->process->pconf, "%s %s (%s:%d)", m->d->directive,
                                     m->d->args, m->d->filename, m->d->line_num);

    if (is_location(sec)) {
        if (each_relay_location(server_children(server_of(sec)), sec->args, found, NULL))
            return OK;
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, RHLOG(3001)
                     "%s does nothing: its %s %s has no SetHandler " RH_HANDLER_NAME,
                     where, sec->directive, sec->args);
        return !OK;
    }
    if (sec && !is_vhost(sec)) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, RHLOG(3002)
                     "%s does nothing in %s %s: put it in the <Location> that has "
                     "SetHandler " RH_HANDLER_NAME, where, sec->directive, sec->args);
        return !OK;
    }
    /* at server level it is inherited by the server's relay locations */
    if (each_relay_location(server_children(sec), NULL, found, NULL))
        return OK;
    ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, RHLOG(3003)
                 "%s does nothing: %s has no <Location> with SetHandler " RH_HANDLER_NAME,
                 where, sec ? "its <VirtualHost>" : "the main server");
    return !OK;
}

/* The value of a timeout in force in a relay location: its own, else its
 * server's, else the main server's (what httpd's merge gives); NULL if unset. */
static const mark *in_force(const apr_array_header_t *arr, const ap_directive_t *loc)
{
    const mark *own = NULL, *vhost = NULL, *main_srv = NULL;
    const ap_directive_t *srv = server_of(loc);
    for (int i = 0; arr && i < arr->nelts; ++i) {
        const mark *m = &APR_ARRAY_IDX(arr, i, mark);
        const ap_directive_t *sec = section_of(m->d);
        if (is_location(sec) && sec->args && loc->args && !strcmp(sec->args, loc->args)
            && server_of(sec) == srv)
            own = m;
        else if (sec && sec == srv)
            vhost = m;
        else if (!sec)
            main_srv = m;
    }
    return own ? own : vhost ? vhost : main_srv;
}

typedef struct {
    server_rec *s;
    int bad;
} check_ctx;

/* each_relay_location callback: reports, and goes on to the next location */
static int check_timeouts(const ap_directive_t *loc, void *ctx)
{
    check_ctx *cc = ctx;
    const mark *idle = in_force(g_idle, loc), *poll = in_force(g_poll, loc);
    if (!idle || !poll || idle->value > poll->value)
        return 0;   /* with the poll timeout unset, it is kept below the idle one */
    cc->bad = 1;
    ap_log_error(APLOG_MARK, APLOG_CRIT, 0, cc->s, RHLOG(3004)
                 "%s %s: RelayIdleTimeout %d (%s:%d) must be longer than RelayPollTimeout "
                 "%d (%s:%d), or idle batch sessions are closed while their poll waits",
                 loc->directive, loc->args, idle->value, idle->d->filename, idle->d->line_num,
                 poll->value, poll->d->filename, poll->d->line_num);
    return 0;
}

/* the relay locations of the <VirtualHost>s in a list (conditions looked into) */
static void vhost_timeouts(const ap_directive_t *list, check_ctx *cc)
{
    for (const ap_directive_t *c = list; c; c = c->next) {
        if (is_vhost(c))
            each_relay_location(c->first_child, NULL, check_timeouts, cc);
        else if (is_condition(c))
            vhost_timeouts(c->first_child, cc);
    }
}

/* RelayAsync On where the MPM cannot suspend a request (prefork, worker):
 * it works, but every wait holds a thread or process; configtest says so. */
static void check_async(server_rec *s)
{
    int async = 0;
    if (!g_async)
        return;
    if (ap_mpm_query(AP_MPMQ_IS_ASYNC, &async) != APR_SUCCESS)
        async = 0;      /* prefork does not know the question */
    if (async)
        return;
    for (int i = 0; i < g_async->nelts; ++i) {
        const mark *m = &APR_ARRAY_IDX(g_async, i, mark);
        if (m->value)
            ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s, RHLOG(3005)
                         "RelayAsync On (%s:%d) has no effect under the %s MPM: relay "
                         "requests wait on a thread or process each; only the event MPM "
                         "parks them", m->d->filename, m->d->line_num, ap_show_mpm());
    }
}

int rh_check_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp, server_rec *s)
{
    int rv = OK;
    check_async(s);
    for (int i = 0; g_targets && i < g_targets->nelts; ++i)
        if (check_target(&APR_ARRAY_IDX(g_targets, i, mark), s) != OK)
            rv = !OK;
    if (g_idle && g_poll) {
        check_ctx cc = { s, 0 };
        each_relay_location(ap_conftree, NULL, check_timeouts, &cc);
        vhost_timeouts(ap_conftree, &cc);
        if (cc.bad)
            rv = !OK;
    }
    return rv;
}
