/* admin: helpers shared by the commands of `subgate`. See admin.h. */
#include "admin.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../common/addr.h"
#include "../common/limits.h"

/* Prints "subgate: MESSAGE" as one line, whatever the message holds. */
__attribute__((format(printf, 1, 0))) static void admin_vprint(const char *fmt,
                                                               va_list ap)
{
    char msg[1024];

    vsnprintf(msg, sizeof msg, fmt, ap);
    for (char *p = msg; *p != '\0'; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    fprintf(stderr, "subgate: %s\n", msg);
}

int admin_fail(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    admin_vprint(fmt, ap);
    va_end(ap);
    return ADMIN_FAIL;
}

int admin_badarg(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    admin_vprint(fmt, ap);
    va_end(ap);
    return ADMIN_USAGE;
}

int admin_usage(const char *usage)
{
    fprintf(stderr, "subgate: usage: subgate %s\n", usage);
    return ADMIN_USAGE;
}

int admin_db_fail(struct admin_ctx *ctx, const char *what)
{
    return admin_fail("%s: %s", what, sqlite3_errmsg(ctx->db));
}

int admin_dispatch(struct admin_ctx *ctx, const struct admin_cmd *table,
                   size_t n, const char *what, int argc, char **argv)
{
    char usage[256];
    size_t i, len;

    if (argc >= 2)
        for (i = 0; i < n; i++)
            if (strcmp(argv[1], table[i].name) == 0)
                return table[i].fn(ctx, argc - 1, argv + 1);
    len = (size_t)snprintf(usage, sizeof usage, "%s ", what);
    for (i = 0; i < n && len < sizeof usage; i++)
        len += (size_t)snprintf(usage + len, sizeof usage - len, "%s%s",
                                i > 0 ? "|" : "", table[i].name);
    if (len < sizeof usage)
        snprintf(usage + len, sizeof usage - len, " ...");
    return admin_usage(usage);
}

/* Finds the option named by arg ("--name" or "--name=value"). */
static struct admin_opt *admin_opt_find(struct admin_opt *opts, size_t n,
                                        const char *arg, const char **val_r)
{
    const char *name = arg + 2;
    const char *eq = strchr(name, '=');
    size_t len = eq != NULL ? (size_t)(eq - name) : strlen(name);

    *val_r = eq != NULL ? eq + 1 : NULL;
    for (size_t i = 0; i < n; i++)
        if (strlen(opts[i].name) == len &&
            strncmp(opts[i].name, name, len) == 0)
            return &opts[i];
    return NULL;
}

/* Handles one option argument at argv[*i]. ADMIN_OK or ADMIN_USAGE. */
static int admin_arg_opt(int argc, char **argv, int *i, struct admin_opt *opts,
                         size_t nopts, const char *usage)
{
    const char *arg = argv[*i], *val;
    struct admin_opt *o = admin_opt_find(opts, nopts, arg, &val);

    if (o == NULL) {
        fprintf(stderr, "subgate: unknown option %s; usage: subgate %s\n", arg,
                usage);
        return ADMIN_USAGE;
    }
    if (o->set) {
        fprintf(stderr, "subgate: option --%s given twice\n", o->name);
        return ADMIN_USAGE;
    }
    if (o->has_arg && val == NULL) {
        if (*i + 1 >= argc) {
            fprintf(stderr, "subgate: option --%s needs a value\n", o->name);
            return ADMIN_USAGE;
        }
        val = argv[++*i];
    } else if (!o->has_arg && val != NULL) {
        fprintf(stderr, "subgate: option --%s takes no value\n", o->name);
        return ADMIN_USAGE;
    }
    o->set = 1;
    o->value = val;
    return ADMIN_OK;
}

int admin_args(int argc, char **argv, struct admin_opt *opts, size_t nopts,
               const char **pos, size_t min, size_t max, size_t *npos_r,
               const char *usage)
{
    size_t npos = 0;
    int only_pos = 0;

    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (!only_pos && strcmp(arg, "--") == 0) {
            only_pos = 1;
            continue;
        }
        if (!only_pos && arg[0] == '-' && arg[1] != '\0') {
            if (arg[1] != '-') {
                fprintf(stderr,
                        "subgate: unknown option %s; usage: subgate %s\n", arg,
                        usage);
                return ADMIN_USAGE;
            }
            if (admin_arg_opt(argc, argv, &i, opts, nopts, usage) != ADMIN_OK)
                return ADMIN_USAGE;
            continue;
        }
        if (npos >= max)
            return admin_usage(usage);
        pos[npos++] = arg;
    }
    if (npos < min)
        return admin_usage(usage);
    *npos_r = npos;
    return ADMIN_OK;
}

int admin_prepare(struct admin_ctx *ctx, const char *sql, sqlite3_stmt **st_r)
{
    if (sqlite3_prepare_v2(ctx->db, sql, -1, st_r, NULL) != SQLITE_OK) {
        admin_db_fail(ctx, "database");
        *st_r = NULL;
        return -1;
    }
    return 0;
}

int admin_exec(struct admin_ctx *ctx, const char *sql)
{
    if (sqlite3_exec(ctx->db, sql, NULL, NULL, NULL) != SQLITE_OK)
        return admin_db_fail(ctx, "database");
    return ADMIN_OK;
}

int admin_begin(struct admin_ctx *ctx)
{
    return admin_exec(ctx, "BEGIN IMMEDIATE");
}

int admin_commit(struct admin_ctx *ctx)
{
    if (admin_exec(ctx, "COMMIT") != ADMIN_OK) {
        admin_rollback(ctx);
        return ADMIN_FAIL;
    }
    return ADMIN_OK;
}

void admin_rollback(struct admin_ctx *ctx)
{
    if (!sqlite3_get_autocommit(ctx->db))
        sqlite3_exec(ctx->db, "ROLLBACK", NULL, NULL, NULL);
}

int admin_step_done(struct admin_ctx *ctx, sqlite3_stmt *st, const char *what)
{
    int rc = sqlite3_step(st);

    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return admin_db_fail(ctx, what);
    return ADMIN_OK;
}

long long admin_query_int(struct admin_ctx *ctx, const char *sql,
                          const char *param)
{
    sqlite3_stmt *st;
    long long v = -1;
    int rc;

    if (admin_prepare(ctx, sql, &st) != 0)
        return -1;
    if (param != NULL)
        sqlite3_bind_text(st, 1, param, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    else if (rc == SQLITE_DONE)
        v = 0;
    else
        admin_db_fail(ctx, "database");
    sqlite3_finalize(st);
    return v;
}

int admin_domain_norm(const char *in, char *out)
{
    size_t len = strlen(in), label = 0;

    /* RFC 1035 2.3.4: 253 octets as text without the root dot. */
    if (len == 0 || len > 253)
        return 0;
    for (size_t i = 0; i <= len; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c == '.' || c == '\0') {
            if (label == 0 || label > 63 || in[i - 1] == '-')
                return 0;
            label = 0;
        } else if (isalnum(c) || (c == '-' && label > 0)) {
            label++;
        } else {
            return 0;
        }
        out[i] = (char)tolower(c);
    }
    return 1;
}

int admin_addr_norm(const char *in, char *out, const char **domain_r)
{
    const char *dom;
    size_t len = strlen(in);
    char *at;

    if (len > SG_MAX_PATH || !addr_is_valid(in))
        return 0;
    memcpy(out, in, len + 1);
    dom = addr_domain(in);
    if (dom == NULL)
        return 0;
    at = out + (dom - in);
    /* Address literals ([192.0.2.1]) cannot be tenant domains. */
    if (!admin_domain_norm(dom, at))
        return 0;
    *domain_r = at;
    return 1;
}

int admin_label_valid(const char *s)
{
    size_t len = strlen(s);

    if (len == 0 || len > 63 || s[0] == '-' || s[len - 1] == '-')
        return 0;
    for (size_t i = 0; i < len; i++)
        if (!(islower((unsigned char)s[i]) || isdigit((unsigned char)s[i]) ||
              s[i] == '-'))
            return 0;
    return 1;
}

long long admin_tenant_id(struct admin_ctx *ctx, const char *name)
{
    return admin_query_int(ctx, "SELECT id FROM tenant WHERE name = ?1", name);
}

long long admin_domain_tenant(struct admin_ctx *ctx, const char *domain)
{
    return admin_query_int(ctx, "SELECT tenant_id FROM domain WHERE name = ?1",
                           domain);
}

int admin_member_find(struct admin_ctx *ctx, const char *address,
                      long long *id_r, long long *tenant_id_r)
{
    sqlite3_stmt *st;
    int rc;

    if (admin_prepare(ctx,
                      "SELECT id, tenant_id FROM member WHERE address = ?1",
                      &st) != 0)
        return -1;
    sqlite3_bind_text(st, 1, address, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        if (id_r != NULL)
            *id_r = sqlite3_column_int64(st, 0);
        if (tenant_id_r != NULL)
            *tenant_id_r = sqlite3_column_int64(st, 1);
    } else if (rc != SQLITE_DONE) {
        admin_db_fail(ctx, "reading member");
    }
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : -1;
}

int admin_member_id(struct admin_ctx *ctx, const char *address, long long *id_r)
{
    int found = admin_member_find(ctx, address, id_r, NULL);

    if (found < 0)
        return ADMIN_FAIL;
    return found == 0 ? admin_fail("no member %s", address) : ADMIN_OK;
}

int admin_print_names(struct admin_ctx *ctx, const char *label, const char *sql,
                      long long id, const char *what)
{
    sqlite3_stmt *st;
    int rc;

    if (admin_prepare(ctx, sql, &st) != 0)
        return ADMIN_FAIL;
    sqlite3_bind_int64(st, 1, id);
    printf("%s:", label);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        printf(" %s", sqlite3_column_text(st, 0));
    printf("\n");
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return admin_db_fail(ctx, what);
    return ADMIN_OK;
}

int admin_member_row_del(struct admin_ctx *ctx, int argc, char **argv,
                         const struct admin_row_del *del)
{
    const char *pos[2] = {0};
    sqlite3_stmt *st;
    long long mid;
    size_t npos;
    int ret;

    if (admin_args(argc, argv, NULL, 0, pos, 2, 2, &npos, del->usage) !=
        ADMIN_OK)
        return ADMIN_USAGE;
    if (admin_member_id(ctx, pos[0], &mid) != ADMIN_OK)
        return ADMIN_FAIL;
    if (admin_prepare(ctx, del->sql, &st) != 0)
        return ADMIN_FAIL;
    sqlite3_bind_int64(st, 1, mid);
    sqlite3_bind_text(st, 2, pos[1], -1, SQLITE_STATIC);
    ret = admin_step_done(ctx, st, del->what);
    if (ret == ADMIN_OK && sqlite3_changes(ctx->db) == 0)
        ret = admin_fail("%s has no %s %s", pos[0], del->noun, pos[1]);
    return ret;
}

int admin_addr_in_use(struct admin_ctx *ctx, const char *address)
{
    long long n;

    n = admin_query_int(ctx,
                        "SELECT (SELECT count(*) FROM member"
                        "  WHERE address = ?1)"
                        " + (SELECT count(*) FROM alias WHERE address = ?1)",
                        address);
    return n < 0 ? -1 : n > 0;
}

char *admin_iso_time(long long t, char *out, size_t outlen)
{
    time_t tt = (time_t)t;
    struct tm tm;

    if (t == 0 || gmtime_r(&tt, &tm) == NULL ||
        strftime(out, outlen, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(out, outlen, "-");
    return out;
}

int admin_read_password(char *out, size_t outlen)
{
    size_t n = 0;
    ssize_t r;
    char c;

    /* Byte by byte with read(2): nothing past the line is consumed, and no
     * stdio buffer keeps a copy of the secret. */
    for (;;) {
        r = read(STDIN_FILENO, &c, 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return admin_fail("reading password: %s", strerror(errno));
        if (r == 0 || c == '\n')
            break;
        if (c == '\0') {
            explicit_bzero(out, outlen);
            return admin_fail("password holds a NUL octet");
        }
        /* One octet more than the limit fits: a CR, stripped below. */
        if (n + 1 >= outlen) {
            explicit_bzero(out, outlen);
            return admin_fail("password longer than %d octets",
                              ADMIN_MAX_PASSWORD);
        }
        out[n++] = c;
    }
    while (n > 0 && out[n - 1] == '\r')
        n--;
    out[n] = '\0';
    if (n > ADMIN_MAX_PASSWORD) {
        explicit_bzero(out, outlen);
        return admin_fail("password longer than %d octets", ADMIN_MAX_PASSWORD);
    }
    if (n == 0)
        return admin_fail("empty password on standard input");
    return ADMIN_OK;
}

int admin_mkdir(const char *path, unsigned mode)
{
    char tmp[4096];
    size_t len = strlen(path);
    struct stat st;

    if (len == 0 || len >= sizeof tmp)
        return admin_fail("%s: bad directory name", path);
    memcpy(tmp, path, len + 1);
    /* Parents first, as mkdir -p does. */
    for (char *p = tmp + 1; *p != '\0'; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
            return admin_fail("mkdir %s: %s", tmp, strerror(errno));
        *p = '/';
    }
    if (mkdir(path, mode) == 0) {
        /* mkdir applies the umask; the mode is meant as given. */
        if (chmod(path, mode) != 0)
            return admin_fail("chmod %s: %s", path, strerror(errno));
        return ADMIN_OK;
    }
    if (errno != EEXIST)
        return admin_fail("mkdir %s: %s", path, strerror(errno));
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
        return admin_fail("%s exists and is not a directory", path);
    return ADMIN_OK;
}
