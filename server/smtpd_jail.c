/* smtpd_jail: see smtpd_jail.h. The master writes into the chroot as root
 * while the workers' user may write in the chroot directory itself (SQLite
 * needs that beside the database): so every step below the chroot goes
 * through directory descriptors opened with O_NOFOLLOW, into directories
 * that only root can change, and files are replaced by rename. */
#include "smtpd_jail.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <ldap.h>
#include <limits.h>
#include <openssl/ssl.h>
#include <pwd.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../common/db.h"
#include "../common/jail.h"
#include "../common/log.h"
#include "../common/xalloc.h"
#include "mailgate_spool.h"
#include "tls.h"

/* A host file copied into the chroot is a few lines or a CA bundle (about
 * 200 KiB); the bound only stops a file that never ends (a link to a
 * device). */
#define SMTPD_JAIL_MAX_COPY (16UL * 1024 * 1024)
/* The CA bundle of Debian's ca-certificates, which GnuTLS (under libldap)
 * takes as the system trust store when ldap.conf names none. */
#define SMTPD_JAIL_SYSTEM_CA "/etc/ssl/certs/ca-certificates.crt"
/* Inside, the C library can use only the sources it has built in; modules
 * that the host's nsswitch.conf may name (systemd's, mdns) cannot be
 * loaded there. */
static const char smtpd_jail_nsswitch[] =
    "# Written by subgated at each start and SIGHUP for its chrooted SMTP\n"
    "# worker, which can use only the sources built into the C library.\n"
    "hosts: files dns\n";

/* ---- master: etc/ in the chroot -------------------------------------- */

/* Opens directory name below dirfd, creating it (0755) when missing,
 * without following a symbolic link. It must belong to root and be
 * writable by root only, or a worker could have put something there. The
 * descriptor, or -1 (logged; shown is the full name where). */
static int smtpd_jail_subdir(int dirfd, const char *name, const char *where)
{
    struct stat st;
    int fd;

    if (mkdirat(dirfd, name, 0755) == 0) {
        fd = openat(dirfd, name,
                    O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        /* The umask (UMask= of the unit) must not keep user out. */
        if (fd >= 0 && fchmod(fd, 0755) != 0) {
            log_error_errno(errno, "chroot: chmod %s", where);
            close(fd);
            return -1;
        }
    } else if (errno == EEXIST) {
        fd = openat(dirfd, name,
                    O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    } else {
        log_error_errno(errno, "chroot: cannot create %s", where);
        return -1;
    }
    if (fd < 0) {
        log_error_errno(errno, "chroot: %s is not a directory", where);
        return -1;
    }
    if (fstat(fd, &st) != 0 || st.st_uid != 0 || (st.st_mode & 022) != 0) {
        log_error("chroot: %s must belong to root and be writable by root "
                  "only",
                  where);
        close(fd);
        return -1;
    }
    return fd;
}

/* Copies all of src (at most SMTPD_JAIL_MAX_COPY octets) to dst. 0 or
 * -errno. */
static int smtpd_jail_copy_fd(int src, int dst)
{
    char buf[64 * 1024];
    size_t total = 0;
    ssize_t n;

    while ((n = read(src, buf, sizeof buf)) != 0) {
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        total += (size_t)n;
        if (total > SMTPD_JAIL_MAX_COPY)
            return -EFBIG;
        for (ssize_t off = 0; off < n;) {
            ssize_t w = write(dst, buf + off, (size_t)(n - off));
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0)
                return -errno;
            off += w;
        }
    }
    return 0;
}

/* Replaces name in dirfd with the content of src (>= 0) or text, mode
 * 0644, through name.tmp and rename. 0 or -1 (logged). */
static int smtpd_jail_put(int dirfd, const char *name, const char *where,
                          int src, const char *text)
{
    char tmp[NAME_MAX + 1];
    int fd, rc = 0;

    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", name) >= sizeof tmp)
        return -1;
    if (unlinkat(dirfd, tmp, 0) != 0 && errno != ENOENT) {
        log_error_errno(errno, "chroot: cannot remove %s.tmp", where);
        return -1;
    }
    fd = openat(dirfd, tmp,
                O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0) {
        log_error_errno(errno, "chroot: cannot create %s.tmp", where);
        return -1;
    }
    if (src >= 0)
        rc = smtpd_jail_copy_fd(src, fd);
    else if (write(fd, text, strlen(text)) != (ssize_t)strlen(text))
        rc = -EIO;
    if (rc == 0 && fchmod(fd, 0644) != 0)
        rc = -errno;
    if (close(fd) != 0 && rc == 0)
        rc = -errno;
    if (rc == 0 && renameat(dirfd, tmp, dirfd, name) != 0)
        rc = -errno;
    if (rc != 0) {
        log_error_errno(rc, "chroot: cannot write %s", where);
        (void)unlinkat(dirfd, tmp, 0);
        return -1;
    }
    return 0;
}

/* Opens the host file path for copying: the descriptor, -ENOENT when it
 * does not exist, or -1 (logged). */
static int smtpd_jail_source(const char *path)
{
    struct stat st;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0 && errno == ENOENT)
        return -ENOENT;
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        log_error("chroot: %s is not a file that can be read", path);
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

/* Puts the host file path (absolute) at the same name inside the chroot,
 * or the text when text is not NULL. A host file that does not exist is
 * removed inside too. 1 written, 0 removed, -1 error (logged). */
static int smtpd_jail_install(const struct cfg *cfg, int rootfd,
                              const char *path, const char *text)
{
    char where[PATH_MAX], comp[NAME_MAX + 1];
    const char *p = path + 1, *slash;
    int dirfd = rootfd, src = -1, rc = -1;

    /* Down the directories of path, each checked. */
    while ((slash = strchr(p, '/')) != NULL) {
        size_t n = (size_t)(slash - p);
        int next;

        if (n == 0 || n > NAME_MAX)
            goto bad_name;
        memcpy(comp, p, n);
        comp[n] = '\0';
        snprintf(where, sizeof where, "%s%.*s", cfg->chroot,
                 (int)(slash - path), path);
        next = smtpd_jail_subdir(dirfd, comp, where);
        if (next < 0)
            goto out;
        if (dirfd != rootfd)
            close(dirfd);
        dirfd = next;
        p = slash + 1;
    }
    if (*p == '\0' || strlen(p) > NAME_MAX - 4)
        goto bad_name;
    snprintf(where, sizeof where, "%s%s", cfg->chroot, path);
    if (text == NULL && (src = smtpd_jail_source(path)) == -ENOENT) {
        if (unlinkat(dirfd, p, 0) != 0 && errno != ENOENT)
            log_warn("chroot: cannot remove %s: %s", where, strerror(errno));
        rc = 0;
        goto out;
    }
    if (text == NULL && src < 0)
        goto out;
    rc = smtpd_jail_put(dirfd, p, where, src, text) == 0 ? 1 : -1;
    goto out;
bad_name:
    log_error("chroot: cannot place %s inside", path);
out:
    if (src >= 0)
        close(src);
    if (dirfd != rootfd)
        close(dirfd);
    return rc;
}

/* The CA file that libldap's configuration names (TLS_CACERT), or the
 * system bundle, in buf. "" when it is not a plain absolute name. */
static void smtpd_jail_ldap_ca(char *buf, size_t len)
{
    char *file = NULL;
    const char *why;

    snprintf(buf, len, "%s", SMTPD_JAIL_SYSTEM_CA);
    if (ldap_get_option(NULL, LDAP_OPT_X_TLS_CACERTFILE, &file) !=
            LDAP_OPT_SUCCESS ||
        file == NULL)
        return;
    if (jail_root_check(file, &why) == 0)
        snprintf(buf, len, "%s", file);
    else
        buf[0] = '\0';
    ldap_memfree(file);
}

int smtpd_jail_refresh(const struct cfg *cfg)
{
    char ca[PATH_MAX], done[1024] = "";
    struct {
        const char *path;
        const char *text; /* NULL: copy the host's file */
    } items[] = {{"/etc/hosts", NULL},
                 {"/etc/resolv.conf", NULL},
                 {"/etc/nsswitch.conf", smtpd_jail_nsswitch},
                 {ca, NULL}};
    size_t i, n = sizeof items / sizeof items[0], o = 0;
    int rootfd, bad = 0, rc;

    rootfd = open(cfg->chroot, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (rootfd < 0) {
        log_error_errno(errno, "chroot %s", cfg->chroot);
        return -1;
    }
    smtpd_jail_ldap_ca(ca, sizeof ca);
    if (ca[0] == '\0')
        n--;
    for (i = 0; i < n; i++) {
        rc = smtpd_jail_install(cfg, rootfd, items[i].path, items[i].text);
        if (rc < 0)
            bad++;
        else if (rc > 0 && o < sizeof done)
            o += (size_t)snprintf(done + o, sizeof done - o, " %s",
                                  items[i].path + 1);
    }
    close(rootfd);
    if (bad == 0)
        log_info("chroot %s: copied%s", cfg->chroot,
                 done[0] != '\0' ? done : " nothing");
    return bad == 0 ? 0 : -1;
}

/* ---- the worker: entering ------------------------------------------- */

/* Replaces the path in *field with its name inside the chroot. */
static void smtpd_jail_rename(const struct cfg *cfg, char **field,
                              const char *key)
{
    char inside[PATH_MAX];
    const char *why;

    if (**field == '\0')
        return;
    if (jail_path(cfg->chroot, *field, inside, sizeof inside, &why) != 0)
        log_fatal("%s: %s %s %s (chroot = %s)", cfg->path, key, *field, why,
                  cfg->chroot);
    free(*field);
    *field = xstrdup(inside);
}

/* What libraries read from fixed places once: loaded here, outside, the
 * worker behaves as it would without a chroot. glibc reads the time zone
 * (/etc/localtime) once for localtime_r(); OpenSSL its openssl.cnf at
 * initialisation; libldap its ldap.conf (with TLS_CACERT) at the first
 * call. */
static void smtpd_jail_preload(void)
{
    int version;

    tzset();
    if (OPENSSL_init_ssl(OPENSSL_INIT_LOAD_CONFIG, NULL) != 1)
        log_fatal("chroot: cannot initialise OpenSSL");
    (void)ldap_get_option(NULL, LDAP_OPT_PROTOCOL_VERSION, &version);
}

void smtpd_jail_enter(struct cfg *cfg)
{
    struct passwd *pw;
    uid_t uid;
    gid_t gid;

    pw = getpwnam(cfg->user);
    if (pw == NULL)
        log_fatal("unknown user %s", cfg->user);
    if (pw->pw_uid == 0)
        log_fatal("%s: chroot needs a user other than root", cfg->path);
    uid = pw->pw_uid;
    gid = pw->pw_gid;
    smtpd_jail_preload();
    /* initgroups() reads /etc/group: before the chroot. */
    if (initgroups(pw->pw_name, gid) != 0 || setgid(gid) != 0)
        log_fatal_errno(errno, "cannot switch to the groups of %s", cfg->user);
    if (chroot(cfg->chroot) != 0) {
        int err = errno;
        log_fatal_errno(err, "chroot %s%s", cfg->chroot,
                        err == EPERM ? " (under systemd, the unit needs "
                                       "CAP_SYS_CHROOT)"
                                     : "");
    }
    if (chdir("/") != 0)
        log_fatal_errno(errno, "chroot %s: chdir /", cfg->chroot);
    if (setuid(uid) != 0)
        log_fatal_errno(errno, "cannot switch to user %s", cfg->user);
    if (setuid(0) == 0)
        log_fatal("chroot: could still regain root after dropping it");
    /* No set-user-id program could give root back either. */
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        log_fatal_errno(errno, "chroot: PR_SET_NO_NEW_PRIVS");
    smtpd_jail_rename(cfg, &cfg->database, "database");
    smtpd_jail_rename(cfg, &cfg->queue_dir, "queue_dir");
    smtpd_jail_rename(cfg, &cfg->run_dir, "run_dir");
    smtpd_jail_rename(cfg, &cfg->tls_cert, "tls_cert");
    smtpd_jail_rename(cfg, &cfg->tls_key, "tls_key");
}

/* ---- the start-up check, inside ---------------------------------------- */

/* One file of an LDAP tenant, named outside: inside the chroot and
 * readable there. 0 or 1 (a problem, logged). */
static int smtpd_jail_check_file(const struct cfg *cfg, const char *tenant,
                                 const char *key, const char *path)
{
    char inside[PATH_MAX];
    const char *why;
    int fd;

    if (path[0] == '\0')
        return 0;
    if (jail_path(cfg->chroot, path, inside, sizeof inside, &why) != 0) {
        log_error("chroot check: ldap tenant=%s %s %s %s (chroot = %s)", tenant,
                  key, path, why, cfg->chroot);
        return 1;
    }
    fd = open(inside, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        log_error("chroot check: ldap tenant=%s %s %s (%s inside): %s", tenant,
                  key, path, inside, strerror(errno));
        return 1;
    }
    close(fd);
    return 0;
}

/* Each LDAP tenant: files inside, no ldapi:// (a socket named outside).
 * The number of problems (logged). */
static int smtpd_jail_check_ldap(const struct cfg *cfg, sqlite3 *db)
{
    static const char sql[] =
        "SELECT t.name, l.uris, COALESCE(l.ca_file, ''),"
        " COALESCE(l.bind_password_file, '')"
        " FROM tenant_ldap l JOIN tenant t ON t.id = l.tenant_id"
        " ORDER BY t.name";
    sqlite3_stmt *st = NULL;
    int rc, bad = 0;

    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        log_error("chroot check: %s: %s", cfg->database, sqlite3_errmsg(db));
        return 1;
    }
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *tenant = (const char *)sqlite3_column_text(st, 0);
        const char *uris = (const char *)sqlite3_column_text(st, 1);

        if (tenant == NULL || uris == NULL)
            continue;
        if (strcasestr(uris, "ldapi:") != NULL) {
            log_error("chroot check: ldap tenant=%s uses ldapi://, whose "
                      "socket is named outside the chroot: use ldap:// or "
                      "ldaps://",
                      tenant);
            bad++;
        }
        bad += smtpd_jail_check_file(cfg, tenant, "ca_file",
                                     (const char *)sqlite3_column_text(st, 2));
        bad += smtpd_jail_check_file(cfg, tenant, "bind_password_file",
                                     (const char *)sqlite3_column_text(st, 3));
    }
    if (rc != SQLITE_DONE) {
        log_error("chroot check: %s: %s", cfg->database, sqlite3_errmsg(db));
        bad++;
    }
    sqlite3_finalize(st);
    return bad;
}

/* Run inside the chroot, as user: what the worker opens after start. The
 * number of problems (each logged). */
static int smtpd_jail_check(const struct cfg *cfg)
{
    static const char *const subs[] = {"tmp", "active", MAILGATE_SPOOL_DIR};
    char err[512], path[PATH_MAX];
    SSL_CTX *ctx;
    sqlite3 *db = NULL;
    size_t i;
    int bad = 0;

    ctx = tls_server_ctx_new(cfg->tls_cert, cfg->tls_key, err, sizeof err);
    if (ctx == NULL) {
        log_error("chroot check: %s", err);
        bad++;
    }
    tls_server_ctx_free(&ctx);
    for (i = 0; i < sizeof subs / sizeof subs[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", cfg->queue_dir, subs[i]);
        if (access(path, W_OK | X_OK) != 0) {
            log_error("chroot check: cannot write in %s: %s", path,
                      strerror(errno));
            bad++;
        }
    }
    if (access(cfg->run_dir, X_OK) != 0) {
        log_error("chroot check: cannot reach %s: %s", cfg->run_dir,
                  strerror(errno));
        bad++;
    }
    if (db_open(cfg->database, 0, &db, err, sizeof err) != 0) {
        log_error("chroot check: %s", err);
        return bad + 1;
    }
    bad += smtpd_jail_check_ldap(cfg, db);
    db_close(&db);
    return bad;
}

void smtpd_jail_prepare(struct cfg *cfg)
{
    struct stat st;
    pid_t pid;
    int status;

    if (stat(cfg->chroot, &st) != 0)
        log_fatal_errno(errno, "chroot %s", cfg->chroot);
    if (!S_ISDIR(st.st_mode) || st.st_uid != 0)
        log_fatal("chroot %s: must be a directory that belongs to root",
                  cfg->chroot);
    if (smtpd_jail_refresh(cfg) != 0)
        log_fatal("chroot %s: cannot prepare its etc/", cfg->chroot);
    pid = fork();
    if (pid < 0)
        log_fatal_errno(errno, "chroot check: cannot fork");
    if (pid == 0) {
        /* The child's own copy of cfg becomes the worker's view. */
        smtpd_jail_enter(cfg);
        _exit(smtpd_jail_check(cfg) == 0 ? 0 : 1);
    }
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR)
            log_fatal_errno(errno, "chroot check: waitpid");
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        log_fatal("chroot %s: the SMTP worker cannot work inside it (see "
                  "above)",
                  cfg->chroot);
    log_info("chroot %s: checked as %s inside; the SMTP worker runs there",
             cfg->chroot, cfg->user);
}
