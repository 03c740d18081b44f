/* jail: file names as a chrooted process sees them. The SMTP worker may run
 * chrooted (the `chroot` setting, server/smtpd_jail.c); every file it opens
 * is configured by its name outside, and becomes inside the name with the
 * chroot directory taken off the front: /var/lib/subgate/queue under
 * /var/lib/subgate is /queue. The check is on the text of the names, with
 * no file system access: symbolic links are not followed (inside the
 * chroot they resolve against its root, which the start-up check of
 * smtpd_jail finds out). Pure; any thread. */
#ifndef SG_JAIL_H
#define SG_JAIL_H

#include <stddef.h>

/* 0 when root may be a chroot directory: an absolute name without "." or
 * ".." components, other than "/" itself. -1 with *why_r (static text)
 * otherwise. */
int jail_root_check(const char *root, const char **why_r);

/* The name that path, as named outside, has inside a chroot at root: the
 * rest after root, or "/" for root itself. Repeated and trailing slashes
 * do not matter. 0 with the name in out; -1 with *why_r (static text)
 * when root is not valid (jail_root_check), path is not absolute, has a
 * "." or ".." component, lies outside root, or does not fit in outlen. */
int jail_path(const char *root, const char *path, char *out, size_t outlen,
              const char **why_r);

#endif
