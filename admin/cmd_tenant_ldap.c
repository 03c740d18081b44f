/* cmd_tenant_ldap: `subgate tenant ldap DOMAIN ...` points a tenant's AUTH
 * at an LDAP directory (table tenant_ldap; docs/ldap.md), `--off` back at
 * the member table; and the lines `tenant show` prints about it. The
 * settings are checked here, where a mistake can be told to the
 * administrator; the server only reads them. */
#include <ldap.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "../common/jail.h"
#include "../common/limits.h"
#include "admin.h"

#define TENANT_LDAP_USAGE                                                      \
    "tenant ldap DOMAIN --off | --uri URI[,URI...] (--dn-template T | "        \
    "--search-base B --search-filter F) [--bind-dn D "                         \
    "--bind-password-file FILE] [--submit-filter F] [--address-attrs "         \
    "A[,A...]] [--uid-domain] [--fingerprint-attr A] [--mail-password-attr "   \
    "A] [--login-form uid|address] [--starttls yes|no] [--ca-file FILE] "      \
    "[--timeout DURATION]"

/* Per-tenant timeout bounds, as for the ldap_timeout setting. */
#define TENANT_LDAP_MIN_TIMEOUT_MS 100ULL
#define TENANT_LDAP_MAX_TIMEOUT_MS (5ULL * 60 * 1000)

enum {
    TL_OFF,
    TL_URI,
    TL_DN_TEMPLATE,
    TL_SEARCH_BASE,
    TL_SEARCH_FILTER,
    TL_BIND_DN,
    TL_BIND_PW_FILE,
    TL_SUBMIT_FILTER,
    TL_ADDRESS_ATTRS,
    TL_UID_DOMAIN,
    TL_FP_ATTR,
    TL_MAILPW_ATTR,
    TL_LOGIN_FORM,
    TL_STARTTLS,
    TL_CA_FILE,
    TL_TIMEOUT,
    TL_NOPTS
};

/* No control octets, and short enough to store. */
static int tenant_ldap_text_ok(const char *s)
{
    if (strlen(s) >= SG_MAX_LDAP_SETTING)
        return 0;
    for (; *s != '\0'; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return 0;
    return 1;
}

/* A comma-separated list of ldap://, ldaps:// or ldapi:// URIs. */
static int tenant_ldap_uris_ok(const char *s)
{
    char uri[SG_MAX_LDAP_SETTING];
    size_t n;

    if (!tenant_ldap_text_ok(s) || *s == '\0')
        return 0;
    while (*s != '\0') {
        LDAPURLDesc *desc = NULL;
        int ok;

        n = strcspn(s, ",");
        if (n == 0 || n >= sizeof uri)
            return 0;
        memcpy(uri, s, n);
        uri[n] = '\0';
        ok = strchr(uri, ' ') == NULL && ldap_is_ldap_url(uri) &&
             ldap_url_parse(uri, &desc) == LDAP_URL_SUCCESS;
        ldap_free_urldesc(desc);
        if (!ok)
            return 0;
        s += n;
        if (*s == ',')
            s++;
        if (*s == '\0' && s[-1] == ',')
            return 0;
    }
    return 1;
}

/* A template: "%u" at least once, otherwise only "%%" after a '%'. */
static int tenant_ldap_template_ok(const char *s)
{
    int has_u = 0;

    if (!tenant_ldap_text_ok(s))
        return 0;
    for (; *s != '\0'; s++) {
        if (*s != '%')
            continue;
        if (s[1] == 'u')
            has_u = 1;
        else if (s[1] != '%')
            return 0;
        s++;
    }
    return has_u;
}

/* A search filter (RFC 4515): parenthesized and balanced; a literal
 * parenthesis in a value is written \28 or \29, so every raw one counts. */
static int tenant_ldap_filter_ok(const char *s)
{
    int depth = 0;
    size_t n = strlen(s);

    if (!tenant_ldap_text_ok(s) || n < 3 || s[0] != '(' || s[n - 1] != ')')
        return 0;
    for (; *s != '\0'; s++) {
        if (*s == '(')
            depth++;
        else if (*s == ')' && --depth < 0)
            return 0;
        if (depth == 0 && s[1] != '\0')
            return 0; /* two filters side by side */
    }
    return depth == 0;
}

/* An attribute description (RFC 4512 1.4): a name or a numeric OID. */
static int tenant_ldap_attr_ok(const char *s, size_t n)
{
    size_t i;
    int name = (s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z');

    if (n == 0 || n > 128)
        return 0;
    for (i = 0; i < n; i++) {
        char c = s[i];
        int digit = c >= '0' && c <= '9';
        int alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');

        if (name ? !(alpha || digit || c == '-') : !(digit || c == '.'))
            return 0;
    }
    return 1;
}

/* A comma-separated list of attribute descriptions. */
static int tenant_ldap_attrs_ok(const char *s)
{
    size_t count = 0, n;

    if (!tenant_ldap_text_ok(s))
        return 0;
    while (*s != '\0') {
        n = strcspn(s, ",");
        if (!tenant_ldap_attr_ok(s, n) || ++count > SG_MAX_LDAP_ATTRS)
            return 0;
        s += n;
        if (*s == ',' && *++s == '\0')
            return 0;
    }
    return count > 0;
}

/* An absolute path to an existing file. ADMIN_OK, or ADMIN_FAIL/USAGE
 * (printed). */
static int tenant_ldap_file_ok(const char *opt, const char *path)
{
    struct stat st;

    if (path[0] != '/' || !tenant_ldap_text_ok(path))
        return admin_badarg("--%s must be an absolute path", opt);
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
        return admin_fail("--%s %s: no such file", opt, path);
    return ADMIN_OK;
}

/* Checks the options; ADMIN_OK, or the status after printing why. */
static int tenant_ldap_check(const struct admin_opt *o,
                             unsigned long long *timeout_r)
{
    int dn = o[TL_DN_TEMPLATE].set;
    int search = o[TL_SEARCH_BASE].set || o[TL_SEARCH_FILTER].set;
    int rc;

    if (!o[TL_URI].set || !tenant_ldap_uris_ok(o[TL_URI].value))
        return admin_badarg("--uri must be ldap://, ldaps:// or ldapi:// "
                            "URIs separated by commas");
    if (dn == search)
        return admin_badarg("give either --dn-template or --search-base "
                            "with --search-filter");
    if (dn && !tenant_ldap_template_ok(o[TL_DN_TEMPLATE].value))
        return admin_badarg("--dn-template must contain %%u, and no other "
                            "%% sequence than %%%%");
    if (search && (!o[TL_SEARCH_BASE].set || !o[TL_SEARCH_FILTER].set ||
                   !o[TL_BIND_DN].set))
        return admin_badarg("--search-base needs --search-filter, "
                            "--bind-dn and --bind-password-file");
    if (search && (!tenant_ldap_text_ok(o[TL_SEARCH_BASE].value) ||
                   !tenant_ldap_filter_ok(o[TL_SEARCH_FILTER].value) ||
                   !tenant_ldap_template_ok(o[TL_SEARCH_FILTER].value)))
        return admin_badarg("--search-filter must be a parenthesized filter "
                            "containing %%u");
    if (o[TL_BIND_DN].set != o[TL_BIND_PW_FILE].set)
        return admin_badarg("--bind-dn and --bind-password-file go "
                            "together");
    if (o[TL_BIND_DN].set && (o[TL_BIND_DN].value[0] == '\0' ||
                              !tenant_ldap_text_ok(o[TL_BIND_DN].value)))
        return admin_badarg("bad --bind-dn");
    if (o[TL_MAILPW_ATTR].set && !o[TL_BIND_DN].set)
        return admin_badarg("--mail-password-attr needs --bind-dn: the "
                            "attribute is read as the service");
    if (o[TL_SUBMIT_FILTER].set &&
        !tenant_ldap_filter_ok(o[TL_SUBMIT_FILTER].value))
        return admin_badarg("--submit-filter must be a parenthesized "
                            "filter");
    if (o[TL_ADDRESS_ATTRS].set &&
        !tenant_ldap_attrs_ok(o[TL_ADDRESS_ATTRS].value))
        return admin_badarg("--address-attrs must be 1 to %d attribute "
                            "names separated by commas",
                            SG_MAX_LDAP_ATTRS);
    if ((o[TL_FP_ATTR].set &&
         !tenant_ldap_attr_ok(o[TL_FP_ATTR].value,
                              strlen(o[TL_FP_ATTR].value))) ||
        (o[TL_MAILPW_ATTR].set &&
         !tenant_ldap_attr_ok(o[TL_MAILPW_ATTR].value,
                              strlen(o[TL_MAILPW_ATTR].value))))
        return admin_badarg("bad attribute name");
    if (o[TL_LOGIN_FORM].set && strcmp(o[TL_LOGIN_FORM].value, "uid") != 0 &&
        strcmp(o[TL_LOGIN_FORM].value, "address") != 0)
        return admin_badarg("--login-form must be uid or address");
    if (o[TL_STARTTLS].set && strcmp(o[TL_STARTTLS].value, "yes") != 0 &&
        strcmp(o[TL_STARTTLS].value, "no") != 0)
        return admin_badarg("--starttls must be yes or no");
    *timeout_r = 0;
    if (o[TL_TIMEOUT].set &&
        (cfg_parse_duration_ms(o[TL_TIMEOUT].value, timeout_r) != 0 ||
         *timeout_r < TENANT_LDAP_MIN_TIMEOUT_MS ||
         *timeout_r > TENANT_LDAP_MAX_TIMEOUT_MS))
        return admin_badarg("--timeout must be a duration from 100ms to 5m");
    if (o[TL_BIND_PW_FILE].set &&
        (rc = tenant_ldap_file_ok("bind-password-file",
                                  o[TL_BIND_PW_FILE].value)) != ADMIN_OK)
        return rc;
    if (o[TL_CA_FILE].set &&
        (rc = tenant_ldap_file_ok("ca-file", o[TL_CA_FILE].value)) != ADMIN_OK)
        return rc;
    return ADMIN_OK;
}

/* With chroot set, the SMTP worker reads the tenant's files by their names
 * inside the chroot and cannot reach a socket named by an ldapi:// URI
 * (docs/security.md, "Chroot"): refused here rather than at the first
 * login. ADMIN_OK, or ADMIN_USAGE (printed). */
static int tenant_ldap_jail_ok(const struct cfg *cfg, const struct admin_opt *o)
{
    static const int files[] = {TL_BIND_PW_FILE, TL_CA_FILE};
    char inside[SG_MAX_LDAP_SETTING];
    const char *why;
    size_t i;

    if (cfg->chroot[0] == '\0')
        return ADMIN_OK;
    if (strcasestr(o[TL_URI].value, "ldapi:") != NULL)
        return admin_badarg("--uri: ldapi:// cannot be reached from the SMTP "
                            "worker's chroot %s",
                            cfg->chroot);
    for (i = 0; i < sizeof files / sizeof files[0]; i++) {
        const struct admin_opt *f = &o[files[i]];

        if (f->set &&
            jail_path(cfg->chroot, f->value, inside, sizeof inside, &why) != 0)
            return admin_badarg("--%s %s %s (chroot = %s): the SMTP worker "
                                "reads it from inside the chroot",
                                f->name, f->value, why, cfg->chroot);
    }
    return ADMIN_OK;
}

/* Binds option i's value to parameter p, NULL when not given. */
static void tenant_ldap_bind(sqlite3_stmt *st, int p, const struct admin_opt *o)
{
    if (o->set)
        sqlite3_bind_text(st, p, o->value, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, p);
}

static int tenant_ldap_store(struct admin_ctx *ctx, long long tid,
                             const struct admin_opt *o,
                             unsigned long long timeout_ms)
{
    static const char sql[] =
        "INSERT OR REPLACE INTO tenant_ldap(tenant_id, uris, bind_mode,"
        " dn_template, search_base, search_filter, bind_dn,"
        " bind_password_file, submit_filter, address_attrs, uid_domain,"
        " fingerprint_attr, mail_password_attr, login_form, starttls,"
        " timeout_ms, ca_file, updated)"
        " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13,"
        " ?14, ?15, ?16, ?17, ?18)";
    static const int text_params[][2] = {
        {2, TL_URI},           {4, TL_DN_TEMPLATE}, {5, TL_SEARCH_BASE},
        {6, TL_SEARCH_FILTER}, {7, TL_BIND_DN},     {8, TL_BIND_PW_FILE},
        {9, TL_SUBMIT_FILTER}, {12, TL_FP_ATTR},    {13, TL_MAILPW_ATTR},
        {17, TL_CA_FILE},
    };
    sqlite3_stmt *st;
    size_t i;

    if (admin_prepare(ctx, sql, &st) != 0)
        return ADMIN_FAIL;
    sqlite3_bind_int64(st, 1, tid);
    for (i = 0; i < sizeof text_params / sizeof text_params[0]; i++)
        tenant_ldap_bind(st, text_params[i][0], &o[text_params[i][1]]);
    sqlite3_bind_text(st, 3, o[TL_DN_TEMPLATE].set ? "dn" : "search", -1,
                      SQLITE_STATIC);
    sqlite3_bind_text(
        st, 10, o[TL_ADDRESS_ATTRS].set ? o[TL_ADDRESS_ATTRS].value : "mail",
        -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 11, o[TL_UID_DOMAIN].set);
    sqlite3_bind_text(st, 14,
                      o[TL_LOGIN_FORM].set ? o[TL_LOGIN_FORM].value : "uid", -1,
                      SQLITE_STATIC);
    sqlite3_bind_int(st, 15,
                     !o[TL_STARTTLS].set ||
                         strcmp(o[TL_STARTTLS].value, "yes") == 0);
    if (timeout_ms > 0)
        sqlite3_bind_int64(st, 16, (long long)timeout_ms);
    else
        sqlite3_bind_null(st, 16);
    sqlite3_bind_int64(st, 18, (long long)time(NULL));
    return admin_step_done(ctx, st, "setting LDAP backend");
}

static int tenant_ldap_off(struct admin_ctx *ctx, long long tid)
{
    sqlite3_stmt *st;

    if (admin_prepare(ctx, "DELETE FROM tenant_ldap WHERE tenant_id = ?1",
                      &st) != 0)
        return ADMIN_FAIL;
    sqlite3_bind_int64(st, 1, tid);
    return admin_step_done(ctx, st, "removing LDAP backend");
}

int cmd_tenant_ldap(struct admin_ctx *ctx, int argc, char **argv)
{
    struct admin_opt o[TL_NOPTS] = {
        [TL_OFF] = {.name = "off"},
        [TL_URI] = {.name = "uri", .has_arg = 1},
        [TL_DN_TEMPLATE] = {.name = "dn-template", .has_arg = 1},
        [TL_SEARCH_BASE] = {.name = "search-base", .has_arg = 1},
        [TL_SEARCH_FILTER] = {.name = "search-filter", .has_arg = 1},
        [TL_BIND_DN] = {.name = "bind-dn", .has_arg = 1},
        [TL_BIND_PW_FILE] = {.name = "bind-password-file", .has_arg = 1},
        [TL_SUBMIT_FILTER] = {.name = "submit-filter", .has_arg = 1},
        [TL_ADDRESS_ATTRS] = {.name = "address-attrs", .has_arg = 1},
        [TL_UID_DOMAIN] = {.name = "uid-domain"},
        [TL_FP_ATTR] = {.name = "fingerprint-attr", .has_arg = 1},
        [TL_MAILPW_ATTR] = {.name = "mail-password-attr", .has_arg = 1},
        [TL_LOGIN_FORM] = {.name = "login-form", .has_arg = 1},
        [TL_STARTTLS] = {.name = "starttls", .has_arg = 1},
        [TL_CA_FILE] = {.name = "ca-file", .has_arg = 1},
        [TL_TIMEOUT] = {.name = "timeout", .has_arg = 1},
    };
    const char *pos[1] = {0};
    unsigned long long timeout_ms = 0;
    size_t npos, i;
    long long tid;
    int rc;

    if (admin_args(argc, argv, o, TL_NOPTS, pos, 1, 1, &npos,
                   TENANT_LDAP_USAGE) != ADMIN_OK)
        return ADMIN_USAGE;
    if (o[TL_OFF].set) {
        for (i = 0; i < TL_NOPTS; i++)
            if (i != TL_OFF && o[i].set)
                return admin_badarg("--off takes no other option");
    } else if ((rc = tenant_ldap_check(o, &timeout_ms)) != ADMIN_OK ||
               (rc = tenant_ldap_jail_ok(ctx->cfg, o)) != ADMIN_OK) {
        return rc;
    }
    if (admin_begin(ctx) != ADMIN_OK)
        return ADMIN_FAIL;
    tid = admin_tenant_id(ctx, pos[0]);
    if (tid <= 0) {
        admin_rollback(ctx);
        return tid < 0 ? ADMIN_FAIL : admin_fail("no tenant %s", pos[0]);
    }
    rc = o[TL_OFF].set ? tenant_ldap_off(ctx, tid)
                       : tenant_ldap_store(ctx, tid, o, timeout_ms);
    if (rc != ADMIN_OK) {
        admin_rollback(ctx);
        return ADMIN_FAIL;
    }
    return admin_commit(ctx);
}

/* Prints "key: value" for a column, "" when NULL. */
static void tenant_ldap_line(sqlite3_stmt *st, int col, const char *key)
{
    const unsigned char *v = sqlite3_column_text(st, col);

    printf("%s: %s\n", key, v != NULL ? (const char *)v : "");
}

int tenant_ldap_show(struct admin_ctx *ctx, long long tenant_id)
{
    static const char *const keys[] = {
        "ldap_uris",
        "ldap_bind",
        "ldap_dn_template",
        "ldap_search_base",
        "ldap_search_filter",
        "ldap_bind_dn",
        "ldap_bind_password_file",
        "ldap_submit_filter",
        "ldap_address_attrs",
        "ldap_uid_domain",
        "ldap_fingerprint_attr",
        "ldap_mail_password_attr",
        "ldap_login_form",
        "ldap_starttls",
        "ldap_timeout",
        "ldap_ca_file",
    };
    sqlite3_stmt *st;
    size_t i;
    int rc;

    if (admin_prepare(ctx,
                      "SELECT uris, bind_mode, dn_template, search_base,"
                      " search_filter, bind_dn, bind_password_file,"
                      " submit_filter, address_attrs,"
                      " CASE uid_domain WHEN 0 THEN 'no' ELSE 'yes' END,"
                      " fingerprint_attr, mail_password_attr, login_form,"
                      " CASE starttls WHEN 0 THEN 'no' ELSE 'yes' END,"
                      " CASE WHEN timeout_ms IS NULL THEN 'default'"
                      "  ELSE timeout_ms || 'ms' END, ca_file"
                      " FROM tenant_ldap WHERE tenant_id = ?1",
                      &st) != 0)
        return ADMIN_FAIL;
    sqlite3_bind_int64(st, 1, tenant_id);
    rc = sqlite3_step(st);
    if (rc == SQLITE_DONE)
        printf("auth: sqlite\n");
    else if (rc == SQLITE_ROW) {
        printf("auth: ldap\n");
        for (i = 0; i < sizeof keys / sizeof keys[0]; i++)
            tenant_ldap_line(st, (int)i, keys[i]);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW)
        return admin_db_fail(ctx, "reading LDAP settings");
    return ADMIN_OK;
}
