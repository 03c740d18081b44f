/* smtp_gate: cache of the change-password addresses accepted in the
 * gateway; see smtp_gate.h. */
#include "smtp_gate.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../common/db.h"
#include "../common/log.h"
#include "../common/xalloc.h"

struct smtp_gate_list {
    char **addr; /* owned strings */
    size_t n;
};

struct smtp_gate {
    uv_loop_t *loop;            /* borrowed */
    const struct cfg *cfg;      /* borrowed */
    uv_timer_t timer;           /* data = this */
    uv_work_t work;             /* data = this */
    sqlite3 *db;                /* owned; used by one refresh at a time */
    struct smtp_gate_list cur;  /* loop: what RCPT sees */
    struct smtp_gate_list next; /* pool: being read */
    int next_ok;                /* the read succeeded */
    int busy;                   /* a refresh runs */
    int stopped;
    int failed_logged; /* a failed read was logged; once until it works */
};

static void gate_list_clear(struct smtp_gate_list *l)
{
    size_t i;

    for (i = 0; i < l->n; i++)
        free(l->addr[i]);
    free(l->addr);
    l->addr = NULL;
    l->n = 0;
}

/* Reads the list into g->next. 0 or -1. Blocking (thread pool). */
static int gate_read(struct smtp_gate *g)
{
    static const char sql[] = "SELECT address FROM tenant_reset "
                              "WHERE accept_in_gateway = 1 LIMIT ?";
    sqlite3_stmt *st = NULL;
    size_t cap = 0;
    char err[256];
    int rc;

    gate_list_clear(&g->next);
    if (g->db == NULL &&
        db_open(g->cfg->database, 0, &g->db, err, sizeof(err)) != 0)
        return -1;
    if (sqlite3_prepare_v2(g->db, sql, -1, &st, NULL) != SQLITE_OK)
        return -1;
    sqlite3_bind_int(st, 1, SMTP_GATE_MAX);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *a = (const char *)sqlite3_column_text(st, 0);
        if (a == NULL || strlen(a) > SG_MAX_PATH)
            continue;
        if (g->next.n == cap) {
            cap = cap > 0 ? 2 * cap : 16;
            g->next.addr = xrealloc(g->next.addr, cap * sizeof(char *));
        }
        g->next.addr[g->next.n++] = xstrdup(a);
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

static void gate_work(uv_work_t *w)
{
    struct smtp_gate *g = w->data;

    g->next_ok = gate_read(g) == 0;
}

/* Takes the list just read, or keeps the old one if the read failed. */
static void gate_take(struct smtp_gate *g)
{
    if (!g->next_ok) {
        gate_list_clear(&g->next);
        if (!g->failed_logged)
            log_error("smtpd: cannot read the change-password addresses "
                      "from %s; keeping %zu",
                      g->cfg->database, g->cur.n);
        g->failed_logged = 1;
        return;
    }
    g->failed_logged = 0;
    gate_list_clear(&g->cur);
    g->cur = g->next;
    memset(&g->next, 0, sizeof(g->next));
}

static void gate_done(uv_work_t *w, int status)
{
    struct smtp_gate *g = w->data;

    g->busy = 0;
    if (status != 0)
        g->next_ok = 0;
    gate_take(g);
}

static void gate_on_timer(uv_timer_t *t)
{
    struct smtp_gate *g = t->data;

    if (g->busy || g->stopped)
        return;
    g->work.data = g;
    if (uv_queue_work(g->loop, &g->work, gate_work, gate_done) == 0)
        g->busy = 1;
}

struct smtp_gate *smtp_gate_new(uv_loop_t *loop, const struct cfg *cfg)
{
    struct smtp_gate *g = xcalloc(1, sizeof(*g));

    g->loop = loop;
    g->cfg = cfg;
    g->next_ok = gate_read(g) == 0;
    gate_take(g);
    uv_timer_init(loop, &g->timer);
    g->timer.data = g;
    uv_timer_start(&g->timer, gate_on_timer, SMTP_GATE_REFRESH_MS,
                   SMTP_GATE_REFRESH_MS);
    uv_unref((uv_handle_t *)&g->timer);
    return g;
}

int smtp_gate_is_address(const struct smtp_gate *g, const char *addr)
{
    size_t i;

    if (g == NULL)
        return 0;
    for (i = 0; i < g->cur.n; i++) {
        if (strcasecmp(g->cur.addr[i], addr) == 0)
            return 1;
    }
    return 0;
}

int smtp_gate_active(const struct smtp_gate *g)
{
    return g != NULL && g->cur.n > 0;
}

void smtp_gate_stop(struct smtp_gate *g)
{
    if (g == NULL || g->stopped)
        return;
    g->stopped = 1;
    uv_close((uv_handle_t *)&g->timer, NULL);
}

void smtp_gate_free(struct smtp_gate **gp)
{
    struct smtp_gate *g = *gp;

    if (g == NULL)
        return;
    SG_ASSERT(!g->busy);
    gate_list_clear(&g->cur);
    gate_list_clear(&g->next);
    db_close(&g->db);
    free(g);
    *gp = NULL;
}
