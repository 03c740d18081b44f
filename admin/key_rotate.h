/* key_rotate: `subgate key rotate DOMAIN [--force]` and `subgate key
 * rotate --due`, the schedule of the key lifecycle (docs/keys.md). A run
 * moves every key whose time has come one or more steps:
 *
 *   start      a new pending key per algorithm when the active one has
 *              signed for rotate_after (--due) or at once (rotate DOMAIN)
 *   publish    the domain's records by RFC 2136 (when it has settings)
 *   published  pending keys whose records every server serves
 *   active     a published key after publish_lead, still served; the old
 *              key of its algorithm is retired
 *   revoked    a retired key after retire_for (--due)
 *   revealed   a revoked key's private key after reveal_after (--due)
 *   deleted    a revoked key after revoke_for, once revealed (--due)
 *
 * It never waits: run it again (a timer runs --due) to go on. Output: one
 * line per move, "DOMAIN<TAB>SELECTOR<TAB>ALGO<TAB>STATE". */
#ifndef SG_ADMIN_KEY_ROTATE_H
#define SG_ADMIN_KEY_ROTATE_H

#include "admin.h"

/* The `key rotate` command (argv[0] is "rotate"). */
int keyrot_cmd(struct admin_ctx *ctx, int argc, char **argv);

#endif
