/* admin: what the commands of the `subgate` tool share: the context
 * (config and database), the one-line error convention, option parsing,
 * database helpers and name checks. Single-threaded.
 *
 * Every command handler returns the process exit status: ADMIN_OK,
 * ADMIN_FAIL after printing "subgate: message" on stderr, or ADMIN_USAGE
 * after printing "subgate: usage: ..." on stderr. */
#ifndef SG_ADMIN_H
#define SG_ADMIN_H

#include <sqlite3.h>
#include <stddef.h>
#include <time.h>

#include "../common/cfg.h"

#define ADMIN_OK 0
#define ADMIN_FAIL 1
#define ADMIN_USAGE 2

/* Longest password accepted on stdin: libxcrypt hashes at most 511
 * octets (CRYPT_MAX_PASSPHRASE_SIZE, 512 with the NUL). */
#define ADMIN_MAX_PASSWORD 511
/* Buffer for a password line: the limit, a CR and the NUL. */
#define ADMIN_PASSWORD_BUF (ADMIN_MAX_PASSWORD + 2)
/* Length of a generated password. */
#define ADMIN_RANDOM_PASSWORD_LEN 20

struct admin_ctx {
    const char *cfg_path; /* borrowed: -c or SG_DEFAULT_CONFIG */
    struct cfg *cfg;      /* owned */
    sqlite3 *db;          /* owned; NULL for commands that open none */
};

/* A command: argv[0] is its own name ("tenant", "add", ...). */
typedef int (*admin_cmd_fn)(struct admin_ctx *ctx, int argc, char **argv);

struct admin_cmd {
    const char *name;
    admin_cmd_fn fn;
};

/* Runs the entry of table named argv[0] with argv shifted by one (so the
 * handler's argv[0] is the matched name). what names the group in the
 * usage message ("tenant"). Returns the handler's status. */
int admin_dispatch(struct admin_ctx *ctx, const struct admin_cmd *table,
                   size_t n, const char *what, int argc, char **argv);

/* Prints "subgate: MESSAGE" on stderr; returns ADMIN_FAIL. */
int admin_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Prints "subgate: usage: subgate USAGE" on stderr; returns ADMIN_USAGE. */
int admin_usage(const char *usage);
/* Prints "subgate: MESSAGE" on stderr; returns ADMIN_USAGE (a bad option
 * value or argument shape, as opposed to a failed operation). */
int admin_badarg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* admin_fail with ": " and the database's error message appended. */
int admin_db_fail(struct admin_ctx *ctx, const char *what);

/* One long option of a command. has_arg: 1 "--name VALUE" or
 * "--name=VALUE", 0 a flag. After admin_args: set, and value (borrowed
 * from argv) when has_arg. */
struct admin_opt {
    const char *name; /* without the leading "--" */
    int has_arg;
    int set;
    const char *value;
};

/* Splits argv[1..] into options and positional arguments (in order, into
 * pos). "--" ends the options. Fails with a usage message (returns
 * ADMIN_USAGE) on an unknown option, a missing value, a repeated option or
 * a positional count outside [min, max]; else ADMIN_OK with *npos_r. */
int admin_args(int argc, char **argv, struct admin_opt *opts, size_t nopts,
               const char **pos, size_t min, size_t max, size_t *npos_r,
               const char *usage);

/* Prepares sql; on error prints it and returns -1. */
int admin_prepare(struct admin_ctx *ctx, const char *sql, sqlite3_stmt **st_r);
/* Runs sql without rows (BEGIN, COMMIT, ...). ADMIN_OK or ADMIN_FAIL. */
int admin_exec(struct admin_ctx *ctx, const char *sql);
/* BEGIN IMMEDIATE / COMMIT / ROLLBACK (rollback never fails loudly). */
int admin_begin(struct admin_ctx *ctx);
int admin_commit(struct admin_ctx *ctx);
void admin_rollback(struct admin_ctx *ctx);
/* Steps a statement without result rows: ADMIN_OK or ADMIN_FAIL (printed,
 * with what as context). Finalizes st. */
int admin_step_done(struct admin_ctx *ctx, sqlite3_stmt *st, const char *what);
/* Runs a query with one optional text parameter (bound to ?1) that yields
 * one integer: the value, or -1 after printing an error. */
long long admin_query_int(struct admin_ctx *ctx, const char *sql,
                          const char *param);

/* Checks a domain name: LDH labels of 1..63 octets, 253 in all, no
 * leading or trailing hyphen. Lower-cases it into out (SG_MAX_DOMAIN + 1).
 * 1 valid, 0 not. */
int admin_domain_norm(const char *in, char *out);
/* Checks an address with addr_is_valid and copies it into out
 * (SG_MAX_PATH + 1) with its domain lower-cased; *domain_r points to the
 * domain inside out. 1 valid, 0 not. */
int admin_addr_norm(const char *in, char *out, const char **domain_r);
/* 1 if s is a DNS label usable as a DKIM selector: 1..63 of [a-z0-9-],
 * not starting or ending with '-'. */
int admin_label_valid(const char *s);

/* The id of the tenant named name, 0 if none, -1 on error (printed). */
long long admin_tenant_id(struct admin_ctx *ctx, const char *name);
/* The id of the tenant owning domain, 0 if none, -1 on error. */
long long admin_domain_tenant(struct admin_ctx *ctx, const char *domain);

/* Finds the member whose primary address is address: 1 with *id_r and
 * *tenant_id_r (either may be NULL), 0 none, -1 on error (printed). */
int admin_member_find(struct admin_ctx *ctx, const char *address,
                      long long *id_r, long long *tenant_id_r);
/* The id of the member whose primary address is address: ADMIN_OK with
 * *id_r, or ADMIN_FAIL (printed, also when there is no such member). */
int admin_member_id(struct admin_ctx *ctx, const char *address,
                    long long *id_r);

/* Prints "label: a b c" from the first column of sql run with ?1 = id;
 * what names the step in a database error. ADMIN_OK or ADMIN_FAIL. */
int admin_print_names(struct admin_ctx *ctx, const char *label, const char *sql,
                      long long id, const char *what);

/* A "del ADDRESS KEY" command on rows a member owns: sql deletes with ?1
 * the member id and ?2 the key; what names the step in a database error,
 * noun the row in "ADDRESS has no NOUN KEY". */
struct admin_row_del {
    const char *usage;
    const char *sql;
    const char *what;
    const char *noun;
};
int admin_member_row_del(struct admin_ctx *ctx, int argc, char **argv,
                         const struct admin_row_del *del);
/* 1 if address is some member's primary address or alias, 0 if free, -1
 * on error (printed). */
int admin_addr_in_use(struct admin_ctx *ctx, const char *address);

/* Formats a Unix time as ISO 8601 UTC ("2026-01-31T12:00:00Z") into out
 * (at least 21 octets); "-" for 0 (never). Returns out. */
char *admin_iso_time(long long t, char *out, size_t outlen);

/* Reads one line from stdin as a password into out (outlen is
 * ADMIN_PASSWORD_BUF): CR/LF stripped, refused when empty, longer than
 * ADMIN_MAX_PASSWORD or holding a NUL. ADMIN_OK or ADMIN_FAIL (printed).
 * The caller wipes out. */
int admin_read_password(char *out, size_t outlen);

/* mkdir with mode unless the directory exists; parents are created with
 * 0755. ADMIN_OK or ADMIN_FAIL (printed). */
int admin_mkdir(const char *path, unsigned mode);

/* Command groups, one file each. */
int cmd_init(struct admin_ctx *ctx, int argc, char **argv);
int cmd_status(struct admin_ctx *ctx, int argc, char **argv);
/* cmd_queue.c: `queue list|show|flush|delete|hold|release`. */
int cmd_queue(struct admin_ctx *ctx, int argc, char **argv);
int cmd_tenant(struct admin_ctx *ctx, int argc, char **argv);
/* cmd_tenant_ldap.c: `tenant ldap`, and the "auth:" lines of `tenant show`
 * for tenant_id (ADMIN_OK or ADMIN_FAIL, printed). */
int cmd_tenant_ldap(struct admin_ctx *ctx, int argc, char **argv);
int tenant_ldap_show(struct admin_ctx *ctx, long long tenant_id);
int cmd_domain(struct admin_ctx *ctx, int argc, char **argv);
int cmd_member(struct admin_ctx *ctx, int argc, char **argv);
int cmd_member_alias(struct admin_ctx *ctx, int argc, char **argv);
/* Stronger authentication: cmd_token.c and cmd_cert.c. */
int cmd_member_token(struct admin_ctx *ctx, int argc, char **argv);
int cmd_member_cert(struct admin_ctx *ctx, int argc, char **argv);
int cmd_tenant_require_tokens(struct admin_ctx *ctx, int argc, char **argv);
int cmd_key(struct admin_ctx *ctx, int argc, char **argv);
int cmd_dns(struct admin_ctx *ctx, int argc, char **argv);
/* Password reset: cmd_reset.c and mailgate.c. */
int cmd_member_pgpkey(struct admin_ctx *ctx, int argc, char **argv);
int cmd_member_reset(struct admin_ctx *ctx, int argc, char **argv);
int cmd_tenant_reset(struct admin_ctx *ctx, int argc, char **argv);
/* cmd_tenant_notify.c: `tenant notify`, and the "admin_address:" line of
 * `tenant show` for tenant_id (ADMIN_OK or ADMIN_FAIL, printed). */
int cmd_tenant_notify(struct admin_ctx *ctx, int argc, char **argv);
int tenant_notify_show(struct admin_ctx *ctx, long long tenant_id);
int cmd_mailgate(struct admin_ctx *ctx, int argc, char **argv);

#endif
