/* Fuzzes the inter-process frame reader (common/ipc.c), as the signer and
 * subgated run it on what a peer sends. The first octet picks how the
 * rest is cut into reads. Checks: progress, a frame's length never
 * exceeds SG_IPC_MAX_PAYLOAD and equals its header's, an oversized length
 * is refused before any payload is taken, and a frame re-encoded with
 * ipc_hdr_encode() reads back the same. */
#include <string.h>

#include "../common/ipc.h"
#include "fuzz.h"

static struct ipc_reader rd, rd2;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t again[IPC_HDR_LEN + SG_IPC_MAX_PAYLOAD];
    size_t off = 1, chunk;

    if (size < 1)
        return 0;
    chunk = data[0] == 0 ? size : (size_t)data[0] % 23 + 1;
    ipc_reader_init(&rd);
    while (off < size) {
        size_t len = size - off < chunk ? size - off : chunk, used = 0;
        const uint8_t *payload = NULL;
        uint32_t type = 0, plen = 0;
        int rc = ipc_reader_feed(&rd, data + off, len, &used, &type, &payload,
                                 &plen);

        FUZZ_CHECK(used <= len);
        if (rc < 0) {
            /* The channel is closed on this; nothing more is read. */
            FUZZ_CHECK(rd.have == IPC_HDR_LEN);
            break;
        }
        FUZZ_CHECK(rc == 1 || used == len);
        off += used;
        if (rc == 1) {
            size_t u2 = 0;
            const uint8_t *p2 = NULL;
            uint32_t t2 = 0, l2 = 0;

            FUZZ_CHECK(plen <= SG_IPC_MAX_PAYLOAD);
            ipc_hdr_encode(again, type, plen);
            memcpy(again + IPC_HDR_LEN, payload, plen);
            ipc_reader_init(&rd2);
            FUZZ_CHECK(ipc_reader_feed(&rd2, again, IPC_HDR_LEN + plen, &u2,
                                       &t2, &p2, &l2) == 1);
            FUZZ_CHECK(u2 == IPC_HDR_LEN + plen && t2 == type && l2 == plen);
            FUZZ_CHECK(memcmp(p2, again + IPC_HDR_LEN, plen) == 0);
        }
    }
    return 0;
}
