/* member_scram: SCRAM keys of a member; see member_scram.h. */
#include "member_scram.h"

int member_scram_store(struct admin_ctx *ctx, const char *address,
                       const struct scram_keys *k, const char *hash)
{
    sqlite3_stmt *st;

    if (admin_prepare(ctx,
                      "INSERT OR REPLACE INTO member_scram(member_id,"
                      " iterations, salt, stored_key, server_key,"
                      " password_hash) SELECT id, ?2, ?3, ?4, ?5, ?6"
                      " FROM member WHERE address = ?1",
                      &st) != 0)
        return ADMIN_FAIL;
    sqlite3_bind_text(st, 1, address, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, k->iterations);
    sqlite3_bind_blob(st, 3, k->salt, (int)k->salt_len, SQLITE_STATIC);
    sqlite3_bind_blob(st, 4, k->stored_key, SCRAM_KEY_LEN, SQLITE_STATIC);
    sqlite3_bind_blob(st, 5, k->server_key, SCRAM_KEY_LEN, SQLITE_STATIC);
    sqlite3_bind_text(st, 6, hash, -1, SQLITE_STATIC);
    return admin_step_done(ctx, st, "storing SCRAM keys");
}
