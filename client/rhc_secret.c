/* relay-https client: secrets in argv, on the terminal and in files (see
 * rhc_secret.h). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include "rhc_secret.h"

#define PROMPT_MAX 1024

void rhc_secret_mask_userpass(char *arg)
{
    char *colon = strchr(arg, ':');

    if (colon)
        for (char *p = colon + 1; *p; ++p)
            *p = '*';
}

void rhc_secret_mask_url(char *url)
{
    char *start = strstr(url, "://");

    start = start ? start + 3 : url;
    size_t auth_len = strcspn(start, "/?#");
    char *at = memrchr(start, '@', auth_len);
    if (!at)
        return;
    char *colon = memchr(start, ':', (size_t)(at - start));
    if (colon)
        memset(colon + 1, '*', (size_t)(at - colon - 1));
}

char *rhc_secret_prompt(const char *prompt)
{
    struct termios old, quiet;
    char buf[PROMPT_MAX];
    char *line = NULL;
    int echo_off = 0;
    int fd = open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC);

    if (fd < 0)
        return NULL;
    if (tcgetattr(fd, &old) == 0) {
        quiet = old;
        quiet.c_lflag &= ~(tcflag_t)(ECHO | ECHONL);
        quiet.c_lflag |= ICANON;
        echo_off = tcsetattr(fd, TCSAFLUSH, &quiet) == 0;
    }
    if (write(fd, prompt, strlen(prompt)) < 0)
        goto leave;
    size_t n = 0;
    for (;;) {
        char ch;
        ssize_t r = read(fd, &ch, 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0 || ch == '\n' || ch == '\r')
            break;
        if (n < sizeof(buf) - 1)
            buf[n++] = ch;
    }
    buf[n] = '\0';
    line = strdup(buf);
    explicit_bzero(buf, sizeof(buf));
leave:
    if (echo_off)
        tcsetattr(fd, TCSAFLUSH, &old);
    if (write(fd, "\n", 1) < 0) { /* the echo-less line still wants its newline */ }
    close(fd);
    return line;
}

/* Owner and mode as a config file or netrc must have them. */
static int mode_ok(const char *path, const struct stat *st, int secret, char *err,
                   size_t errsz)
{
    if (!S_ISREG(st->st_mode)) {
        snprintf(err, errsz, "%s: not a regular file", path);
        return 0;
    }
    if (st->st_uid != getuid() && st->st_uid != 0) {
        snprintf(err, errsz, "%s: owned by another user (uid %u)", path, (unsigned)st->st_uid);
        return 0;
    }
    if (st->st_mode & (S_IWGRP | S_IWOTH)) {
        snprintf(err, errsz, "%s: others can write it (mode %03o); chmod go-w %s", path,
                 (unsigned)(st->st_mode & 0777), path);
        return 0;
    }
    if (secret && (st->st_mode & (S_IRGRP | S_IROTH))) {
        snprintf(err, errsz, "%s: holds secrets but others can read it (mode %03o); "
                 "chmod 600 %s", path, (unsigned)(st->st_mode & 0777), path);
        return 0;
    }
    return 1;
}

char *rhc_secret_read_file(const char *path, size_t max, int secret, char *err, size_t errsz)
{
    struct stat st;
    char *text = NULL;
    size_t len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);

    if (fd < 0 || fstat(fd, &st) != 0) {
        snprintf(err, errsz, "%s: %s", path, strerror(errno));
        goto leave;
    }
    if (!mode_ok(path, &st, secret, err, errsz))
        goto leave;
    if ((size_t)st.st_size > max) {
        snprintf(err, errsz, "%s: larger than %zu bytes", path, max);
        goto leave;
    }
    if (!(text = malloc((size_t)st.st_size + 1))) {
        snprintf(err, errsz, "%s: out of memory", path);
        goto leave;
    }
    while (len < (size_t)st.st_size) {
        ssize_t r = read(fd, text + len, (size_t)st.st_size - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        len += (size_t)r;
    }
    text[len] = '\0';
    if (memchr(text, '\0', len)) {
        snprintf(err, errsz, "%s: not a text file", path);
        free(text);
        text = NULL;
    }
leave:
    if (fd >= 0)
        close(fd);
    return text;
}

int rhc_secret_private(const char *path, char *err, size_t errsz)
{
    struct stat st;

    if (stat(path, &st) != 0) {
        snprintf(err, errsz, "%s: %s", path, strerror(errno));
        return 0;
    }
    return mode_ok(path, &st, 1, err, errsz);
}
