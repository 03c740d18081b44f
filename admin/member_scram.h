/* member_scram: stores a member's SCRAM-SHA-256 keys next to the password
 * hash (table member_scram), for `subgate member add|passwd`. */
#ifndef SG_MEMBER_SCRAM_H
#define SG_MEMBER_SCRAM_H

#include "../common/scram_keys.h"
#include "admin.h"

/* Replaces the keys of the member whose primary address is address; hash
 * is the password hash stored with the same password (the keys count only
 * while member.password_hash still equals it). Call inside the caller's
 * transaction. ADMIN_OK or ADMIN_FAIL (printed). */
int member_scram_store(struct admin_ctx *ctx, const char *address,
                       const struct scram_keys *k, const char *hash);

#endif
