/* passwd: password hashes with libxcrypt (yescrypt, "$y$"). Slow on
 * purpose: call from a worker thread, never the event loop. Any thread. */
#ifndef SG_PASSWD_H
#define SG_PASSWD_H

#include <stddef.h>

/* Hashes pw with a fresh salt into out. 0 or -1 (no entropy, libxcrypt
 * failure). */
int passwd_hash(const char *pw, char *out, size_t outlen);
/* 1 pw matches hash, 0 not (also for a malformed hash). Constant-time
 * compare. hash NULL: runs a dummy hash of the same cost and returns 0, so
 * an unknown login takes as long as a wrong password. */
int passwd_verify(const char *pw, const char *hash);
/* A random password of len characters from an unambiguous alphabet into
 * out (outlen > len). 0 or -1. */
int passwd_random(char *out, size_t outlen, size_t len);

#endif
