/* relay-https client: a route's credentials, from where the user keeps them
 * (see rhc_creds.h). */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rhc_config.h"
#include "rhc_creds.h"
#include "rhc_netrc.h"
#include "rhc_opts_int.h"
#include "rhc_secret.h"

/* The host of the URL, for .netrc: no user info, port or brackets. */
static void url_host(const char *url, char *host, size_t hostsz)
{
    const char *p = strstr(url, "://");

    p = p ? p + 3 : url;
    size_t len = strcspn(p, "/");
    const char *at = memrchr(p, '@', len);
    if (at) {
        len -= (size_t)(at + 1 - p);
        p = at + 1;
    }
    if (*p == '[') {
        const char *end = memchr(p, ']', len);
        len = end ? (size_t)(end - p - 1) : len - 1;
        ++p;
    } else {
        const char *colon = memchr(p, ':', len);
        if (colon)
            len = (size_t)(colon - p);
    }
    snprintf(host, hostsz, "%.*s", (int)len, p);
}

/* A password from the .netrc a route names: 1 found (in *out), 0 not, or an
 * exit code (> 1 never: RHC_EXIT_USAGE is 2) as -code. */
static int netrc_find(struct rhc_cmd *cmd, const struct rhc_opts *o, const char *login,
                      const char **out)
{
    char path[4096], host[256], err[512];
    const char *file = o->netrc;
    int missing_ok = !strcmp(file, "~");

    if (missing_ok) {
        const char *home = getenv("HOME");
        snprintf(path, sizeof(path), "%s/.netrc", home ? home : "");
        file = path;
        if (access(file, F_OK) != 0)
            return 0;
    }
    char *text = rhc_secret_read_file(file, RHC_CONFIG_MAX, 1, err, sizeof(err));
    if (!text)
        return -rhc_config_error("netrc %s", err);
    char *user = NULL, *pass = NULL;
    url_host(o->base_url, host, sizeof(host));
    int found = rhc_netrc_lookup(text, host, login, &user, &pass);
    free(text);
    if (found > 0 && pass) {
        char line[2048];
        snprintf(line, sizeof(line), "%s:%s", user, pass);
        explicit_bzero(pass, strlen(pass));
        *out = rhc_cmd_keep(cmd, line);
        explicit_bzero(line, sizeof(line));
    }
    free(user);
    free(pass);
    return found > 0 && *out ? 1 : 0;
}

/* A password asked on the terminal for USER (asked once per user and place). */
static const char *prompt_for(struct rhc_cmd *cmd, const char *what, const char *user,
                              const char *where)
{
    char prompt[512], *pass;

    snprintf(prompt, sizeof(prompt), "Enter %s password for user '%s' (%s): ", what, user,
             where);
    if (!(pass = rhc_secret_prompt(prompt)))
        return NULL;
    size_t n = strlen(user) + strlen(pass) + 2;
    char *line = malloc(n);
    const char *kept = NULL;
    if (line) {
        snprintf(line, n, "%s:%s", user, pass);
        kept = rhc_cmd_keep(cmd, line);
        explicit_bzero(line, n);
        free(line);
    }
    explicit_bzero(pass, strlen(pass));
    free(pass);
    return kept;
}

/* USER:PASS from USER and an environment variable holding the password. */
static const char *with_env_password(struct rhc_cmd *cmd, const char *user, const char *var)
{
    const char *pw = getenv(var);
    char line[2048];

    if (!pw)
        return NULL;
    snprintf(line, sizeof(line), "%s:%s", user, pw);
    const char *kept = rhc_cmd_keep(cmd, line);
    explicit_bzero(line, sizeof(line));
    return kept;
}

/* The server's credentials: -u USER:PASS as given; -u USER gets its password
 * from .netrc, RELAY_HTTPS_PASSWORD or the terminal; no -u: RELAY_HTTPS_USER,
 * then .netrc. */
static int server_secret(struct rhc_cmd *cmd, struct rhc_opts *o, const char **asked)
{
    int rc;

    if (!o->user && getenv("RELAY_HTTPS_USER"))
        o->user = rhc_cmd_keep(cmd, getenv("RELAY_HTTPS_USER"));
    if (o->user && strchr(o->user, ':'))
        return -1;
    if (o->netrc && (rc = netrc_find(cmd, o, o->user, &o->user)) != 0)
        return rc > 0 ? -1 : -rc;
    if (!o->user)
        return -1;
    const char *full = with_env_password(cmd, o->user, "RELAY_HTTPS_PASSWORD");
    if (!full && *asked && !strncmp(*asked, o->user, strlen(o->user)) &&
        (*asked)[strlen(o->user)] == ':')
        full = *asked;
    if (!full && (full = prompt_for(cmd, "server", o->user, o->base_url)))
        *asked = full;
    if (!full)
        return rhc_config_error("-u %s: no password given and no terminal to ask for it "
                            "(use -u USER:PASS, --netrc, RELAY_HTTPS_PASSWORD or -K FILE)",
                            o->user);
    o->user = full;
    return -1;
}

/* The proxy's: -U USER gets RELAY_HTTPS_PROXY_PASSWORD or a prompt; no -U:
 * RELAY_HTTPS_PROXY_USER. */
static int proxy_secret(struct rhc_cmd *cmd, struct rhc_opts *o, const char **asked)
{
    if (!o->proxy_user && getenv("RELAY_HTTPS_PROXY_USER"))
        o->proxy_user = rhc_cmd_keep(cmd, getenv("RELAY_HTTPS_PROXY_USER"));
    if (!o->proxy_user || strchr(o->proxy_user, ':'))
        return -1;
    const char *full = with_env_password(cmd, o->proxy_user, "RELAY_HTTPS_PROXY_PASSWORD");
    if (!full && *asked && !strncmp(*asked, o->proxy_user, strlen(o->proxy_user)) &&
        (*asked)[strlen(o->proxy_user)] == ':')
        full = *asked;
    if (!full && (full = prompt_for(cmd, "proxy", o->proxy_user,
                                    o->proxy ? o->proxy : "from the environment")))
        *asked = full;
    if (!full)
        return rhc_config_error("-U %s: no password given and no terminal to ask for it "
                            "(use -U USER:PASS, RELAY_HTTPS_PROXY_PASSWORD or -K FILE)",
                            o->proxy_user);
    o->proxy_user = full;
    return -1;
}


int rhc_creds_resolve(struct rhc_cmd *cmd, struct rhc_opts *o, struct rhc_asked *asked)
{
    int rc = server_secret(cmd, o, &asked->server);

    return rc >= 0 ? rc : proxy_secret(cmd, o, &asked->proxy);
}
