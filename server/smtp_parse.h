/* smtp_parse: incremental SMTP command reader (RFC 5321 4.1, 2.3.8).
 * Input may arrive split anywhere. The bound in force is the max_line
 * given to _new(), which the session lowers (before AUTH) or raises (AUTH
 * responses) with _set_max(); the line buffer has the size of that bound,
 * at most SG_MAX_AUTH_LINE (the longest line the session ever accepts), and
 * input never makes it grow. Loop thread only. */
#ifndef SG_SMTP_PARSE_H
#define SG_SMTP_PARSE_H

#include <stddef.h>

enum smtp_verb {
    SMTP_VERB_UNKNOWN = 0,
    SMTP_VERB_HELO,
    SMTP_VERB_EHLO,
    SMTP_VERB_MAIL,
    SMTP_VERB_RCPT,
    SMTP_VERB_DATA,
    SMTP_VERB_RSET,
    SMTP_VERB_NOOP,
    SMTP_VERB_QUIT,
    SMTP_VERB_VRFY,
    SMTP_VERB_HELP,
    SMTP_VERB_STARTTLS,
    SMTP_VERB_AUTH,
    SMTP_VERB_BDAT,
    SMTP_VERB_EXPN,
};

struct smtp_cmd {
    enum smtp_verb verb;
    const char *verb_text; /* the verb as sent, NUL-terminated */
    /* The argument: for MAIL/RCPT the text after "FROM:"/"TO:" (leading
     * spaces skipped; a missing "FROM:" is a syntax error); for others the
     * text after the verb and one space. NUL-terminated, "" if none. */
    const char *arg;
    const char *line; /* the whole line without CRLF (for AUTH data) */
    size_t line_len;
};

struct smtp_parse;

struct smtp_parse *smtp_parse_new(size_t max_line);
void smtp_parse_free(struct smtp_parse **pp);
/* Changes the line bound for the next line (not the one in progress). */
void smtp_parse_set_max(struct smtp_parse *p, size_t max_line);
/* Raw mode: lines are returned as-is with verb SMTP_VERB_UNKNOWN and arg =
 * line (AUTH responses). */
void smtp_parse_set_raw(struct smtp_parse *p, int raw);
/* Consumes bytes, count in *used_r. 1: *cmd_r holds a command (valid until
 * the next call); 0: need more; -1: bound or syntax error, reply text in
 * *err_r (e.g. "500 5.5.2 Line too long"); after a too-long line the
 * parser skips to the next LF by itself and may be fed again. A bare LF
 * ends a line too (RFC 5321 2.3.8 asks for CRLF); a NUL or a CR that is not
 * right before the LF is an error ("500 5.5.2 Bad character in command"). */
int smtp_parse_feed(struct smtp_parse *p, const char *buf, size_t len,
                    size_t *used_r, struct smtp_cmd **cmd_r,
                    const char **err_r);
/* Bytes buffered of an unfinished line (for STARTTLS: must be 0). */
size_t smtp_parse_pending(const struct smtp_parse *p);

#endif
