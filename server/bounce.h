/* bounce: builds delivery status notifications (RFC 3464) that tell a
 * member their message failed (Action: failed, on a permanent refusal or
 * at max_queue_lifetime) or is late (Action: delayed, the optional delay
 * warning). Pure formatting, no I/O: the queue runner signs the result
 * and queues it with the null sender (RFC 5321 4.5.5) to the original
 * envelope sender. Any thread.
 *
 * The notification is a multipart/report (RFC 6522) of three parts: a
 * short text for people, the message/delivery-status fields, and the
 * header section of the original message (text/rfc822-headers; the body
 * is not returned). Its From: is "Mail Delivery System
 * <MAILER-DAEMON@DOMAIN>" where DOMAIN is the domain of the original
 * sender, so that the DKIM signature made with that domain's keys aligns
 * with From:. Non-ASCII addresses make it a message/global-delivery-status
 * report (RFC 6533) with "utf-8" address types. Every line is CRLF
 * terminated and at most 998 octets; text from remote servers is cut and
 * stripped of control and non-ASCII octets. */
#ifndef SG_BOUNCE_H
#define SG_BOUNCE_H

#include <stddef.h>

/* Diagnostic text kept from a remote reply: RFC 5321 4.5.3.1.5 allows
 * 512 octets per reply line; a shorter cut keeps every DSN line short. */
#define BOUNCE_MAX_DIAG 400
/* The original header section returned in the report: enough for every
 * field a person looks at; a larger one is cut at a line end. */
#define BOUNCE_MAX_HEADERS (64 * 1024)

enum bounce_action {
    BOUNCE_FAILED,  /* permanent failure or expiry */
    BOUNCE_DELAYED, /* still being retried */
};

/* One recipient the notification reports on. Strings are borrowed. */
struct bounce_rcpt {
    const char *addr;       /* as queued */
    const char *status;     /* RFC 3463 code: "5.1.1", "4.4.1" */
    const char *remote_mta; /* host that gave the reply, or NULL */
    const char *diag;       /* the reply or our reason, or NULL */
    int diag_smtp;          /* 1: diag is the remote's SMTP reply */
};

/* What the notification is about. Strings are borrowed. */
struct bounce_info {
    enum bounce_action action;
    const char *qid;      /* the original message's queue id */
    const char *dsn_qid;  /* the notification's own queue id */
    const char *hostname; /* Reporting-MTA: this node's name */
    const char *sender;   /* the original envelope sender (non-null) */
    long long arrival;    /* the original's arrival, Unix time */
    long long now;        /* Date: and Last-Attempt-Date: */
    long long until;      /* BOUNCE_DELAYED: Will-Retry-Until */
    const char *msg;      /* the original message (CRLF lines) */
    size_t msglen;
    const struct bounce_rcpt *rcpt;
    size_t nrcpt; /* at least 1 */
};

/* The domain of an envelope sender: what follows its last '@', or NULL
 * for the null sender and for a sender without one. */
const char *bounce_domain(const char *sender);

/* Builds the notification. Returns a malloc'd message (caller frees) of
 * *len_r octets, or NULL when none may be sent: null sender, a sender
 * without a domain, or no recipient. */
char *bounce_build(const struct bounce_info *b, size_t *len_r);

#endif
