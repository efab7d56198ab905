/* relay-https client: the command line, config files (-K) and credentials
 * into struct rhc_cmd: every option is kept as given (struct item), then each
 * route applies, in order, the config file's options, the command line's, its
 * [section]'s and its own -L (rhc_opts.c sets them), and gets its credentials
 * (rhc_creds.c). */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "rh_proto.h"
#include "rh_util.h"
#include "rhc_config.h"
#include "rhc_creds.h"
#include "rhc_help.h"
#include "rhc_opts.h"
#include "rhc_opts_int.h"
#include "rhc_secret.h"

/* ------------------------------------------------------- what was given */

/* An option as given (command line or config file), applied to each route it
 * concerns. arg is owned by the struct rhc_cmd. */
struct item {
    const struct opt_def *d;
    char *arg;
};

struct items {
    struct item *v;
    size_t n, cap;
};

struct section {
    char name[64];
    struct items it;
};

/* Everything read, before the routes are made. */
struct given {
    struct rhc_cmd *cmd;
    struct items cfg;           /* config files, before any [section] */
    struct items cli;           /* the command line, then its operands */
    struct section *secs;
    size_t nsecs;
    const char *path;           /* the config file being read */
    int has_secret;             /* ... holds a password */
};

/* Keeps a copy of s for the life of the struct rhc_cmd; NULL when out of memory. */
char *rhc_cmd_keep(struct rhc_cmd *cmd, const char *s)
{
    if (cmd->nkeep == cmd->capkeep) {
        size_t cap = cmd->capkeep ? 2 * cmd->capkeep : 32;
        char **k = realloc(cmd->keep, cap * sizeof(*k));
        if (!k)
            return NULL;
        cmd->keep = k;
        cmd->capkeep = cap;
    }
    char *copy = strdup(s);
    if (copy)
        cmd->keep[cmd->nkeep++] = copy;
    return copy;
}

static int add_item(struct given *g, struct items *l, const struct opt_def *d, const char *arg)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 16;
        struct item *v = realloc(l->v, cap * sizeof(*v));
        if (!v)
            return rhc_usage_error("out of memory");
        l->v = v;
        l->cap = cap;
    }
    char *copy = NULL;
    if (arg && !(copy = rhc_cmd_keep(g->cmd, arg)))
        return rhc_usage_error("out of memory");
    l->v[l->n++] = (struct item){ d, copy };
    return -1;
}

static void given_free(struct given *g)
{
    free(g->cfg.v);
    free(g->cli.v);
    for (size_t i = 0; i < g->nsecs; ++i)
        free(g->secs[i].it.v);
    free(g->secs);
}

static struct section *section_get(struct given *g, const char *name)
{
    for (size_t i = 0; i < g->nsecs; ++i)
        if (!strcmp(g->secs[i].name, name))
            return &g->secs[i];
    struct section *s = realloc(g->secs, (g->nsecs + 1) * sizeof(*s));
    if (!s)
        return NULL;
    g->secs = s;
    s = &g->secs[g->nsecs++];
    memset(s, 0, sizeof(*s));
    snprintf(s->name, sizeof(s->name), "%s", name);
    return s;
}

/* Does this option's value hold a password (for the config file's mode check)? */
static int holds_secret(const struct opt_def *d, const char *value)
{
    if (d->flags & OF_USERPASS)
        return strchr(value, ':') != NULL;
    if (d->flags & OF_URLPASS) {
        const char *at = strchr(value, '@');
        const char *sl = strstr(value, "://");
        return at && strchr(sl ? sl + 3 : value, ':') < at;
    }
    if (d->val == 'H')
        return !strncasecmp(value, "authorization:", 14) ||
               !strncasecmp(value, "proxy-authorization:", 20);
    return 0;
}

/* One line of a config file (rhc_config_fn). */
static int config_line(void *arg, const char *section, const char *name, const char *value,
                       int line)
{
    struct given *g = arg;
    const struct opt_def *d = rhc_opt_by_name(name);

    if (!d || (d->flags & OF_CLI))
        return rhc_config_error("%s:%d: %s option '%s'", g->path, line,
                            d ? "not a config file" : "unknown", name);
    if (section && (d->flags & OF_GLOBAL))
        return rhc_config_error("%s:%d: '%s' is for the whole process: put it before the first "
                            "[section]", g->path, line, name);
    if (d->has_arg == no_argument && value)
        return rhc_config_error("%s:%d: '%s' takes no value", g->path, line, name);
    if (d->has_arg != no_argument && !value)
        return rhc_config_error("%s:%d: '%s' needs a value", g->path, line, name);
    if (section && !rh_valid_target_name(section))
        return rhc_config_error("%s:%d: [%s]: a section name is 1 to 63 of [A-Za-z0-9._-]",
                            g->path, line, section);
    if (value && holds_secret(d, value))
        g->has_secret = 1;
    struct section *s = section ? section_get(g, section) : NULL;
    if (section && !s)
        return rhc_config_error("out of memory");
    int rc = add_item(g, s ? &s->it : &g->cfg, d, value);
    return rc >= 0 ? rc : 0;
}

/* -K FILE: its lines join what was given. */
static int read_config(struct given *g, const char *path)
{
    char err[512];
    char *text = rhc_secret_read_file(path, RHC_CONFIG_MAX, 0, err, sizeof(err));
    int rc;

    if (!text)
        return rhc_config_error("--config %s", err);
    g->path = path;
    g->has_secret = 0;
    rc = rhc_config_parse(text, config_line, g, err, sizeof(err));
    free(text);
    if (rc == -1)
        return rhc_config_error("%s: %s", path, err);
    if (rc > 0)
        return rc;
    if (g->has_secret && !rhc_secret_private(path, err, sizeof(err)))
        return rhc_config_error("--config %s", err);
    return -1;
}

/* One command line option: kept (a copy: argv is masked), or acted on at once
 * (--help, --version, -K). */
static int cli_option(struct given *g, const struct opt_def *d, char *arg)
{
    int rc;

    if (d->flags & OF_CLI && d->val != 'K')
        return d->set(NULL, d, arg);
    if (d->val == 'K')
        return read_config(g, arg);
    if ((rc = add_item(g, &g->cli, d, arg)) >= 0)
        return rc;
    if (d->flags & OF_USERPASS)
        rhc_secret_mask_userpass(arg);
    else if (d->flags & OF_URLPASS)
        rhc_secret_mask_url(arg);
    return -1;
}

/* The options after the mode; argv[0] is the mode. Leaves optind at the first
 * operand (GNU getopt moves the operands behind the options). */
static int parse_options(int argc, char **argv, struct given *g)
{
    struct option longs[RHC_OPTS_MAX + 1];
    char shorts[2 * RHC_OPTS_MAX + 2];
    int c;

    rhc_opt_getopt_tables(longs, shorts);
    optind = 0;     /* 0, not 1: glibc then forgets any earlier parse */
    opterr = 0;
    while ((c = getopt_long(argc, argv, shorts, longs, NULL)) != -1) {
        const struct opt_def *d = rhc_opt_by_val(c);
        int rc = d ? cli_option(g, d, optarg) : rhc_opt_getopt_error(c, argv);
        if (rc >= 0)
            return rc;
    }
    return -1;
}

/* ---------------------------------------------------------------- the rest */

/* argv[1]: the mode, or --help / --version alone. */
static int parse_mode(int argc, char **argv, struct rhc_cmd *cmd)
{
    if (argc < 2)
        return rhc_usage_error("missing mode");
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))
        {
        rhc_help_full(stdout);
        return RHC_EXIT_OK;
    }
    if (!strcmp(argv[1], "-V") || !strcmp(argv[1], "--version"))
        {
        rhc_help_version();
        return RHC_EXIT_OK;
    }
    if (!strcmp(argv[1], "forward"))
        cmd->mode = RHC_MODE_FORWARD;
    else if (!strcmp(argv[1], "stdio"))
        cmd->mode = RHC_MODE_STDIO;
    else if (!strcmp(argv[1], "serve"))
        cmd->mode = RHC_MODE_SERVE;
    else if (!strcmp(argv[1], "proxy"))
        cmd->mode = RHC_MODE_PROXY;
    else
        return rhc_usage_error("unknown mode '%s'", argv[1]);
    return -1;
}

/* [URL [TARGET]], the n operands left after the options: they join the command
 * line's options as --url and --target. One operand that is not a URL is a
 * TARGET (the URL then comes from a config file). */
static int parse_operands(int n, char **operands, struct given *g)
{
    int rc = -1;

    if (n > 2)
        return rhc_usage_error("expected URL and TARGET (%d arguments given)", n);
    for (int i = 0; i < n && rc < 0; ++i) {
        int is_url = !strncasecmp(operands[i], "https://", 8) ||
                     !strncasecmp(operands[i], "http://", 7);
        int want = (i == 0 && (n == 2 || is_url)) ? OPT_URL : OPT_TARGET;
        rc = add_item(g, &g->cli, rhc_opt_by_val(want), operands[i]);
    }
    return rc;
}

/* ------------------------------------------------------------ the routes */

static int apply(struct rhc_opts *o, const struct items *l, int with_listen)
{
    for (size_t i = 0; i < l->n; ++i) {
        const struct item *it = &l->v[i];
        if ((it->d->flags & OF_LISTEN) && !with_listen)
            continue;
        int rc = it->d->set(o, it->d, it->arg);
        if (rc >= 0)
            return rc;
    }
    return -1;
}

/* What only a whole route can tell; n names the route in messages. */
static int check_route(const struct rhc_opts *o, const char *n)
{
    const char *sep = *n ? ": " : "";

    if (!o->base_url)
        return rhc_usage_error("%s%smissing URL (give it after the options, or url in -K FILE)",
                           n, sep);
    if (o->mode == RHC_MODE_PROXY)
        return o->listen_port ? -1 : rhc_usage_error("proxy needs -L [ADDR:]PORT");
    if (o->local_user || o->max_conns || o->handshake_ms)
        return rhc_usage_error("--local-user, --max-connections and --handshake-timeout are "
                               "for proxy mode");
    if (!o->target)
        return rhc_usage_error("%s%smissing TARGET (give it after URL, as -L PORT:TARGET, or "
                           "target in -K FILE)", n, sep);
    if (o->mode == RHC_MODE_FORWARD && !o->listen_port && !o->listen_path)
        return rhc_usage_error("%s%sforward needs -L [ADDR:]PORT[:TARGET]", n, sep);
    if (o->mode == RHC_MODE_SERVE && !o->serve_to)
        return rhc_usage_error("serve needs --to HOST:PORT (the service it offers)");
    if (o->key && !o->cert)
        return rhc_usage_error("%s%s--key needs --cert", n, sep);
    if (o->auth && !o->user)
        return rhc_usage_error("%s%s--auth needs --user USER:PASS", n, sep);
    return -1;
}

static int has_listen(const struct items *l)
{
    for (size_t i = 0; i < l->n; ++i)
        if (l->v[i].d->flags & OF_LISTEN)
            return 1;
    return 0;
}

static const struct section *section_find(const struct given *g, const char *name)
{
    for (size_t i = 0; name && i < g->nsecs; ++i)
        if (!strcmp(g->secs[i].name, name))
            return &g->secs[i];
    return NULL;
}

/* One route: the config file, the command line and its operands, then its
 * [section] (whose name is its default TARGET), then its own -L. */
static int make_route(struct given *g, struct rhc_opts *o, const struct section *sec,
                      const struct item *listen, struct rhc_asked *asked)
{
    char where[96] = "";
    int rc;

    rhc_opts_defaults(o, g->cmd->mode);
    if ((rc = apply(o, &g->cfg, 0)) >= 0 || (rc = apply(o, &g->cli, 0)) >= 0)
        return rc;
    if (o->mode == RHC_MODE_STDIO && !sec)
        sec = section_find(g, o->target);
    if (sec) {
        /* the sections go with the parse: the name is kept */
        if (!(o->name = o->target = rhc_cmd_keep(g->cmd, sec->name)))
            return rhc_usage_error("out of memory");
        snprintf(where, sizeof(where), "[%s]", sec->name);
        if ((rc = apply(o, &sec->it, o->mode == RHC_MODE_FORWARD)) >= 0)
            return rc;
    }
    if (listen) {
        o->name = listen->arg;
        snprintf(where, sizeof(where), "-L %.80s", listen->arg);
        if ((rc = listen->d->set(o, listen->d, listen->arg)) >= 0)
            return rc;
    }
    if ((rc = rhc_creds_resolve(g->cmd, o, asked)) >= 0)
        return rc;
    if (o->mode == RHC_MODE_PROXY) {
        if (o->target && strcmp(o->target, RH_DEST_TARGET))
            return rhc_usage_error("proxy takes no TARGET: its clients name their destinations");
        o->target = RH_DEST_TARGET;
    }
    return check_route(o, where);
}

static int add_route(struct given *g, const struct section *sec, const struct item *listen,
                     struct rhc_asked *asked)
{
    struct rhc_cmd *cmd = g->cmd;
    struct rhc_opts *r = realloc(cmd->routes, (cmd->nroutes + 1) * sizeof(*r));

    if (!r)
        return rhc_usage_error("out of memory");
    cmd->routes = r;
    r = &cmd->routes[cmd->nroutes++];
    int rc = make_route(g, r, sec, listen, asked);
    if (rc >= 0)
        return rc;
    return -1;
}

/* forward: one route per -L (config file and command line) and per [section]
 * with a listen; stdio: one route. */
static int make_routes(struct given *g)
{
    struct rhc_asked asked = { NULL, NULL };
    int rc = -1;

    if (g->cmd->mode != RHC_MODE_FORWARD && g->cmd->mode != RHC_MODE_PROXY) {
        if (has_listen(&g->cfg) || has_listen(&g->cli))
            return rhc_usage_error("-L is for forward mode only");
        return add_route(g, NULL, NULL, &asked);
    }
    const struct items *lists[2] = { &g->cfg, &g->cli };
    for (int k = 0; k < 2 && rc < 0; ++k)
        for (size_t i = 0; i < lists[k]->n && rc < 0; ++i)
            if (lists[k]->v[i].d->flags & OF_LISTEN)
                rc = add_route(g, NULL, &lists[k]->v[i], &asked);
    for (size_t i = 0; i < g->nsecs && rc < 0; ++i)
        if (has_listen(&g->secs[i].it))
            rc = add_route(g, &g->secs[i], NULL, &asked);
    if (rc < 0 && g->cmd->nroutes == 0)
        return rhc_usage_error(g->cmd->mode == RHC_MODE_PROXY ? "proxy needs -L [ADDR:]PORT"
                               : "forward needs -L [ADDR:]PORT[:TARGET] (or tunnels in -K FILE)");
    return rc;
}

int rhc_opts_parse(int argc, char **argv, struct rhc_cmd *cmd)
{
    struct given g;
    int rc;

    memset(cmd, 0, sizeof(*cmd));
    memset(&g, 0, sizeof(g));
    g.cmd = cmd;
    if ((rc = parse_mode(argc, argv, cmd)) >= 0)
        goto leave;
    /* The mode takes argv[0]'s place for getopt; GNU getopt lets options follow
     * the positional arguments too. */
    if ((rc = parse_options(argc - 1, argv + 1, &g)) >= 0)
        goto leave;
    if ((rc = parse_operands(argc - 1 - optind, argv + 1 + optind, &g)) >= 0)
        goto leave;
    if ((rc = make_routes(&g)) >= 0)
        goto leave;
    rhc_verbose = cmd->routes[0].verbose;
leave:
    given_free(&g);
    return rc;
}

void rhc_cmd_free(struct rhc_cmd *cmd)
{
    for (size_t i = 0; i < cmd->nroutes; ++i)
        rhc_opts_free(&cmd->routes[i]);
    free(cmd->routes);
    for (size_t i = 0; i < cmd->nkeep; ++i) {
        explicit_bzero(cmd->keep[i], strlen(cmd->keep[i]));
        free(cmd->keep[i]);
    }
    free(cmd->keep);
    memset(cmd, 0, sizeof(*cmd));
}

