/* The relay core's error log: its messages go to httpd's error log, and at
 * every restart that keeps a core the parent hands it the new log (logrotate
 * renames it) and the module's level. httpd glue. */
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <apr_portable.h>
#include <http_core.h>
#include <http_log.h>

#include "mod_rh_private.h"
#include "rh_core.h"
#include "rh_ipc_client.h"
#include "mod_rh_corelog.h"

static apr_pool_t *g_pool;   /* the generation's pconf */

void rh_corelog_init(apr_pool_t *pconf)
{
    g_pool = pconf;
}

void rh_corelog_log(void *ctx, int level, const char *msg)
{
    ap_log_error(APLOG_MARK, level, 0, (server_rec *)ctx, RHLOG(1001) "core: %s", msg);
}

/* In the core, after a restart of httpd: write to the new error log (a rotated
 * log's new file) and log at the new LogLevel. */
int rh_corelog_relog(void *ctx, int fd, int level)
{
    server_rec *s = ctx;
    apr_os_file_t old;
    if (fd >= 0) {
        if (s->error_log && apr_os_file_get(&old, s->error_log) == APR_SUCCESS && old >= 0)
            dup2(fd, old);
        dup2(fd, STDERR_FILENO);
        close(fd);
    }
    if (level >= APLOG_EMERG && level <= APLOG_TRACE8)
        ap_set_module_loglevel(g_pool, &s->log, APLOG_MODULE_INDEX, level);
    return level >= APLOG_DEBUG ? RH_LOG_DEBUG : RH_LOG_INFO;
}

/* The module's own level in the main server (LogLevel relay_https:LEVEL, or
 * the server's). */
static int module_log_level(server_rec *s)
{
    if (s->log.module_levels && s->log.module_levels[APLOG_MODULE_INDEX] != APLOG_NO_MODULE)
        return s->log.module_levels[APLOG_MODULE_INDEX];
    return s->log.level;
}

/* In the parent, after a restart that kept the core: hand it the new error
 * log and level (logrotate renames the log and restarts httpd gracefully). */
void rh_corelog_send(server_rec *s, const char *socket)
{
    char line[32];
    int fd = rh_ipc_connect(socket, 2000), logfd = -1, rv = -1;
    apr_os_file_t f;
    if (fd < 0)
        goto leave;
    if (s->error_log && apr_os_file_get(&f, s->error_log) == APR_SUCCESS)
        logfd = f;
    int n = snprintf(line, sizeof(line), "LOGS %d\n", module_log_level(s));
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } ctl;
    struct iovec iov = { line, (size_t)n };
    struct msghdr msg = { 0 };
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    if (logfd >= 0) {
        msg.msg_control = ctl.buf;
        msg.msg_controllen = sizeof(ctl.buf);
        struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(cm), &logfd, sizeof(int));
    }
    if (sendmsg(fd, &msg, MSG_NOSIGNAL) != n)
        goto leave;
    rv = rh_ipc_read_line(fd, line, sizeof(line), 2000) < 0 || strncmp(line, "OK", 2) ? -1 : 0;
leave:
    if (rv != 0)
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s, RHLOG(1015)
                     "could not hand the relay core the reopened error log; it writes to "
                     "the old one until it is restarted");
    if (fd >= 0)
        close(fd);
}
