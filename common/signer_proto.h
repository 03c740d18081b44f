/* signer_proto: the frames that subgated and subgate-signer exchange over
 * the signer's Unix socket (<run_dir>/signer.sock). One request per
 * connection:
 *
 *   client: SIGNER_BEGIN  payload "QUEUEID\0DOMAIN\0"  (DOMAIN = d=)
 *   client: SIGNER_DATA   payload message octets (any number of frames)
 *   client: SIGNER_END    empty
 *   signer: SIGNER_OK     payload: DKIM-Signature header fields to put
 *                         before the message, each ending in CRLF
 *       or: SIGNER_TEMPFAIL payload: reason text (no key, bad message)
 *
 * The message is as queued: CRLF line ends, dot-stuffing removed. The
 * signer refuses (TEMPFAIL) a message over its max_message_size plus
 * headroom, and closes the channel on any other frame order. */
#ifndef SG_SIGNER_PROTO_H
#define SG_SIGNER_PROTO_H

enum signer_frame {
    SIGNER_BEGIN = 1,
    SIGNER_DATA = 2,
    SIGNER_END = 3,
    SIGNER_OK = 4,
    SIGNER_TEMPFAIL = 5,
};

#define SIGNER_SOCKET_NAME "signer.sock"

#endif
