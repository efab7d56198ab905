/* Blocking helpers with timeouts (milliseconds) for the httpd side of the
 * handler <-> relay core exchange (the lines themselves: rh_ipc.h). They return
 * a negative errno on failure (-ETIMEDOUT when the wait ran out). */
#ifndef RH_IPC_CLIENT_H
#define RH_IPC_CLIENT_H

#include <stddef.h>
#include <sys/types.h>

int rh_ipc_connect(const char *path, int timeout_ms);
int rh_ipc_write_all(int fd, const void *buf, size_t len, int timeout_ms);
ssize_t rh_ipc_read(int fd, void *buf, size_t len, int timeout_ms);
/* Reads one line (without the newline) and nothing past it. */
int rh_ipc_read_line(int fd, char *buf, size_t max, int timeout_ms);

#endif
