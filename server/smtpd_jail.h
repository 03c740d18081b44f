/* smtpd_jail: the optional chroot of the SMTP worker (the `chroot` setting;
 * docs/security.md, "Chroot"). The SMTP worker is the one process that
 * reads what clients send before they authenticate; chrooted, a bug in
 * that code finds only the chroot directory's files.
 *
 * Everything the worker opens after start must be reachable inside:
 * database (with the -wal, -shm and journal files SQLite opens beside it by
 * name, later), queue_dir, run_dir (the signer's socket), tls_cert and
 * tls_key (read again on SIGHUP), and the files of LDAP tenants. cfg.c
 * checks the names of the first five; the start-up check below opens them.
 * What libraries read from fixed places is dealt with here: the time zone,
 * OpenSSL's and libldap's configuration are loaded before the chroot; the
 * name service and LDAP's CA bundle get copies in the chroot's etc/.
 *
 * Master side (root, no event loop): smtpd_jail_prepare() at start,
 * smtpd_jail_refresh() on SIGHUP. Worker side: smtpd_jail_enter(), right
 * after fork(). */
#ifndef SG_SMTPD_JAIL_H
#define SG_SMTPD_JAIL_H

#include <stddef.h>

#include "../common/cfg.h"

/* In the master, at start, as root, with cfg->chroot set: checks that the
 * directory is one root owns, refreshes its etc/
 * (smtpd_jail_refresh), then enters the chroot in a child exactly as the
 * worker will and checks there, as user, that the worker can read tls_cert
 * and tls_key, open the database, write in the queue, reach run_dir, and
 * read each LDAP tenant's files. Every problem is logged; any ends
 * subgated (log_fatal). cfg changes only in that child's copy. */
void smtpd_jail_prepare(struct cfg *cfg);

/* In the master (at start and on SIGHUP): copies /etc/hosts,
 * /etc/resolv.conf and the CA bundle that LDAP's TLS uses into the
 * chroot's etc/, and writes an etc/nsswitch.conf that names only the
 * sources the C library has built in. Directories there must belong to
 * root and be writable by root only; nothing is followed through a
 * symbolic link. 0, or -1 (logged). */
int smtpd_jail_refresh(const struct cfg *cfg);

/* In the SMTP worker right after fork(), as root: loads the time zone and
 * the configuration of OpenSSL and libldap, takes user's groups, chroots,
 * becomes user for good (and checks that root cannot come back), and
 * rewrites database, queue_dir, run_dir, tls_cert and tls_key in the
 * worker's own copy of cfg to their names inside. cfg->chroot stays set:
 * auth.c takes LDAP tenants' file names inside with it. Never returns on
 * failure (log_fatal). */
void smtpd_jail_enter(struct cfg *cfg);

#endif
