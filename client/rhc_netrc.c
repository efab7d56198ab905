/* relay-https client: .netrc lookup (see rhc_netrc.h). */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "rhc_netrc.h"

#define TOKEN_MAX 1024

struct lexer {
    const char *p;
    int macdef;         /* the next line break starts a macro body */
};

/* Skips a macro body: everything up to an empty line. */
static void skip_macro(struct lexer *lx)
{
    const char *p = lx->p;

    while (*p && *p != '\n')
        ++p;
    while (*p) {
        ++p;                              /* the '\n' ending the previous line */
        if (*p == '\n' || (*p == '\r' && p[1] == '\n'))
            break;
        while (*p && *p != '\n')
            ++p;
    }
    lx->p = p;
    lx->macdef = 0;
}

/* The next token into tok (bounded); 0 at the end of the text. */
static int next_token(struct lexer *lx, char *tok)
{
    size_t n = 0;

    if (lx->macdef)
        skip_macro(lx);
    for (;;) {
        while (isspace((unsigned char)*lx->p))
            ++lx->p;
        if (*lx->p != '#')
            break;
        while (*lx->p && *lx->p != '\n')
            ++lx->p;
    }
    if (!*lx->p)
        return 0;
    if (*lx->p == '"') {
        for (++lx->p; *lx->p && *lx->p != '"'; ++lx->p) {
            if (*lx->p == '\\' && lx->p[1])
                ++lx->p;
            if (n < TOKEN_MAX - 1)
                tok[n++] = *lx->p;
        }
        if (*lx->p == '"')
            ++lx->p;
    } else {
        for (; *lx->p && !isspace((unsigned char)*lx->p); ++lx->p)
            if (n < TOKEN_MAX - 1)
                tok[n++] = *lx->p;
    }
    tok[n] = '\0';
    return 1;
}

struct entry {
    int is_default, matches;
    char user[TOKEN_MAX], pass[TOKEN_MAX];
    int have_user, have_pass;
};

/* Reads the key/value pairs of one entry up to the next machine/default.
 * Returns the token that ended it (1, in tok) or 0 at the end of the text. */
static int read_entry(struct lexer *lx, struct entry *e, char *tok)
{
    while (next_token(lx, tok)) {
        if (!strcmp(tok, "machine") || !strcmp(tok, "default"))
            return 1;
        if (!strcmp(tok, "macdef")) {
            next_token(lx, tok);          /* its name */
            lx->macdef = 1;
            continue;
        }
        int is_login = !strcmp(tok, "login"), is_pass = !strcmp(tok, "password");
        if (!next_token(lx, tok))
            return 0;
        if (is_login) {
            strcpy(e->user, tok);
            e->have_user = 1;
        } else if (is_pass) {
            strcpy(e->pass, tok);
            e->have_pass = 1;
        }                                   /* account and unknown keys: ignored */
    }
    return 0;
}

static int take(const struct entry *e, const char *login, char **user, char **pass)
{
    *user = strdup(e->have_user ? e->user : login);
    *pass = e->have_pass ? strdup(e->pass) : NULL;
    if (!*user || (e->have_pass && !*pass)) {
        free(*user);
        free(*pass);
        *user = *pass = NULL;
        return -1;
    }
    return 1;
}

int rhc_netrc_lookup(const char *text, const char *host, const char *login,
                     char **user, char **pass)
{
    struct lexer lx = { text, 0 };
    char tok[TOKEN_MAX];
    int more = next_token(&lx, tok);
    struct entry e, dflt;

    *user = *pass = NULL;
    dflt.matches = 0;
    while (more) {
        memset(&e, 0, sizeof(e));
        if (!strcmp(tok, "machine")) {
            if (!next_token(&lx, tok))
                break;
            e.matches = !strcasecmp(tok, host);
        } else if (!strcmp(tok, "default")) {
            e.is_default = e.matches = 1;
        } else {
            more = next_token(&lx, tok);   /* stray token before any entry */
            continue;
        }
        more = read_entry(&lx, &e, tok);
        /* an entry without login gives its password to the user named by -u */
        if (!e.matches || !(login ? !e.have_user || !strcmp(login, e.user) : e.have_user))
            continue;
        if (!e.is_default)
            return take(&e, login, user, pass);
        if (!dflt.matches)
            dflt = e;                       /* only if no machine matches */
    }
    return dflt.matches ? take(&dflt, login, user, pass) : 0;
}
