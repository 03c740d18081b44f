/* subgate: the admin tool. Parses the global options, loads the
 * configuration, opens the database and dispatches to a command group.
 * Exit status: 0 success, 1 failure, 2 usage error; errors are one line
 * "subgate: message" on stderr. */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/crypto.h>

#include "../common/cfg.h"
#include "../common/db.h"
#include "../common/log.h"
#include "admin.h"

/* Commands that do not open the database (init creates it). */
#define MAIN_NO_DB 1
/* Run by an MTA: a failure to start is temporary (EX_TEMPFAIL, 75), so
 * that the message is kept and retried rather than bounced. */
#define MAIN_TEMPFAIL 2

struct main_cmd {
    const char *name;
    admin_cmd_fn fn;
    int flags;
};

static const struct main_cmd main_cmds[] = {
    {"init", cmd_init, MAIN_NO_DB},
    {"tenant", cmd_tenant, 0},
    {"domain", cmd_domain, 0},
    {"member", cmd_member, 0},
    {"key", cmd_key, 0},
    {"dns", cmd_dns, 0},
    {"status", cmd_status, 0},
    {"queue", cmd_queue, MAIN_NO_DB},
    {"mailgate", cmd_mailgate, MAIN_NO_DB | MAIN_TEMPFAIL},
};

static const char main_help[] =
    "usage: subgate [-c CONFIG] COMMAND ...\n"
    "\n"
    "  init\n"
    "  tenant add DOMAIN [--sender-policy reject|rewrite]\n"
    "             [--from-policy reject|rewrite] [--sign rsa|rsa,ed25519]\n"
    "  tenant list | show DOMAIN | del DOMAIN [--force]\n"
    "  tenant ldap DOMAIN --uri URI[,URI...] (--dn-template T |\n"
    "              --search-base B --search-filter F) [--bind-dn D\n"
    "              --bind-password-file FILE] [--submit-filter F]\n"
    "              [--address-attrs A[,A...]] [--uid-domain]\n"
    "              [--fingerprint-attr A] [--mail-password-attr A]\n"
    "              [--login-form uid|address] [--starttls yes|no]\n"
    "              [--ca-file FILE] [--timeout DURATION]\n"
    "  tenant ldap DOMAIN --off\n"
    "  domain add|del TENANT DOMAIN\n"
    "  member add ADDRESS [--password-stdin|--random]\n"
    "  member passwd ADDRESS --password-stdin|--random\n"
    "  member list [TENANT] | show|del|disable|enable ADDRESS\n"
    "  member alias add|del ADDRESS ALIAS\n"
    "  member pgpkey ADDRESS [--remove] < key.asc\n"
    "  member token add ADDRESS --label LABEL | list ADDRESS |\n"
    "    del ADDRESS LABEL\n"
    "  member cert add ADDRESS < cert.pem | list ADDRESS | del ADDRESS SHA256\n"
    "  member reset ADDRESS [--print]\n"
    "  key generate DOMAIN [--algo rsa|ed25519] [--bits N] [--selector S]\n"
    "  key list DOMAIN\n"
    "  key activate|retire|revoke DOMAIN [SELECTOR] [--force]\n"
    "  key delete DOMAIN SELECTOR\n"
    "  key rotate DOMAIN [--force] | key rotate --due\n"
    "  dns records|check|show|del DOMAIN\n"
    "  dns publish DOMAIN [--dry-run] [--all]\n"
    "  dns set DOMAIN --server HOST[:PORT] --tsig-name NAME\n"
    "          --tsig-secret-file PATH [--tsig-alg ALG] [--zone ZONE]\n"
    "          [--delegate ZONE] [--check ns|HOST[:PORT],...] [--slots N]\n"
    "  tenant reset DOMAIN [--address ADDR] [--accept-in-gateway yes|no]\n"
    "               [--off]\n"
    "  tenant require-tokens DOMAIN yes|no\n"
    "  tenant notify DOMAIN [--admin ADDRESS|none]\n"
    "  mailgate [-f SENDER] [--recipient ADDR] < message\n"
    "  status\n"
    "  queue list | show ID | flush [ID] | delete ID|--all\n"
    "  queue hold ID | release ID\n"
    "\n"
    "CONFIG defaults to " SG_DEFAULT_CONFIG ". Passwords are read from\n"
    "standard input only. See docs/admin.md.\n";

static int main_run(const struct main_cmd *cmd, const char *cfg_path, int argc,
                    char **argv)
{
    struct admin_ctx ctx = {.cfg_path = cfg_path};
    char err[1024];
    int ret;

    if (cfg_load(cfg_path, &ctx.cfg, err, sizeof err) != 0) {
        admin_fail("%s", err);
        return cmd->flags & MAIN_TEMPFAIL ? 75 : ADMIN_FAIL;
    }
    if (!(cmd->flags & MAIN_NO_DB) &&
        db_open(ctx.cfg->database, 0, &ctx.db, err, sizeof err) != 0) {
        cfg_free(&ctx.cfg);
        return admin_fail("%s", err);
    }
    ret = cmd->fn(&ctx, argc, argv);
    db_close(&ctx.db);
    cfg_free(&ctx.cfg);
    return ret;
}

int main(int argc, char **argv)
{
    const char *cfg_path = SG_DEFAULT_CONFIG;
    int i = 1;

    log_init("subgate", 0);
    /* Files we create are ours alone unless a mode says otherwise. */
    umask(077);
    while (i < argc && argv[i][0] == '-') {
        if (strcmp(argv[i], "-c") == 0 && i + 1 < argc) {
            cfg_path = argv[i + 1];
            i += 2;
        } else if (strncmp(argv[i], "-c", 2) == 0 && argv[i][2] != '\0') {
            cfg_path = argv[i] + 2;
            i++;
        } else if (strcmp(argv[i], "-h") == 0 ||
                   strcmp(argv[i], "--help") == 0) {
            fputs(main_help, stdout);
            return ADMIN_OK;
        } else {
            return admin_usage("[-c CONFIG] COMMAND ... (subgate help)");
        }
    }
    if (i >= argc)
        return admin_usage("[-c CONFIG] COMMAND ... (subgate help)");
    if (strcmp(argv[i], "help") == 0) {
        fputs(main_help, stdout);
        return ADMIN_OK;
    }
    for (size_t k = 0; k < sizeof main_cmds / sizeof main_cmds[0]; k++)
        if (strcmp(argv[i], main_cmds[k].name) == 0)
            return main_run(&main_cmds[k], cfg_path, argc - i, argv + i);
    fprintf(stderr, "subgate: unknown command %s (subgate help lists them)\n",
            argv[i]);
    return ADMIN_USAGE;
}
