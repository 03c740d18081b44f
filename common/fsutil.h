/* fsutil: small file system steps shared by the programs. Any thread. */
#ifndef SG_FSUTIL_H
#define SG_FSUTIL_H

/* fsync()s the directory dir so that a rename, link or unlink in it is
 * durable. 0 or -errno. */
int fsutil_sync_dir(const char *dir);

#endif
