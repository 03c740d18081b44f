/* smtp_gate: the change-password addresses that subgated accepts mail for
 * without AUTH (tenants whose `tenant reset --accept-in-gateway yes` is
 * set; docs/password-reset.md). A small cache of those addresses, read
 * from the database at start and then every SMTP_GATE_REFRESH_MS in the
 * thread pool, so that RCPT can be answered on the loop without a lookup.
 * At most SMTP_GATE_MAX addresses are kept. Loop thread only. */
#ifndef SG_SMTP_GATE_H
#define SG_SMTP_GATE_H

#include <uv.h>

#include "../common/cfg.h"

#define SMTP_GATE_REFRESH_MS 3000
#define SMTP_GATE_MAX 10000
/* Change-password requests one session may send before it is closed. */
#define SMTP_GATE_MAX_PER_SESSION 3

struct smtp_gate;

/* Reads the addresses once (a database that cannot be read leaves the
 * list empty, logged) and starts the refresh timer (unreferenced: it
 * keeps no loop alive). */
struct smtp_gate *smtp_gate_new(uv_loop_t *loop, const struct cfg *cfg);
/* 1 if addr (case-insensitive) is a change-password address accepted in
 * the gateway, else 0. */
int smtp_gate_is_address(const struct smtp_gate *g, const char *addr);
/* 1 if at least one such address is configured: only then is MAIL taken
 * before AUTH at all. */
int smtp_gate_active(const struct smtp_gate *g);
/* Stops refreshing and closes the timer; a running refresh finishes. */
void smtp_gate_stop(struct smtp_gate *g);
/* After the loop has ended. Sets *gp to NULL. */
void smtp_gate_free(struct smtp_gate **gp);

#endif
