/* Directives and per-location configuration. */
#ifndef RH_CONFIG_H
#define RH_CONFIG_H

#include <httpd.h>
#include <http_config.h>
#include <apr_tables.h>

#define RH_DEFAULT_BUFSIZE      (256 * 1024)
#define RH_DEFAULT_WINDOW       (16 * 1024 * 1024)
#define RH_DEFAULT_IDLE_S       300
#define RH_DEFAULT_CONNECT_S    10
#define RH_DEFAULT_MAX_SESSIONS 4096
#define RH_HEARTBEAT_S          20
#define RH_DEFAULT_POLL_S       25

typedef struct rh_target {
    const char *name;
    const char *host;
    apr_port_t port;
} rh_target;

typedef struct rh_dir_conf {
    const char *location;        /* the <Location> path, to find the endpoint */
    apr_array_header_t *targets; /* of rh_target */
    int bufsize;                 /* -1: unset */
    int window;                  /* -1: unset */
    int idle_s;
    int connect_s;
    int poll_s;
} rh_dir_conf;

typedef struct rh_srv_conf {
    int max_sessions;            /* 0: unset */
    const char *socket_path;
} rh_srv_conf;

extern const command_rec rh_cmds[];

void *rh_create_dir_conf(apr_pool_t *p, char *dir);
void *rh_merge_dir_conf(apr_pool_t *p, void *base, void *add);
void *rh_create_srv_conf(apr_pool_t *p, server_rec *s);
void *rh_merge_srv_conf(apr_pool_t *p, void *base, void *add);

const rh_target *rh_find_target(const rh_dir_conf *dc, const char *name);
int rh_dir_bufsize(const rh_dir_conf *dc);
int rh_dir_window(const rh_dir_conf *dc);
int rh_dir_idle(const rh_dir_conf *dc);
int rh_dir_connect(const rh_dir_conf *dc);
int rh_dir_poll(const rh_dir_conf *dc);
int rh_valid_target_name(const char *name);

#endif
