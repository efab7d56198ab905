/* relay-https client: config file lines into (section, name, value) calls. See
 * rhc_config.h for the syntax. The text is cut up in place. */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "rhc_config.h"

static char *skip_space(char *p)
{
    while (*p == ' ' || *p == '\t')
        ++p;
    return p;
}

static void trim_end(char *s)
{
    size_t n = strlen(s);

    while (n > 0 && isspace((unsigned char)s[n - 1]))
        s[--n] = '\0';
}

/* A double-quoted value at p (after the quote), unescaped in place. Returns the
 * value, or NULL when the quote does not close or something follows it. */
static char *quoted(char *p)
{
    char *out = p, *val = p;

    for (; *p && *p != '"'; ++p) {
        if (*p != '\\') {
            *out++ = *p;
            continue;
        }
        switch (*++p) {
        case 't': *out++ = '\t'; break;
        case 'n': *out++ = '\n'; break;
        case 'r': *out++ = '\r'; break;
        case 'v': *out++ = '\v'; break;
        case '\0': return NULL;
        default: *out++ = *p; break;   /* \" \\ and any other: the character */
        }
    }
    if (*p != '"')
        return NULL;
    p = skip_space(p + 1);
    if (*p && *p != '#')
        return NULL;
    *out = '\0';
    return val;
}

/* "[name]": the section name, or NULL when the line is not a well-formed one. */
static char *section_name(char *p)
{
    char *end = strchr(p, ']');

    if (!end || *skip_space(end + 1))
        return NULL;
    *end = '\0';
    p = skip_space(p + 1);
    trim_end(p);
    return *p ? p : NULL;
}

/* One option line: name, then '=', ':' or spaces, then the value. */
static int option_line(char *p, const char **name, const char **value)
{
    if (p[0] == '-' && p[1] == '-')
        p += 2;
    else if (p[0] == '-')
        ++p;
    *name = p;
    while (*p && !isspace((unsigned char)*p) && *p != '=' && *p != ':')
        ++p;
    if (p == *name)
        return -1;
    char sep = *p;
    if (*p)
        *p++ = '\0';
    p = skip_space(p);
    if ((sep == ' ' || sep == '\t') && (*p == '=' || *p == ':'))
        p = skip_space(p + 1);
    if (*p == '"')
        return (*value = quoted(p + 1)) ? 0 : -2;
    trim_end(p);
    *value = *p ? p : NULL;
    return 0;
}

int rhc_config_parse(char *text, rhc_config_fn fn, void *arg, char *err, size_t errsz)
{
    const char *section = NULL;
    int lineno = 0;

    for (char *line = text, *next; line; line = next) {
        ++lineno;
        if ((next = strchr(line, '\n')))
            *next++ = '\0';
        char *p = skip_space(line);
        trim_end(p);
        if (!*p || *p == '#')
            continue;
        if (*p == '[') {
            if (!(section = section_name(p))) {
                snprintf(err, errsz, "line %d: expected [NAME]", lineno);
                return -1;
            }
            continue;
        }
        const char *name = NULL, *value = NULL;
        int rc = option_line(p, &name, &value);
        if (rc < 0) {
            snprintf(err, errsz, "line %d: %s", lineno,
                     rc == -1 ? "expected an option name" : "a quoted value must end with a '\"' "
                     "(a comment may follow it, nothing else)");
            return -1;
        }
        if ((rc = fn(arg, section, name, value, lineno)) != 0)
            return rc;
    }
    return 0;
}
