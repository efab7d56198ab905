/* relay-https: the client of mod_relay_https.
 *
 *   relay-https forward -L [ADDR:]PORT[:TARGET] ... [-K FILE] [options] [URL [TARGET]]
 *   relay-https stdio [-K FILE] [options] [URL] TARGET
 *   relay-https serve [options] --to HOST:PORT URL SERVICE
 *   relay-https proxy -L [ADDR:]PORT ... [options] URL
 *
 * One process, one event loop (rhc_ctx_step): forward runs any number of tunnels
 * at once, stdio one. This file is main only: the command line is rhc_opts.c,
 * the modes rhc_forward.c and rhc_stdio.c, signals rhc_signals.c, the tunnels
 * rhc_tunnel.c. Exit codes: see rhc_opts.h and --help. */
#include <errno.h>
#include <string.h>

#include <curl/curl.h>

#include "rhc_forward.h"
#include "rhc_opts.h"
#include "rhc_pxy.h"
#include "rhc_serve.h"
#include "rhc_signals.h"
#include "rhc_stdio.h"
#include "rhc_tunnel.h"

int main(int argc, char **argv)
{
    struct rhc_cmd cmd;
    rhc_ctx *c = NULL;
    int rc = rhc_opts_parse(argc, argv, &cmd);
    int curl_up = 0;

    if (rc >= 0)
        goto leave;
    rc = RHC_EXIT_ERROR;
    if (rhc_signals_setup() < 0) {
        rhc_err("pipe: %s", strerror(errno));
        goto leave;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        rhc_err("libcurl: initialisation failed");
        goto leave;
    }
    curl_up = 1;
    if (!(c = rhc_ctx_new(&cmd.routes[0]))) {
        rhc_err("libcurl: cannot create a multi handle");
        goto leave;
    }
    if (cmd.mode == RHC_MODE_SERVE)
        rc = rhc_serve_run(c, &cmd.routes[0]);
    else if (cmd.mode == RHC_MODE_PROXY)
        rc = rhc_pxy_run(c, &cmd);
    else
        rc = cmd.mode == RHC_MODE_FORWARD ? rhc_forward_run(c, &cmd)
                                          : rhc_stdio_run(c, &cmd.routes[0]);
leave:
    rhc_ctx_free(c);
    if (curl_up)
        curl_global_cleanup();
    rhc_cmd_free(&cmd);
    return rc;
}
