/* smtp_txn_gate: the end of DATA of a change-password request taken
 * without AUTH (smtp_cmd_mail_gate). The message is not signed and not
 * relayed: it is written durably to <queue_dir>/mailgate/ in the thread
 * pool, where the mailgate worker hands it to `subgate mailgate`. The
 * session waits until the file is written, then answers. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/log.h"
#include "mailgate_spool.h"
#include "smtp_data.h"
#include "smtp_session.h"
#include "smtp_txn.h"

#define GATE_ESC (4 * SG_LOG_MAX_PEER_TEXT + 4)

static const char gate_reply_queue[] =
    "451 4.3.0 Queue write failed, try again later";

static void gate_work(uv_work_t *w)
{
    struct smtp_session *s = w->data;
    struct smtp_txn *t = &s->txn;

    t->commit_rc =
        mailgate_spool_write(s->srv->cfg->queue_dir, t->qid, t->sender,
                             t->rcpt[0], t->msg, t->msglen);
}

static void gate_written(uv_work_t *w, int status)
{
    struct smtp_session *s = w->data;
    struct smtp_txn *t = &s->txn;
    char e1[GATE_ESC], e2[GATE_ESC], reply[64];

    s->pending--;
    if (status != 0)
        t->commit_rc = status;
    if (t->commit_rc != 0) {
        log_error_errno(-t->commit_rc, "%s: mailgate spool write failed",
                        t->qid);
        if (!smtp_session_release(s))
            smtp_txn_finish(s, gate_reply_queue, 0);
        return;
    }
    /* Written: it is handled even if the client has gone. */
    log_info("%s: chpasswd request from=<%s> to=<%s> client=[%s] "
             "session=%s size=%zu",
             t->qid, log_escape(t->sender, strlen(t->sender), e1, GATE_ESC),
             log_escape(t->rcpt[0], strlen(t->rcpt[0]), e2, GATE_ESC),
             s->client_ip, s->id, t->msglen);
    s->nmsgs++;
    if (smtp_session_release(s))
        return;
    snprintf(reply, sizeof(reply), "250 2.0.0 Ok: queued as %s", t->qid);
    smtp_txn_finish(s, reply, 0);
}

void smtp_txn_gate_end(struct smtp_session *s)
{
    struct smtp_txn *t = &s->txn;
    enum smtp_data_err e = smtp_data_error(s->data);
    int rc;

    SG_ASSERT(t->gate && t->nrcpt == 1);
    if (e != SMTP_DATA_OK) {
        log_warn("%s: reject code=%.3s reason=\"%s\" client=%s", t->qid,
                 smtp_data_error_reply(e), smtp_data_error_reply(e) + 10,
                 s->client);
        smtp_txn_finish(s, smtp_data_error_reply(e), 1);
        return;
    }
    t->metrics_t0 = uv_hrtime();
    t->msg = smtp_data_steal(s->data, &t->msglen);
    t->work.data = s;
    rc = uv_queue_work(s->srv->loop, &t->work, gate_work, gate_written);
    if (rc != 0) {
        log_error("%s: mailgate spool write failed: %s", t->qid,
                  uv_strerror(rc));
        smtp_txn_finish(s, gate_reply_queue, 1);
        return;
    }
    s->pending++;
    smtp_session_wait(s);
}
