/* policy_ident: the header fields besides From: that name who wrote or
 * sent a message (Sender:, Resent-From:, Resent-Sender:, RFC 5322 3.6.2
 * and 3.6.6), and the text around an address — display names, comments,
 * quoted strings, RFC 2047 encoded words — that a mail reader shows and
 * that could show another address than the one checked. Part of the
 * policy module; see policy.h. */
#include "policy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../common/addr.h"
#include "../common/xalloc.h"
#include "smtp_auth.h"

/* RFC 2047 2: an encoded word is at most 75 octets; its charset token is
 * shorter still. Longer "words" are taken as they are. */
#define POLICY_MAX_CHARSET 64

static int policy_is_atext(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') ||
           (c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

static int policy_is_ldh(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || c == '-';
}

static int policy_hex(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* If v[i..len) starts an encoded word "=?charset?X?text?=" (RFC 2047 2),
 * decodes its text onto out at *o (unless out is NULL) and returns the
 * octets it spans, else 0. Decoding is lenient, as readers are: bad octets
 * are skipped. */
static size_t policy_encoded_word(const char *v, size_t len, size_t i,
                                  char *out, size_t *o)
{
    size_t p = i + 2, cs, text, end;
    unsigned long acc = 0;
    unsigned bits = 0;
    char enc;

    if (i + 2 >= len || v[i] != '=' || v[i + 1] != '?')
        return 0;
    for (cs = p; p < len && v[p] != '?' && p - cs <= POLICY_MAX_CHARSET; p++) {
        if ((unsigned char)v[p] <= ' ')
            return 0;
    }
    if (p == cs || p + 2 >= len || v[p] != '?' || v[p + 2] != '?')
        return 0;
    enc = v[p + 1];
    if (enc != 'B' && enc != 'b' && enc != 'Q' && enc != 'q')
        return 0;
    text = p + 3;
    for (end = text; end + 1 < len && !(v[end] == '?' && v[end + 1] == '=');
         end++) {
        if ((unsigned char)v[end] <= ' ')
            return 0;
    }
    if (end + 1 >= len)
        return 0;
    for (p = text; out != NULL && p < end; p++) {
        unsigned char c = (unsigned char)v[p];
        int h, l;
        if (enc == 'Q' || enc == 'q') {
            if (c == '_') {
                out[(*o)++] = ' ';
            } else if (c == '=' && p + 2 < end &&
                       (h = policy_hex((unsigned char)v[p + 1])) >= 0 &&
                       (l = policy_hex((unsigned char)v[p + 2])) >= 0) {
                out[(*o)++] = (char)(h * 16 + l);
                p += 2;
            } else {
                out[(*o)++] = (char)c;
            }
        } else if ((h = smtp_auth_b64_digit(c)) >= 0) {
            acc = (acc << 6) | (unsigned long)h;
            bits += 6;
            if (bits >= 8) {
                bits -= 8;
                out[(*o)++] = (char)((acc >> bits) & 0xff);
            }
        }
    }
    return end + 2 - i;
}

/* The reader's view of a field value into out (room for len + 1): folding
 * removed, RFC 2047 encoded words decoded and adjacent ones joined (RFC
 * 2047 6.2), the backslashes of quoted pairs and the double quotes
 * dropped, NUL octets (UTF-16 text) dropped, and the full-width '@' forms
 * U+FF20 and U+FE6B turned into '@'. Returns its length. Decoding never
 * makes text longer than its encoding. */
static size_t policy_view(const char *v, size_t len, char *out)
{
    size_t i = 0, o = 0, n, w;

    while (i < len) {
        unsigned char c = (unsigned char)v[i];
        n = policy_encoded_word(v, len, i, out, &o);
        if (n > 0) {
            i += n;
            /* White space between two encoded words is not shown. */
            for (w = i; w < len && strchr(" \t\r\n", v[w]) != NULL; w++)
                ;
            if (w > i && policy_encoded_word(v, len, w, NULL, NULL) > 0)
                i = w;
            continue;
        }
        if (c == '\r' || c == '\n' || c == '"') {
            i++;
        } else if (c == '\\' && i + 1 < len) {
            out[o++] = v[i + 1];
            i += 2;
        } else {
            out[o++] = (char)c;
            i++;
        }
    }
    /* Second pass, in place: NULs out, full-width '@' in. */
    for (i = 0, n = 0; i < o; i++) {
        unsigned char c = (unsigned char)out[i];
        if (c == '\0')
            continue;
        if (c == 0xef && i + 2 < o &&
            (((unsigned char)out[i + 1] == 0xbc &&
              (unsigned char)out[i + 2] == 0xa0) ||
             ((unsigned char)out[i + 1] == 0xb9 &&
              (unsigned char)out[i + 2] == 0xab))) {
            out[n++] = '@';
            i += 2;
            continue;
        }
        out[n++] = (char)c;
    }
    out[n] = '\0';
    return n;
}

/* The address-like text around the '@' at view[at]: a run of atext and
 * dots before it and a dotted domain after it. 1 with its bounds, 0 if the
 * '@' is not part of one. */
static int policy_addr_around(const char *view, size_t len, size_t at,
                              size_t *start_r, size_t *end_r)
{
    size_t s = at, e = at + 1, dots = 0, i;

    while (s > 0 &&
           (policy_is_atext((unsigned char)view[s - 1]) || view[s - 1] == '.'))
        s--;
    while (s < at && view[s] == '.')
        s++;
    while (e < len && (policy_is_ldh((unsigned char)view[e]) || view[e] == '.'))
        e++;
    while (e > at + 1 && view[e - 1] == '.')
        e--;
    if (s == at || e == at + 1 || !policy_is_ldh((unsigned char)view[at + 1]))
        return 0;
    for (i = at + 1; i < e; i++)
        dots += view[i] == '.';
    if (dots == 0)
        return 0;
    *start_r = s;
    *end_r = e;
    return 1;
}

int policy_text_foreign(const struct db_member *m, const char *value,
                        size_t len, char *found, size_t foundlen)
{
    char *view = xmalloc(len + 1);
    char cand[SG_MAX_PATH + 1];
    size_t n = policy_view(value, len, view), i, s, e;
    int foreign = 0;

    for (i = 0; i < n && !foreign; i++) {
        if (view[i] != '@' || !policy_addr_around(view, n, i, &s, &e))
            continue;
        if (e - s > SG_MAX_PATH) {
            foreign = 1;
            e = s + SG_MAX_PATH;
        }
        memcpy(cand, view + s, e - s);
        cand[e - s] = '\0';
        if (foreign || !policy_owns(m, cand)) {
            foreign = 1;
            snprintf(found, foundlen, "%s", cand);
        }
    }
    free(view);
    return foreign;
}

/* 1 if h names a field whose address must be the member's. */
static const char *policy_ident_name(const char *msg,
                                     const struct smtp_header *h)
{
    static const char *const names[] = {"Sender", "Resent-From",
                                        "Resent-Sender"};
    size_t i;

    for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (h->name_len == strlen(names[i]) &&
            strncasecmp(msg + h->off, names[i], h->name_len) == 0)
            return names[i];
    }
    return NULL;
}

const char *policy_check_ident_field(const struct db_member *m, const char *msg,
                                     size_t msglen, const struct smtp_header *h,
                                     char *found, size_t foundlen, char *reply,
                                     size_t replylen)
{
    char addr[SG_MAX_PATH + 1];
    const char *name, *value, *err;
    size_t vlen;

    found[0] = '\0';
    if (h->off + h->len > msglen || h->name_len >= h->len)
        return NULL; /* not a field of this message: cannot happen */
    name = policy_ident_name(msg, h);
    if (name == NULL)
        return NULL;
    value = msg + h->off + h->name_len + 1;
    vlen = h->len - h->name_len - 1;
    if (addr_parse_from(value, vlen, addr, &err) != 1) {
        snprintf(reply, replylen,
                 "550 5.7.1 %s: header must hold one address of user <%s>",
                 name, m->address);
        return reply;
    }
    if (!policy_owns(m, addr))
        snprintf(found, foundlen, "%s", addr);
    else if (!policy_text_foreign(m, value, vlen, found, foundlen))
        return NULL;
    snprintf(reply, replylen,
             "550 5.7.1 %s: address <%s> not owned by user <%s>", name, found,
             m->address);
    return reply;
}
