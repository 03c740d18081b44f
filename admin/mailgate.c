/* mailgate: the change-password address's delivery program. See
 * mailgate.h for what it accepts and docs/password-reset.md for the
 * flow. The first half parses the message (RFC 5322 header fields, MIME
 * of RFC 2045/2046, RFC 3156 multipart/signed); the second decides. */
#include "mailgate.h"

#include <ctype.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "../common/addr.h"
#include "../common/db.h"
#include "../common/log.h"
#include "../common/xalloc.h"
#include "admin.h"
#include "outmail.h"
#include "pgp.h"
#include "reset.h"

/* One unfolded header field value we look at (Content-Type with its
 * parameters, an address field). Longer values are not ours to use. */
#define MG_MAX_FIELD 2048
/* RFC 2046 5.1.1: a boundary is 1 to 70 characters. */
#define MG_MAX_BOUNDARY 70
/* Parts of one multipart body we look at, and how deep. */
#define MG_MAX_PARTS 16
#define MG_MAX_DEPTH 3
#define MG_ESC (4 * SG_LOG_MAX_PEER_TEXT + 4)

static const char mg_begin[] = "-----BEGIN PGP SIGNED MESSAGE-----";
static const char mg_end[] = "-----END PGP SIGNATURE-----";

/* A span of the message. */
struct mg_span {
    const char *p;
    size_t len;
};

/* ---- header fields ------------------------------------------------- */

/* Splits an entity into header and body at the first empty line. An
 * entity starting with an empty line has no header. */
static void mg_split(struct mg_span e, struct mg_span *head,
                     struct mg_span *body)
{
    const char *p;

    if (e.len >= 2 && e.p[0] == '\r' && e.p[1] == '\n') {
        *head = (struct mg_span){e.p, 0};
        *body = (struct mg_span){e.p + 2, e.len - 2};
        return;
    }
    p = memmem(e.p, e.len, "\r\n\r\n", 4);
    if (p == NULL) {
        *head = e;
        *body = (struct mg_span){e.p + e.len, 0};
        return;
    }
    *head = (struct mg_span){e.p, (size_t)(p - e.p) + 2};
    *body = (struct mg_span){p + 4, e.len - (size_t)(p - e.p) - 4};
}

/* Finds the first field called name in head and copies its value,
 * unfolded and trimmed, into out (outlen). 1 found, 0 not (or too long
 * to be ours). */
static int mg_field(struct mg_span head, const char *name, char *out,
                    size_t outlen)
{
    size_t nlen = strlen(name), i = 0;

    while (i < head.len) {
        const char *line = head.p + i;
        size_t rest = head.len - i, n = 0, k;

        if (rest > nlen && strncasecmp(line, name, nlen) == 0 &&
            line[nlen] == ':') {
            /* The value runs on over continuation lines (RFC 5322
             * 2.2.3): a CRLF followed by white space. */
            for (k = nlen + 1; k < rest; k++) {
                if (line[k] == '\r' && k + 2 < rest && line[k + 1] == '\n' &&
                    (line[k + 2] == ' ' || line[k + 2] == '\t')) {
                    k++;
                    continue;
                }
                if (line[k] == '\r' || line[k] == '\n')
                    break;
                if (n + 1 >= outlen)
                    return 0;
                out[n++] = line[k];
            }
            while (n > 0 && (out[n - 1] == ' ' || out[n - 1] == '\t'))
                n--;
            out[n] = '\0';
            k = strspn(out, " \t");
            memmove(out, out + k, n - k + 1);
            return 1;
        }
        /* On to the next line that does not continue this field. */
        for (;;) {
            const char *nl = memchr(head.p + i, '\n', head.len - i);
            if (nl == NULL)
                return 0;
            i = (size_t)(nl - head.p) + 1;
            if (i >= head.len || (head.p[i] != ' ' && head.p[i] != '\t'))
                break;
        }
    }
    return 0;
}

/* The lower-cased "type/subtype" of a Content-Type value into out. */
static void mg_ctype(const char *v, char *out, size_t outlen)
{
    size_t n = 0;

    for (; *v != '\0' && *v != ';' && *v != ' ' && *v != '\t' && n + 1 < outlen;
         v++)
        out[n++] = (char)tolower((unsigned char)*v);
    out[n] = '\0';
}

/* The parameter name of a Content-Type value (RFC 2045 5.1: token or
 * quoted string) into out. 1 found, 0 not. */
static int mg_param(const char *v, const char *name, char *out, size_t outlen)
{
    size_t nlen = strlen(name);

    v = strchr(v, ';');
    while (v != NULL && *v != '\0') {
        size_t n = 0;
        int match;

        v += strspn(v, "; \t");
        match = strncasecmp(v, name, nlen) == 0 &&
                (v[nlen] == '=' || v[nlen] == ' ');
        v += strcspn(v, "=;");
        if (*v != '=')
            continue;
        v++;
        v += strspn(v, " \t");
        if (*v == '"') {
            for (v++; *v != '\0' && *v != '"'; v++) {
                if (*v == '\\' && v[1] != '\0')
                    v++;
                if (match && n + 1 < outlen)
                    out[n++] = *v;
            }
            if (*v == '"')
                v++;
        } else {
            for (; *v != '\0' && *v != ';' && *v != ' ' && *v != '\t'; v++)
                if (match && n + 1 < outlen)
                    out[n++] = *v;
        }
        if (match) {
            out[n] = '\0';
            return n > 0;
        }
        v = strchr(v, ';');
    }
    return 0;
}

/* The address inside the first <...> of v, or v itself when it has no
 * angle brackets, into out (SG_MAX_PATH + 1). "" for "<>". 1 when it is
 * an address or null, 0 not. */
static int mg_angle_addr(const char *v, char *out)
{
    const char *lt = strchr(v, '<'), *gt;
    size_t n;

    if (lt != NULL) {
        gt = strchr(lt, '>');
        if (gt == NULL)
            return 0;
        v = lt + 1;
        n = (size_t)(gt - v);
    } else {
        n = strcspn(v, " \t");
    }
    if (n > SG_MAX_PATH)
        return 0;
    memcpy(out, v, n);
    out[n] = '\0';
    return n == 0 || addr_is_valid(out);
}

/* ---- MIME ----------------------------------------------------------- */

/* Splits a multipart body at the boundary (RFC 2046 5.1.1: the CRLF
 * before a delimiter belongs to it; text after the boundary on its line
 * is padding). Fills parts, *n_r their count. 1 when the closing
 * delimiter was found, 0 not. */
static int mg_parts(struct mg_span body, const char *boundary,
                    struct mg_span *parts, size_t max, size_t *n_r)
{
    size_t blen = strlen(boundary), i = 0, n = 0;
    const char *start = NULL;

    *n_r = 0;
    while (i < body.len) {
        const char *line = body.p + i;
        const char *nl = memchr(line, '\n', body.len - i);
        size_t ll = nl != NULL ? (size_t)(nl - line) + 1 : body.len - i;

        if (ll >= 2 + blen && line[0] == '-' && line[1] == '-' &&
            memcmp(line + 2, boundary, blen) == 0) {
            int close = ll >= 4 + blen && line[2 + blen] == '-' &&
                        line[3 + blen] == '-';
            if (start != NULL) {
                /* The part ends before the CRLF that precedes this line. */
                const char *end = line >= start + 2 ? line - 2 : start;
                if (n == max)
                    return 0;
                parts[n++] = (struct mg_span){start, (size_t)(end - start)};
            }
            if (close) {
                *n_r = n;
                return 1;
            }
            start = line + ll;
        }
        i += ll;
    }
    return 0;
}

static int mg_hex(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = tolower(c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* RFC 2045 6.7 quoted-printable into out (room for len + 1). */
static size_t mg_qp(const char *in, size_t len, char *out)
{
    size_t i = 0, n = 0;

    while (i < len) {
        if (in[i] == '=' && i + 2 < len && in[i + 1] == '\r' &&
            in[i + 2] == '\n') {
            i += 3; /* soft line break */
        } else if (in[i] == '=' && i + 2 < len && mg_hex(in[i + 1]) >= 0 &&
                   mg_hex(in[i + 2]) >= 0) {
            out[n++] = (char)(mg_hex(in[i + 1]) * 16 + mg_hex(in[i + 2]));
            i += 3;
        } else {
            out[n++] = in[i++];
        }
    }
    out[n] = '\0';
    return n;
}

/* RFC 2045 6.8 base64 into out (room for len + 1); other characters are
 * skipped. */
static size_t mg_b64(const char *in, size_t len, char *out)
{
    static const char abc[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    unsigned acc = 0;
    int bits = 0;
    size_t n = 0;

    for (size_t i = 0; i < len && in[i] != '='; i++) {
        const char *p = in[i] != '\0' ? strchr(abc, in[i]) : NULL;
        if (p == NULL)
            continue;
        acc = (acc << 6) | (unsigned)(p - abc);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[n++] = (char)((acc >> bits) & 0xff);
        }
    }
    out[n] = '\0';
    return n;
}

/* The body of entity e decoded by its Content-Transfer-Encoding, into a
 * new buffer (*len_r octets). */
static char *mg_decode(struct mg_span head, struct mg_span body, size_t *len_r)
{
    char cte[64];
    char *out = xmalloc(body.len + 1);

    if (!mg_field(head, "Content-Transfer-Encoding", cte, sizeof cte))
        cte[0] = '\0';
    if (strcasecmp(cte, "quoted-printable") == 0) {
        *len_r = mg_qp(body.p, body.len, out);
    } else if (strcasecmp(cte, "base64") == 0) {
        *len_r = mg_b64(body.p, body.len, out);
    } else {
        memcpy(out, body.p, body.len);
        out[body.len] = '\0';
        *len_r = body.len;
    }
    return out;
}

/* The decoded text of the first text/plain entity in e (e itself, or
 * inside multipart/mixed or alternative), or NULL. */
static char *mg_text(struct mg_span e, int depth, size_t *len_r)
{
    struct mg_span head, body, parts[MG_MAX_PARTS];
    char v[MG_MAX_FIELD], type[128], boundary[MG_MAX_BOUNDARY + 1];
    size_t n;

    mg_split(e, &head, &body);
    if (!mg_field(head, "Content-Type", v, sizeof v))
        v[0] = '\0';
    mg_ctype(v, type, sizeof type);
    if (type[0] == '\0' || strcmp(type, "text/plain") == 0)
        return mg_decode(head, body, len_r);
    if (depth >= MG_MAX_DEPTH ||
        (strcmp(type, "multipart/mixed") != 0 &&
         strcmp(type, "multipart/alternative") != 0) ||
        !mg_param(v, "boundary", boundary, sizeof boundary))
        return NULL;
    mg_parts(body, boundary, parts, MG_MAX_PARTS, &n);
    for (size_t i = 0; i < n; i++) {
        char *t = mg_text(parts[i], depth + 1, len_r);
        if (t != NULL)
            return t;
    }
    return NULL;
}

/* RFC 3156 5: multipart/signed with protocol application/pgp-signature,
 * exactly two parts, the second application/pgp-signature. */
static void mg_mime(struct mg_span body, const char *ct, struct mailgate_msg *m)
{
    char proto[128], boundary[MG_MAX_BOUNDARY + 1], v[MG_MAX_FIELD];
    char type[128];
    struct mg_span parts[MG_MAX_PARTS], head, sbody;
    size_t n;

    if (!mg_param(ct, "protocol", proto, sizeof proto) ||
        strcasecmp(proto, "application/pgp-signature") != 0 ||
        !mg_param(ct, "boundary", boundary, sizeof boundary) ||
        !mg_parts(body, boundary, parts, MG_MAX_PARTS, &n) || n != 2)
        return;
    mg_split(parts[1], &head, &sbody);
    if (!mg_field(head, "Content-Type", v, sizeof v))
        return;
    mg_ctype(v, type, sizeof type);
    if (strcmp(type, "application/pgp-signature") != 0)
        return;
    m->text = mg_text(parts[0], 1, &m->textlen);
    if (m->text == NULL)
        return;
    m->sig = mg_decode(head, sbody, &m->siglen);
    m->signed_data = xmalloc(parts[0].len + 1);
    memcpy(m->signed_data, parts[0].p, parts[0].len);
    m->signed_data[parts[0].len] = '\0';
    m->signed_len = parts[0].len;
    m->kind = MAILGATE_MIME;
}

/* 1 if the line at p (of len octets, CRLF not counted) is marker. */
static int mg_is_line(const char *p, size_t len, const char *marker)
{
    size_t mlen = strlen(marker);

    while (len > mlen && (p[len - 1] == ' ' || p[len - 1] == '\t'))
        len--;
    return len == mlen && memcmp(p, marker, mlen) == 0;
}

/* Exactly one clear-signed block in text, from its BEGIN line to its END
 * line inclusive. */
static void mg_inline(const char *text, size_t len, struct mailgate_msg *m)
{
    const char *begin = NULL, *end = NULL;
    size_t i = 0;
    int nbegin = 0;

    while (i < len) {
        const char *line = text + i;
        const char *nl = memchr(line, '\n', len - i);
        size_t ll = nl != NULL ? (size_t)(nl - line) : len - i;
        size_t tl = ll > 0 && line[ll - 1] == '\r' ? ll - 1 : ll;

        if (mg_is_line(line, tl, mg_begin)) {
            nbegin++;
            begin = line;
        } else if (begin != NULL && end == NULL && mg_is_line(line, tl, mg_end))
            end = nl != NULL ? nl + 1 : line + ll;
        i += ll + 1;
    }
    if (nbegin != 1 || end == NULL)
        return;
    m->signed_len = (size_t)(end - begin);
    m->signed_data = xmalloc(m->signed_len + 1);
    memcpy(m->signed_data, begin, m->signed_len);
    m->signed_data[m->signed_len] = '\0';
    m->kind = MAILGATE_INLINE;
}

/* The envelope hints among the header fields. */
static void mg_envelope(struct mg_span head, struct mailgate_msg *m)
{
    char v[MG_MAX_FIELD], addr[SG_MAX_PATH + 1];
    const char *err;

    if (mg_field(head, "Return-Path", v, sizeof v) &&
        mg_angle_addr(v, m->return_path))
        m->has_return_path = 1;
    if (mg_field(head, "Delivered-To", v, sizeof v) && mg_angle_addr(v, addr) &&
        addr[0] != '\0')
        memcpy(m->delivered_to, addr, strlen(addr) + 1);
    if (mg_field(head, "To", v, sizeof v) &&
        addr_parse_from(v, strlen(v), addr, &err) == 1)
        memcpy(m->to, addr, strlen(addr) + 1);
    /* RFC 3834 2: anything but "no" is automatic and gets no answer. */
    if (mg_field(head, "Auto-Submitted", v, sizeof v)) {
        v[strcspn(v, " \t;(")] = '\0';
        m->auto_submitted = strcasecmp(v, "no") != 0;
    }
}

void mailgate_parse(const char *msg, size_t len, struct mailgate_msg *m)
{
    struct mg_span e = {msg, len}, head, body;
    char ct[MG_MAX_FIELD], type[128];
    size_t tlen = 0;
    char *text;

    memset(m, 0, sizeof *m);
    /* An mbox "From sender date" line, as some MTAs put before a message
     * handed to a pipe: its sender is an envelope hint. */
    if (len >= 5 && memcmp(msg, "From ", 5) == 0) {
        const char *nl = memchr(msg, '\n', len);
        size_t skip = nl != NULL ? (size_t)(nl - msg) + 1 : len;
        size_t n = strcspn(msg + 5, " \r\n");
        if (n <= SG_MAX_PATH && 5 + n <= len) {
            memcpy(m->from_line, msg + 5, n);
            m->from_line[n] = '\0';
            if (strcmp(m->from_line, "MAILER-DAEMON") == 0)
                m->from_line[0] = '\0';
            m->has_from_line = 1;
        }
        e = (struct mg_span){msg + skip, len - skip};
    }
    mg_split(e, &head, &body);
    mg_envelope(head, m);
    if (!mg_field(head, "Content-Type", ct, sizeof ct))
        ct[0] = '\0';
    mg_ctype(ct, type, sizeof type);
    if (strcmp(type, "multipart/signed") == 0) {
        mg_mime(body, ct, m);
        return;
    }
    text = mg_text(e, 0, &tlen);
    if (text != NULL) {
        mg_inline(text, tlen, m);
        free(text);
    }
}

void mailgate_msg_clear(struct mailgate_msg *m)
{
    free(m->signed_data);
    free(m->sig);
    free(m->text);
    memset(m, 0, sizeof *m);
}

int mailgate_phrase_ok(const char *text, size_t len)
{
    static const char phrase[] = RESET_PHRASE;
    size_t i = 0, k = 0;

    while (i < len && isspace((unsigned char)text[i]))
        i++;
    while (len > i && isspace((unsigned char)text[len - 1]))
        len--;
    if (len > i && text[len - 1] == '.')
        len--;
    while (i < len) {
        if (isspace((unsigned char)text[i])) {
            while (i < len && isspace((unsigned char)text[i]))
                i++;
            if (phrase[k] != ' ')
                return 0;
            k++;
            continue;
        }
        if (phrase[k] == '\0' || tolower((unsigned char)text[i]) !=
                                     tolower((unsigned char)phrase[k]))
            return 0;
        i++;
        k++;
    }
    return phrase[k] == '\0';
}

char *mailgate_crlf(const char *in, size_t len, size_t *outlen_r)
{
    char *out = xmalloc(2 * len + 1);
    size_t n = 0;

    for (size_t i = 0; i < len; i++) {
        if (in[i] == '\r' && i + 1 < len && in[i + 1] == '\n') {
            out[n++] = '\r';
            out[n++] = '\n';
            i++;
        } else if (in[i] == '\r' || in[i] == '\n') {
            out[n++] = '\r';
            out[n++] = '\n';
        } else {
            out[n++] = in[i];
        }
    }
    out[n] = '\0';
    *outlen_r = n;
    return out;
}

/* ---- the decision ---------------------------------------------------- */

/* One request as it is being handled, for the log line and the notice. */
struct mg_req {
    struct admin_ctx *ctx;
    char id[16];                     /* "g" + 8 hex digits */
    char sender[SG_MAX_PATH + 1];    /* envelope sender; "" null */
    char recipient[SG_MAX_PATH + 1]; /* the change-password address */
    long long tenant_id;
    char tenant[SG_MAX_DOMAIN + 1];
    const char *kind; /* "inline", "mime", "none" */
    struct pgp_sig sig;
    struct reset_member member; /* the signer, once known */
    int have_member;
};

/* A refusal: its log name and the words for the member. */
struct mg_reason {
    const char *name;
    const char *text;
};

static const struct mg_reason mg_unsigned = {
    "unsigned", "it was not signed with OpenPGP (send the text clear-signed "
                "or as a PGP/MIME signed message)"};
static const struct mg_reason mg_bad = {"bad-signature",
                                        "its signature could not be verified"};
static const struct mg_reason mg_unknown = {
    "unknown-key",
    "it was not signed with the OpenPGP key registered for your account"};
static const struct mg_reason mg_expired = {"key-expired",
                                            "the signing key has expired"};
static const struct mg_reason mg_revoked = {"key-revoked",
                                            "the signing key is revoked"};
static const struct mg_reason mg_text_bad = {
    "wrong-text",
    "the signed text was not \"" RESET_PHRASE "\" (and nothing else)"};
static const struct mg_reason mg_old = {
    "too-old", "its signature is too old; send a new request"};
static const struct mg_reason mg_new = {
    "too-new", "its signature is dated in the future; check your clock"};
static const struct mg_reason mg_replay = {
    "replay", "this request was already carried out once; send a new one"};
static const struct mg_reason mg_rate = {
    "rate-limit", "too many requests in 24 hours; try again later"};
static const struct mg_reason mg_disabled = {"member-disabled", NULL};
static const struct mg_reason mg_no_key = {
    "no-key-registered", "no OpenPGP key is registered for your account"};
static const struct mg_reason mg_failed = {
    "failed", "it could not be carried out; ask your administrator"};

static const char *mg_esc(const char *s, char *out)
{
    return log_escape(s, strlen(s), out, MG_ESC);
}

/* The log line of an outcome. */
static void mg_log(const struct mg_req *r, const char *result,
                   const char *reason, const char *qid)
{
    char e1[MG_ESC], e2[MG_ESC];

    log_info("%s: mailgate from=<%s> to=<%s> tenant=%s kind=%s fpr=%s "
             "member=%s result=%s%s%s%s%s",
             r->id, mg_esc(r->sender, e1), mg_esc(r->recipient, e2),
             r->tenant[0] != '\0' ? r->tenant : "-", r->kind,
             r->sig.fpr[0] != '\0'       ? r->sig.fpr
             : r->sig.sig_fpr[0] != '\0' ? r->sig.sig_fpr
                                         : "-",
             r->have_member ? r->member.address : "-", result,
             reason != NULL ? " reason=" : "", reason != NULL ? reason : "",
             qid != NULL ? " qid=" : "", qid != NULL ? qid : "");
}

/* Refuses the request: logs it and, when the request belongs to a
 * member (signed with their key, or sent from one of their addresses),
 * mails them a notice. Returns the exit status. */
static int mg_refuse(struct mg_req *r, const struct mg_reason *why)
{
    struct reset_member to;
    char qid[QUEUE_ID_LEN + 1], err[512];
    int rc = 0;

    mg_log(r, "refused", why->name, NULL);
    if (why->text == NULL)
        return MAILGATE_EX_OK;
    if (r->have_member)
        to = r->member;
    else if (r->sender[0] == '\0' ||
             (rc = reset_member_by_any_address(r->ctx, r->tenant_id, r->sender,
                                               &to)) <= 0)
        return MAILGATE_EX_OK;
    if (to.disabled)
        return MAILGATE_EX_OK;
    /* Signed or not, a member without a key has nothing to sign with. */
    if (to.fpr[0] == '\0' && why == &mg_unknown)
        why = &mg_no_key;
    err[0] = '\0';
    rc = reset_notice(r->ctx, &to, why->text, qid, err, sizeof err);
    if (rc > 0)
        log_info("%s: notice to=<%s> qid=%s", r->id, to.address, qid);
    else if (rc == 0)
        log_info("%s: notice to=<%s> not sent: rate limit", r->id, to.address);
    else
        log_error("%s: notice to=<%s> not sent: %s", r->id, to.address, err);
    return MAILGATE_EX_OK;
}

static const struct mg_reason *mg_verdict_reason(enum pgp_verdict v)
{
    switch (v) {
    case PGP_SIG_GOOD:
        return NULL;
    case PGP_SIG_NONE:
    case PGP_SIG_MANY:
        return &mg_unsigned;
    case PGP_SIG_UNKNOWN_KEY:
    case PGP_SIG_WRONG_KEY:
        return &mg_unknown;
    case PGP_SIG_KEY_EXPIRED:
        return &mg_expired;
    case PGP_SIG_KEY_REVOKED:
        return &mg_revoked;
    case PGP_SIG_EXPIRED:
    case PGP_SIG_BAD:
        break;
    }
    return &mg_bad;
}

/* Finds the tenant of the change-password address: a tenant_reset
 * address, else the tenant owning its domain. 1, 0 none, -1 error. */
static int mg_tenant(struct mg_req *r)
{
    sqlite3_stmt *st;
    const char *dom;
    int rc;

    if (admin_prepare(r->ctx,
                      "SELECT t.id, t.name FROM tenant t"
                      " JOIN tenant_reset x ON x.tenant_id = t.id"
                      " WHERE x.address = ?1"
                      " UNION ALL SELECT t.id, t.name FROM tenant t"
                      " JOIN domain d ON d.tenant_id = t.id"
                      " WHERE d.name = ?2 LIMIT 1",
                      &st) != 0)
        return -1;
    dom = addr_domain(r->recipient);
    sqlite3_bind_text(st, 1, r->recipient, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, dom != NULL ? dom : "", -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        const unsigned char *name = sqlite3_column_text(st, 1);
        r->tenant_id = sqlite3_column_int64(st, 0);
        snprintf(r->tenant, sizeof r->tenant, "%s",
                 name != NULL ? (const char *)name : "");
    }
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : -1;
}

/* Verifies the signature of what the parser found. 0, or -1 when gpg
 * failed (logged). */
static int mg_verify(struct mg_req *r, struct mailgate_msg *m, char **plain_r,
                     size_t *plainlen_r)
{
    char keyring[4096], err[512];
    int rc;

    *plain_r = NULL;
    *plainlen_r = 0;
    if (m->kind == MAILGATE_NONE) {
        r->sig.verdict = PGP_SIG_NONE;
        return 0;
    }
    if (reset_keyring(r->ctx, r->tenant, keyring, sizeof keyring) != 0) {
        log_error("%s: mailgate: pgp_dir too long", r->id);
        return -1;
    }
    if (m->kind == MAILGATE_INLINE)
        rc = pgp_verify_clear(keyring, m->signed_data, m->signed_len, &r->sig,
                              plain_r, plainlen_r, err, sizeof err);
    else
        rc = pgp_verify_detached(keyring, m->signed_data, m->signed_len, m->sig,
                                 m->siglen, &r->sig, err, sizeof err);
    if (rc != 0)
        log_error("%s: mailgate: %s", r->id, err);
    return rc;
}

/* A good signature: the member with that key, their state, the text,
 * the time, replays and the rate; then the reset. Returns the exit
 * status. */
static int mg_decide(struct mg_req *r, const char *text, size_t textlen)
{
    long long now = (long long)time(NULL), win = r->ctx->cfg->reset_window_s;
    struct reset_sig rs = {.fpr = r->sig.fpr, .time = r->sig.time};
    char qid[QUEUE_ID_LEN + 1], err[1024];
    enum reset_result res;
    long long n;
    int rc;

    rc = reset_member_by_fpr(r->ctx, r->tenant_id, r->sig.fpr, &r->member);
    if (rc < 0)
        return MAILGATE_EX_TEMPFAIL;
    if (rc != 1)
        return mg_refuse(r, rc == 0 ? &mg_unknown : &mg_failed);
    r->have_member = 1;
    pgp_sig_check(&r->sig, r->member.fpr);
    if (r->sig.verdict != PGP_SIG_GOOD)
        return mg_refuse(r, mg_verdict_reason(r->sig.verdict));
    if (r->member.disabled)
        return mg_refuse(r, &mg_disabled);
    if (!mailgate_phrase_ok(text, textlen))
        return mg_refuse(r, &mg_text_bad);
    if (now - r->sig.time > win)
        return mg_refuse(r, &mg_old);
    if (r->sig.time - now > win)
        return mg_refuse(r, &mg_new);
    rc = reset_seen(r->ctx, &rs);
    if (rc != 0)
        return rc < 0 ? MAILGATE_EX_TEMPFAIL : mg_refuse(r, &mg_replay);
    n = reset_count(r->ctx, r->sig.fpr);
    if (n < 0)
        return MAILGATE_EX_TEMPFAIL;
    if (n >= (long long)r->ctx->cfg->reset_rate)
        return mg_refuse(r, &mg_rate);
    res = reset_run(r->ctx, &r->member, &rs, OUTMAIL_AUTO_REPLIED, "mailgate",
                    qid, err, sizeof err);
    switch (res) {
    case RESET_OK:
        mg_log(r, "reset", NULL, qid);
        return MAILGATE_EX_OK;
    case RESET_REPLAY:
        return mg_refuse(r, &mg_replay);
    case RESET_RATE:
        return mg_refuse(r, &mg_rate);
    case RESET_FAIL:
        log_error("%s: mailgate: %s", r->id, err);
        return mg_refuse(r, &mg_failed);
    case RESET_TEMP:
        break;
    }
    log_error("%s: mailgate: %s", r->id, err);
    mg_log(r, "tempfail", "temporary-failure", NULL);
    return MAILGATE_EX_TEMPFAIL;
}

/* Reads stdin up to max octets into a new buffer. 1 read, 0 longer than
 * max (the rest is drained, so that the MTA's write does not fail), -1
 * read error. */
static int mg_read(size_t max, char **buf_r, size_t *len_r)
{
    char *buf = xmalloc(max + 1);
    size_t len = 0;
    ssize_t n;

    while (len <= max) {
        n = read(STDIN_FILENO, buf + len, max + 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            if (n == 0)
                break;
            free(buf);
            return -1;
        }
        len += (size_t)n;
    }
    if (len > max) {
        do {
            n = read(STDIN_FILENO, buf, max + 1);
        } while (n > 0 || (n < 0 && errno == EINTR));
        free(buf);
        return 0;
    }
    buf[len] = '\0';
    *buf_r = buf;
    *len_r = len;
    return 1;
}

/* Options: -f SENDER (as sendmail), --sender SENDER, --recipient ADDR. 0
 * or -1 (usage printed). */
static int mg_args(int argc, char **argv, const char **sender_r,
                   const char **rcpt_r)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], **dst = NULL, *v = NULL;

        if (strcmp(a, "-f") == 0 || strcmp(a, "--sender") == 0)
            dst = sender_r;
        else if (strcmp(a, "--recipient") == 0)
            dst = rcpt_r;
        else if (strncmp(a, "-f", 2) == 0)
            dst = sender_r, v = a + 2;
        else if (strncmp(a, "--sender=", 9) == 0)
            dst = sender_r, v = a + 9;
        else if (strncmp(a, "--recipient=", 12) == 0)
            dst = rcpt_r, v = a + 12;
        if (dst == NULL || (v == NULL && i + 1 >= argc)) {
            admin_usage("mailgate [-f SENDER] [--recipient ADDR] < message");
            return -1;
        }
        *dst = v != NULL ? v : argv[++i];
    }
    return 0;
}

/* The envelope sender: -f, else Return-Path:, else the mbox From line.
 * 1 known (maybe null, ""), 0 unknown. */
static int mg_sender(const char *opt, const struct mailgate_msg *m, char *out)
{
    if (opt != NULL)
        return mg_angle_addr(opt, out) ? 1 : (out[0] = '\0', 0);
    if (m->has_return_path) {
        memcpy(out, m->return_path, strlen(m->return_path) + 1);
        return 1;
    }
    if (m->has_from_line) {
        memcpy(out, m->from_line, strlen(m->from_line) + 1);
        return 1;
    }
    out[0] = '\0';
    return 0;
}

/* Handles the parsed message. Returns the exit status. */
static int mg_handle(struct mg_req *r, struct mailgate_msg *m,
                     const char *rcpt_opt)
{
    char err[512], *plain = NULL;
    const struct mg_reason *why;
    size_t plainlen = 0;
    int rc;

    r->kind = m->kind == MAILGATE_INLINE ? "inline"
              : m->kind == MAILGATE_MIME ? "mime"
                                         : "none";
    snprintf(r->recipient, sizeof r->recipient, "%s",
             rcpt_opt != NULL     ? rcpt_opt
             : m->delivered_to[0] ? m->delivered_to
                                  : m->to);
    if (m->auto_submitted) {
        mg_log(r, "dropped", "auto-submitted", NULL);
        return MAILGATE_EX_OK;
    }
    if (db_open(r->ctx->cfg->database, 0, &r->ctx->db, err, sizeof err) != 0 ||
        db_migrate(r->ctx->db, err, sizeof err) != 0) {
        log_error("%s: mailgate: %s", r->id, err);
        return MAILGATE_EX_TEMPFAIL;
    }
    rc = mg_tenant(r);
    if (rc <= 0) {
        if (rc < 0)
            return MAILGATE_EX_TEMPFAIL;
        mg_log(r, "refused", "unknown-recipient", NULL);
        return MAILGATE_EX_OK;
    }
    if (pgp_init(err, sizeof err) != 0) {
        log_error("%s: mailgate: %s", r->id, err);
        return MAILGATE_EX_TEMPFAIL;
    }
    if (mg_verify(r, m, &plain, &plainlen) != 0)
        return MAILGATE_EX_TEMPFAIL;
    why = mg_verdict_reason(r->sig.verdict);
    if (why != NULL)
        rc = mg_refuse(r, why);
    else if (m->kind == MAILGATE_MIME)
        rc = mg_decide(r, m->text, m->textlen);
    else
        rc = mg_decide(r, plain, plainlen);
    free(plain);
    return rc;
}

int cmd_mailgate(struct admin_ctx *ctx, int argc, char **argv)
{
    const char *sender_opt = NULL, *rcpt_opt = NULL;
    struct mailgate_msg m;
    struct mg_req r;
    uint32_t rnd = 0;
    char *raw = NULL, *msg;
    size_t rawlen = 0, len;
    int rc;

    if (mg_args(argc, argv, &sender_opt, &rcpt_opt) != 0)
        return MAILGATE_EX_USAGE;
    log_init("subgate", ctx->cfg->log_syslog);
    memset(&r, 0, sizeof r);
    r.ctx = ctx;
    r.kind = "none";
    if (getrandom(&rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd)
        rnd = (uint32_t)getpid() ^ (uint32_t)time(NULL);
    snprintf(r.id, sizeof r.id, "g%08x", (unsigned)rnd);
    rc = mg_read(SG_MAX_MAILGATE_MESSAGE, &raw, &rawlen);
    if (rc < 0) {
        log_error("%s: mailgate: reading the message: %s", r.id,
                  strerror(errno));
        return MAILGATE_EX_TEMPFAIL;
    }
    if (rc == 0) {
        mg_log(&r, "dropped", "too-large", NULL);
        return MAILGATE_EX_OK;
    }
    msg = mailgate_crlf(raw, rawlen, &len);
    free(raw);
    mailgate_parse(msg, len, &m);
    free(msg);
    if (!mg_sender(sender_opt, &m, r.sender) || r.sender[0] == '\0') {
        /* Bounces and mail without a return address get no answer and
         * change nothing (RFC 3834 2, RFC 5321 4.5.5). */
        mg_log(&r, "dropped", "null-sender", NULL);
        rc = MAILGATE_EX_OK;
    } else {
        rc = mg_handle(&r, &m, rcpt_opt);
    }
    mailgate_msg_clear(&m);
    return rc;
}
