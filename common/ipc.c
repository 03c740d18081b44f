/* ipc: see ipc.h. The reader buffers at most one frame in its own storage;
 * it checks the length field as soon as the header is complete, before any
 * payload octet is copied. */
#include "ipc.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

static uint32_t ipc_get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
           (uint32_t)p[3];
}

static void ipc_put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

void ipc_reader_init(struct ipc_reader *r)
{
    r->have = 0;
}

void ipc_hdr_encode(uint8_t hdr[IPC_HDR_LEN], uint32_t type, uint32_t len)
{
    ipc_put32(hdr, type);
    ipc_put32(hdr + 4, len);
}

/* Copies up to want - r->have octets from in, returns how many. */
static size_t ipc_reader_fill(struct ipc_reader *r, const uint8_t *in,
                              size_t inlen, size_t want)
{
    size_t n = want - r->have;

    if (n > inlen)
        n = inlen;
    memcpy(r->buf + r->have, in, n);
    r->have += n;
    return n;
}

int ipc_reader_feed(struct ipc_reader *r, const void *buf, size_t len,
                    size_t *used_r, uint32_t *type_r, const uint8_t **payload_r,
                    uint32_t *len_r)
{
    const uint8_t *in = buf;
    size_t used = 0;
    uint32_t plen;

    if (r->have < IPC_HDR_LEN) {
        used += ipc_reader_fill(r, in, len, IPC_HDR_LEN);
        if (r->have < IPC_HDR_LEN) {
            *used_r = used;
            return 0;
        }
    }
    plen = ipc_get32(r->buf + 4);
    if (plen > SG_IPC_MAX_PAYLOAD) {
        *used_r = used;
        return -1;
    }
    used += ipc_reader_fill(r, in + used, len - used, IPC_HDR_LEN + plen);
    *used_r = used;
    if (r->have < IPC_HDR_LEN + plen)
        return 0;
    /* The frame stays in buf until the next call overwrites it. */
    r->have = 0;
    *type_r = ipc_get32(r->buf);
    *payload_r = r->buf + IPC_HDR_LEN;
    *len_r = plen;
    return 1;
}

/* Sends iov fully. MSG_NOSIGNAL turns a closed peer into EPIPE instead of
 * a signal; a descriptor that is not a socket falls back to writev(). */
static int ipc_send_all(int fd, struct iovec *iov, int iovcnt)
{
    int use_writev = 0;

    while (iovcnt > 0) {
        ssize_t n;

        if (use_writev) {
            n = writev(fd, iov, iovcnt);
        } else {
            struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)iovcnt};
            n = sendmsg(fd, &mh, MSG_NOSIGNAL);
        }
        if (n < 0) {
            int err = errno;
            if (err == EINTR)
                continue;
            if (err == ENOTSOCK && !use_writev) {
                use_writev = 1;
                continue;
            }
            return -err;
        }
        while (iovcnt > 0 && (size_t)n >= iov->iov_len) {
            n -= (ssize_t)iov->iov_len;
            iov++;
            iovcnt--;
        }
        if (iovcnt > 0) {
            iov->iov_base = (uint8_t *)iov->iov_base + n;
            iov->iov_len -= (size_t)n;
        }
    }
    return 0;
}

int ipc_write_frame(int fd, uint32_t type, const void *payload, size_t len)
{
    uint8_t hdr[IPC_HDR_LEN];
    struct iovec iov[2];

    if (len > SG_IPC_MAX_PAYLOAD)
        return -EMSGSIZE;
    ipc_hdr_encode(hdr, type, (uint32_t)len);
    iov[0].iov_base = hdr;
    iov[0].iov_len = IPC_HDR_LEN;
    /* writev() takes a non-const base; the payload is only read. */
    iov[1].iov_base = (void *)(uintptr_t)payload;
    iov[1].iov_len = len;
    return ipc_send_all(fd, iov, len > 0 ? 2 : 1);
}

/* Reads exactly len octets. 0 ok; -EPIPE on EOF after some octets,
 * -ECONNRESET on EOF before any; -errno else. */
static int ipc_read_all(int fd, uint8_t *buf, size_t len)
{
    size_t got = 0;

    while (got < len) {
        ssize_t n = read(fd, buf + got, len - got);
        if (n < 0) {
            int err = errno;
            if (err == EINTR)
                continue;
            return -err;
        }
        if (n == 0)
            return got == 0 ? -ECONNRESET : -EPIPE;
        got += (size_t)n;
    }
    return 0;
}

int ipc_read_frame(int fd, uint32_t *type_r, void *buf, size_t cap,
                   uint32_t *len_r)
{
    uint8_t hdr[IPC_HDR_LEN];
    uint32_t plen;
    int rc;

    rc = ipc_read_all(fd, hdr, IPC_HDR_LEN);
    if (rc < 0)
        return rc;
    plen = ipc_get32(hdr + 4);
    if (plen > SG_IPC_MAX_PAYLOAD)
        return -EPROTO;
    if (plen > cap)
        return -EMSGSIZE;
    if (plen > 0) {
        rc = ipc_read_all(fd, buf, plen);
        /* The header arrived: any EOF now is mid-frame. */
        if (rc == -ECONNRESET)
            rc = -EPIPE;
        if (rc < 0)
            return rc;
    }
    *type_r = ipc_get32(hdr);
    *len_r = plen;
    return 0;
}
