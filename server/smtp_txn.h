/* smtp_txn: what the end-of-DATA handlers (smtp_txn.c, smtp_txn_gate.c)
 * share; the session's view of a transaction is in smtp_session.h. */
#ifndef SG_SMTP_TXN_H
#define SG_SMTP_TXN_H

struct smtp_session;

/* Answers the end of DATA with reply, counts the message, ends the
 * transaction and goes back to reading commands: from a handler
 * (in_handler) the session loop goes on by itself, from a callback it
 * has to be resumed. */
void smtp_txn_finish(struct smtp_session *s, const char *reply, int in_handler);

#endif
