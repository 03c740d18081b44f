/* signer_sync: see signer_sync.h. */
#include "signer_sync.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "ipc.h"
#include "limits.h"
#include "signer_proto.h"
#include "xalloc.h"

static int signer_sync_connect(const char *sock_path, unsigned timeout_ms,
                               char *err, size_t errlen)
{
    struct sockaddr_un sun;
    struct timeval tv;
    int fd, e;

    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    if (strlen(sock_path) >= sizeof(sun.sun_path)) {
        snprintf(err, errlen, "signer socket path too long");
        return -1;
    }
    memcpy(sun.sun_path, sock_path, strlen(sock_path) + 1);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        e = errno;
        snprintf(err, errlen, "socket: %s", strerror(e));
        return -1;
    }
    tv.tv_sec = (time_t)(timeout_ms / 1000);
    tv.tv_usec = (suseconds_t)(timeout_ms % 1000) * 1000;
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    (void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) != 0) {
        e = errno;
        snprintf(err, errlen, "signer unavailable: %s", strerror(e));
        close(fd);
        return -1;
    }
    return fd;
}

/* BEGIN, the message in frames of at most SG_IPC_MAX_PAYLOAD, END. */
static int signer_sync_send(int fd, const char *qid, const char *domain,
                            const char *msg, size_t len)
{
    char begin[128 + SG_MAX_DOMAIN];
    size_t qlen = strlen(qid), dlen = strlen(domain), off;
    int rc;

    if (qlen + dlen + 2 > sizeof(begin))
        return -EINVAL;
    memcpy(begin, qid, qlen + 1);
    memcpy(begin + qlen + 1, domain, dlen + 1);
    rc = ipc_write_frame(fd, SIGNER_BEGIN, begin, qlen + dlen + 2);
    for (off = 0; rc == 0 && off < len; off += SG_IPC_MAX_PAYLOAD) {
        size_t n = len - off;
        if (n > SG_IPC_MAX_PAYLOAD)
            n = SG_IPC_MAX_PAYLOAD;
        rc = ipc_write_frame(fd, SIGNER_DATA, msg + off, n);
    }
    if (rc == 0)
        rc = ipc_write_frame(fd, SIGNER_END, NULL, 0);
    return rc;
}

int signer_sync_sign(const char *sock_path, const char *qid, const char *domain,
                     const char *msg, size_t len, unsigned timeout_ms,
                     char **sig_r, size_t *siglen_r, char *err, size_t errlen)
{
    uint8_t *buf;
    uint32_t type, plen;
    int fd, rc;

    fd = signer_sync_connect(sock_path, timeout_ms, err, errlen);
    if (fd < 0)
        return -1;
    rc = signer_sync_send(fd, qid, domain, msg, len);
    if (rc != 0) {
        snprintf(err, errlen, "signer write: %s", strerror(-rc));
        close(fd);
        return -1;
    }
    buf = xmalloc(SG_IPC_MAX_PAYLOAD + 1);
    rc = ipc_read_frame(fd, &type, buf, SG_IPC_MAX_PAYLOAD, &plen);
    close(fd);
    if (rc != 0) {
        snprintf(err, errlen, "signer read: %s",
                 rc == -EAGAIN ? "timeout" : strerror(-rc));
        free(buf);
        return -1;
    }
    buf[plen] = '\0';
    if (type == SIGNER_OK) {
        *sig_r = (char *)buf;
        *siglen_r = plen;
        return 0;
    }
    if (type == SIGNER_TEMPFAIL)
        snprintf(err, errlen, "%s", (char *)buf);
    else
        snprintf(err, errlen, "signer sent unexpected frame type %u", type);
    free(buf);
    return -1;
}
