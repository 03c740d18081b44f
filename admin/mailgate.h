/* mailgate: `subgate mailgate`, the change-password address's delivery
 * program. An MTA pipes one message into it (an alias such as
 * `chpasswd: "|subgate -c /etc/subgate/subgate.conf mailgate -f $sender"`);
 * it finds the signed request in it (inline clear-signed, or PGP/MIME
 * multipart/signed per RFC 3156), verifies it against the tenant's
 * keyring and the member's registered fingerprint, and on success resets
 * the password with the reply encrypted to the member (reset.c).
 *
 * The request is refused, with one log line giving the fingerprint and
 * the reason, when it is unsigned, badly signed, signed by an unknown,
 * expired, revoked or unregistered key, does not sign exactly the request
 * phrase, was signed outside reset_window, was seen before, or the key's
 * rate is used up. Refusals are answered with a short plain notice only
 * to a member of the tenant (never to an outside address: no
 * backscatter), at most reset_rate a day. A null sender and
 * automatically submitted mail (RFC 3834) are dropped without a word.
 *
 * Exit status for the MTA: 0 handled (reset, refused or dropped), 75
 * (EX_TEMPFAIL) try again later (database busy, signer down, gpg or the
 * queue failing), 64 (EX_USAGE) bad arguments.
 *
 * The message parser is split out below so that it can be tested on its
 * own. Single-threaded. */
#ifndef SG_MAILGATE_H
#define SG_MAILGATE_H

#include <stddef.h>

#include "../common/limits.h"

#define MAILGATE_EX_OK 0
#define MAILGATE_EX_USAGE 64
#define MAILGATE_EX_TEMPFAIL 75

enum mailgate_kind {
    MAILGATE_NONE,   /* no signed request found */
    MAILGATE_INLINE, /* -----BEGIN PGP SIGNED MESSAGE----- block */
    MAILGATE_MIME,   /* multipart/signed, application/pgp-signature */
};

/* What the parser found in a message. Addresses are "" when absent. */
struct mailgate_msg {
    enum mailgate_kind kind;
    char *signed_data; /* owned: the clear-signed block, or the first
                          part of multipart/signed as sent */
    size_t signed_len;
    char *sig; /* owned: MIME only, the detached signature */
    size_t siglen;
    char *text; /* owned: MIME only, the signed part's decoded text */
    size_t textlen;
    int has_return_path;                /* a Return-Path: field */
    char return_path[SG_MAX_PATH + 1];  /* its address; "" = null */
    int has_from_line;                  /* a leading mbox "From " line */
    char from_line[SG_MAX_PATH + 1];    /* its sender */
    char delivered_to[SG_MAX_PATH + 1]; /* the first Delivered-To: */
    char to[SG_MAX_PATH + 1];           /* the first To: mailbox */
    int auto_submitted;                 /* Auto-Submitted: not "no" */
};

/* Parses msg (len octets, CRLF line ends) into *m (cleared first). Never
 * fails on content: what it cannot use it leaves out. */
void mailgate_parse(const char *msg, size_t len, struct mailgate_msg *m);
/* Frees what m owns. */
void mailgate_msg_clear(struct mailgate_msg *m);

/* 1 if text is the request phrase (RESET_PHRASE): compared without case,
 * leading and trailing white space ignored, inner runs of white space as
 * one space, one final full stop allowed. */
int mailgate_phrase_ok(const char *text, size_t len);

/* Makes every line end CRLF (bare LF and bare CR alike) into a new buffer
 * of *outlen_r octets (at most twice len). */
char *mailgate_crlf(const char *in, size_t len, size_t *outlen_r);

#endif
