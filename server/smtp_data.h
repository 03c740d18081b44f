/* smtp_data: incremental reader of the DATA section (RFC 5321 4.1.1.4,
 * 4.5.2). Removes dot-stuffing, detects the end "<CRLF>.<CRLF>" (no other
 * form), turns bare LF into CRLF, refuses a bare CR or a NUL anywhere, and
 * stores the message (CRLF lines) in a buffer bounded by max_size.
 * Meanwhile it splits the header section into fields and
 * enforces SG_MAX_HEADER_COUNT, SG_MAX_HEADER_FIELD, SG_MAX_HEADER_SECTION
 * and SG_MAX_TEXT_LINE. On a bound it keeps reading (discarding) until the
 * end of data, so that the session can answer and stay in sync. Loop
 * thread only. */
#ifndef SG_SMTP_DATA_H
#define SG_SMTP_DATA_H

#include <stddef.h>

enum smtp_data_err {
    SMTP_DATA_OK = 0,
    SMTP_DATA_TOO_BIG,       /* 552 5.3.4 */
    SMTP_DATA_LINE_TOO_LONG, /* 552 5.3.4 (998 octets, RFC 5322 2.1.1) */
    SMTP_DATA_TOO_MANY_HEADERS,
    SMTP_DATA_HEADER_TOO_BIG,
    SMTP_DATA_BAD_HEADER, /* 554 5.6.0: bad field name */
    SMTP_DATA_BAD_OCTET,  /* 554 5.6.0: NUL, or CR not before LF */
};

struct smtp_header {
    size_t off;      /* offset of the field's first octet in the message */
    size_t len;      /* whole field including folds, excluding final CRLF */
    size_t name_len; /* octets of the name before ':' */
};

struct smtp_data;

struct smtp_data *smtp_data_new(size_t max_size);
void smtp_data_free(struct smtp_data **dp);
/* Forgets the previous message, ready for the next DATA. */
void smtp_data_reset(struct smtp_data *d);
/* Consumes bytes (count in *used_r). 1: end of data seen (bytes after it
 * are not consumed: they are the next pipelined command); 0: need more. */
int smtp_data_feed(struct smtp_data *d, const char *buf, size_t len,
                   size_t *used_r);
/* After 1 from _feed: SMTP_DATA_OK or the first bound that was hit. */
enum smtp_data_err smtp_data_error(const struct smtp_data *d);
/* The reply for an error ("552 5.3.4 Message size exceeds fixed limit"),
 * or NULL for SMTP_DATA_OK. */
const char *smtp_data_error_reply(enum smtp_data_err e);
/* The message as stored (CRLF lines, unstuffed). */
const char *smtp_data_message(const struct smtp_data *d, size_t *len_r);
/* The header fields, in order. */
const struct smtp_header *smtp_data_headers(const struct smtp_data *d,
                                            size_t *n_r);
/* Offset where the body starts (after the empty line), or the message
 * length if there is no body. */
size_t smtp_data_body_offset(const struct smtp_data *d);
/* Takes the message buffer away (caller frees with free()); the reader is
 * reset. */
char *smtp_data_steal(struct smtp_data *d, size_t *len_r);
/* Removes header i and its CRLF from the stored message; the fields
 * after it move down one index. 0 or -1 (no such field). */
int smtp_data_remove_header(struct smtp_data *d, size_t i);
/* Replaces header i by new_field (a complete field without final CRLF) in
 * the stored message, e.g. to rewrite From:. 0 or -1 (size bound). */
int smtp_data_replace_header(struct smtp_data *d, size_t i,
                             const char *new_field, size_t len);

#endif
