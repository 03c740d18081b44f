/* ipc: typed frames between subgate's processes over Unix stream sockets.
 * A frame is an 8-octet header (type, payload length; both uint32 in
 * network order) and at most SG_IPC_MAX_PAYLOAD octets of payload. An
 * unknown type, an oversized length or trailing bytes are a bug in the
 * peer: the channel is closed. The reader is incremental and never
 * allocates. Any thread; one reader per channel. */
#ifndef SG_IPC_H
#define SG_IPC_H

#include <stddef.h>
#include <stdint.h>

#include "limits.h"

#define IPC_HDR_LEN 8

struct ipc_reader {
    size_t have; /* octets of the current frame buffered */
    uint8_t buf[IPC_HDR_LEN + SG_IPC_MAX_PAYLOAD];
};

void ipc_reader_init(struct ipc_reader *r);
/* Consumes bytes from buf (count in *used_r). 1: one frame complete,
 * *type_r, *payload_r (valid until the next call) and *len_r set; 0: all of
 * buf consumed, need more; -1: length over SG_IPC_MAX_PAYLOAD. */
int ipc_reader_feed(struct ipc_reader *r, const void *buf, size_t len,
                    size_t *used_r, uint32_t *type_r, const uint8_t **payload_r,
                    uint32_t *len_r);
/* Writes the header of a frame into hdr. */
void ipc_hdr_encode(uint8_t hdr[IPC_HDR_LEN], uint32_t type, uint32_t len);

/* Blocking helpers for processes without an event loop. 0 or -errno
 * (-EMSGSIZE for len over the maximum, -EPIPE for EOF mid-frame). */
int ipc_write_frame(int fd, uint32_t type, const void *payload, size_t len);
/* Reads one frame into buf (cap >= SG_IPC_MAX_PAYLOAD). 0 ok, -ECONNRESET
 * on clean EOF before a header, -EPROTO on a bad length, -errno else. */
int ipc_read_frame(int fd, uint32_t *type_r, void *buf, size_t cap,
                   uint32_t *len_r);

#endif
