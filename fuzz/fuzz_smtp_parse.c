/* Fuzzes the SMTP command reader (server/smtp_parse.c). The first octet
 * picks the line bound and raw (AUTH response) mode, the second how the
 * rest is cut into reads. Checks: every call makes progress, a returned
 * line stays within the bound and holds no CR, LF or NUL, the argument
 * lies inside the line, and pending octets never exceed the bound. */
#include <string.h>

#include "../common/limits.h"
#include "../server/smtp_parse.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const size_t bounds[] = {SG_MAX_PREAUTH_LINE, SG_MAX_CMD_LINE,
                                    SG_MAX_AUTH_LINE, 8};
    struct smtp_parse *p;
    size_t off = 2, max, chunk;
    int raw;

    if (size < 2)
        return 0;
    max = bounds[data[0] & 3];
    raw = (data[0] & 4) != 0;
    chunk = data[1] == 0 ? size : (size_t)data[1] % 37 + 1;
    p = smtp_parse_new(max);
    smtp_parse_set_raw(p, raw);
    while (off < size) {
        size_t len = size - off < chunk ? size - off : chunk, used = 0;
        struct smtp_cmd *cmd = NULL;
        const char *err = NULL;
        int rc = smtp_parse_feed(p, (const char *)data + off, len, &used, &cmd,
                                 &err);

        FUZZ_CHECK(used <= len);
        FUZZ_CHECK(rc == 1 || rc == 0 || rc == -1);
        FUZZ_CHECK(used > 0);
        FUZZ_CHECK(rc != 0 || used == len);
        FUZZ_CHECK(rc != -1 || (err != NULL && strncmp(err, "50", 2) == 0));
        if (rc == 1) {
            FUZZ_CHECK(cmd != NULL);
            /* The bound counts the line end: CRLF, or a bare LF. */
            FUZZ_CHECK(cmd->line_len + 1 <= max);
            FUZZ_CHECK(strlen(cmd->line) == cmd->line_len);
            FUZZ_CHECK(memchr(cmd->line, '\r', cmd->line_len) == NULL);
            FUZZ_CHECK(memchr(cmd->line, '\n', cmd->line_len) == NULL);
            FUZZ_CHECK(cmd->arg >= cmd->line &&
                       cmd->arg <= cmd->line + cmd->line_len);
            /* An AUTH command switches to raw mode, as the session does. */
            if (cmd->verb == SMTP_VERB_AUTH)
                smtp_parse_set_raw(p, 1);
            else if (raw && cmd->line_len == 1 && cmd->line[0] == '*')
                smtp_parse_set_raw(p, 0);
        }
        FUZZ_CHECK(smtp_parse_pending(p) <= size);
        off += used;
    }
    smtp_parse_free(&p);
    FUZZ_CHECK(p == NULL);
    return 0;
}
