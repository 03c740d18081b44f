/* Fuzzes the DATA reader (server/smtp_data.c) and the header policy that
 * reads its result (server/policy.c, policy_ident.c). The first octet
 * picks how the input is cut into reads. Checks: progress, the end of
 * data never comes early, an accepted message has only CRLF line ends, no
 * NUL, no line over 998 octets, header fields that lie inside the header
 * section in order, and the policy checks and field removal keep all of
 * that. */
#include <string.h>

#include "../common/limits.h"
#include "../server/policy.h"
#include "../server/smtp_data.h"
#include "fuzz.h"

static struct db_member fuzz_member = {
    .address = "alice@example.org",
    .naddrs = 2,
    .addrs = {"alice@example.org", "alice.smith@example.com"},
};

/* The invariants of an accepted message. */
static void check_message(struct smtp_data *d)
{
    size_t len, nh, i, body, line = 0;
    const char *msg = smtp_data_message(d, &len);
    const struct smtp_header *h = smtp_data_headers(d, &nh);

    body = smtp_data_body_offset(d);
    FUZZ_CHECK(body <= len);
    FUZZ_CHECK(memchr(msg, '\0', len) == NULL);
    for (i = 0; i < len; i++) {
        if (msg[i] == '\r') {
            FUZZ_CHECK(i + 1 < len && msg[i + 1] == '\n');
        } else if (msg[i] == '\n') {
            FUZZ_CHECK(i > 0 && msg[i - 1] == '\r');
            line = 0;
            continue;
        }
        FUZZ_CHECK(++line <= SG_MAX_TEXT_LINE - 1);
    }
    FUZZ_CHECK(nh <= SG_MAX_HEADER_COUNT);
    for (i = 0; i < nh; i++) {
        FUZZ_CHECK(h[i].name_len > 0 && h[i].name_len < h[i].len);
        FUZZ_CHECK(h[i].off + h[i].len + 2 <= body);
        FUZZ_CHECK(msg[h[i].off + h[i].name_len] == ':');
        FUZZ_CHECK(i == 0 || h[i - 1].off + h[i - 1].len < h[i].off);
    }
}

static void check_policy(struct smtp_data *d)
{
    char reply[POLICY_REPLY_MAX], found[SG_MAX_PATH + 1];
    struct policy_from pf;
    size_t len, nh, i;
    const char *msg = smtp_data_message(d, &len);
    const struct smtp_header *h = smtp_data_headers(d, &nh);
    const char *r;

    for (i = nh; i-- > 0;) {
        r = policy_check_ident_field(&fuzz_member, msg, len, &h[i], found,
                                     sizeof(found), reply, sizeof(reply));
        if (r != NULL) {
            FUZZ_CHECK(strncmp(r, "550 5.7.1 ", 10) == 0);
            FUZZ_CHECK(smtp_data_remove_header(d, i) == 0);
            msg = smtp_data_message(d, &len);
            h = smtp_data_headers(d, &nh);
        }
    }
    check_message(d);
    r = policy_check_from(&fuzz_member, msg, len, h, nh, &pf, reply,
                          sizeof(reply));
    if (r == NULL) {
        char domain[SG_MAX_DOMAIN + 1];
        FUZZ_CHECK(policy_owns(&fuzz_member, pf.use));
        FUZZ_CHECK(pf.hdr_index < nh);
        if (policy_sign_domain(&fuzz_member, pf.use, domain, sizeof(domain)) ==
            0)
            FUZZ_CHECK(strcmp(domain, "example.org") == 0 ||
                       strcmp(domain, "example.com") == 0);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct smtp_data *d;
    size_t off = 1, chunk;
    int end = 0;

    if (size < 1)
        return 0;
    chunk = data[0] == 0 ? size : (size_t)data[0] % 61 + 1;
    d = smtp_data_new(SG_MIN_MESSAGE_SIZE);
    while (off < size && !end) {
        size_t len = size - off < chunk ? size - off : chunk, used = 0;

        end = smtp_data_feed(d, (const char *)data + off, len, &used);
        FUZZ_CHECK(used <= len);
        FUZZ_CHECK(end || used == len);
        off += used;
    }
    if (end) {
        /* The end of data is "<CRLF>.<CRLF>" and nothing else. */
        FUZZ_CHECK(off >= 4 && data[off - 1] == '\n' && data[off - 2] == '\r' &&
                   data[off - 3] == '.' && (off == 4 || data[off - 4] == '\n'));
        if (smtp_data_error(d) == SMTP_DATA_OK) {
            check_message(d);
            check_policy(d);
        } else {
            FUZZ_CHECK(smtp_data_error_reply(smtp_data_error(d)) != NULL);
        }
    }
    smtp_data_free(&d);
    return 0;
}
