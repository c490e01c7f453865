/*
 * hello.c — the myriad demo app in C.
 *
 *   hello [--http ADDR]... [--fcgi ADDR]... [--https ADDR]... [--cert FILE --key FILE]...
 *         [--threads N] [--backend NAME] [--max-body BYTES]
 *         [--access-log PATH] [--root DIR]
 *         [--workers N] [--max-requests N] [--watchdog SECONDS] [--user NAME] [--status ADDR]...
 *
 * ADDR is HOST:PORT, [V6]:PORT, unix:PATH or fd:N (port 0 picks a free port). With no
 * listener flag it serves FastCGI on fd 0 when started by spawn-fcgi, else HTTP on
 * 127.0.0.1:8080 — unless socket-activated (systemd's LISTEN_FDS: an fd named "fcgi"
 * serves FastCGI, the others HTTP). Prints "listening http|fcgi|https ADDR" per listener; with
 * NOTIFY_SOCKET set it tells the manager READY=1 and a STATUS= line once serving,
 * STOPPING=1 when it drains, and WATCHDOG=1 every half WATCHDOG_USEC. SIGTERM/SIGINT: stop
 * accepting, finish in-flight requests, exit 0. Bad flags: usage on stderr, exit 2.
 * --https serves HTTPS with the --cert/--key pairs (PEM; the first pair is the default, the
 * others are chosen by SNI against their certificates' DNS names); a missing or unreadable
 * file or a key not matching its certificate: a message naming the file, exit 2. SIGHUP
 * reloads the certificates (new connections get them; on an error the old ones stay).
 * Under the supervisor the certificates are checked once before serving and loaded by each
 * worker (a SIGHUP replaces every worker: the new ones read them again).
 * --access-log PATH: one line per request (combined log format) to PATH, "-" for stderr;
 * SIGUSR1 opens PATH again (logrotate); a log that cannot be opened is a bad flag.
 * --root DIR: GET|HEAD /static/PATH serves DIR/PATH with the library's static file handler
 * (myriad_files_serve: conditionals, ranges, precompressed siblings, traversal refused);
 * without it /static/ is 404; a DIR that is not a directory is a bad flag.
 *
 * Routes, on a myriad router (the same over HTTP and FastCGI): GET|HEAD / ;
 * GET /hello/:name ; POST|PUT /echo ; GET /env ; GET /stream?chunks=N&bytes=B ;
 * GET /delay?ms=M ; GET /work?ms=M (on the library's work pool) ; GET /stats (the serving
 * loop's counters as JSON, like nginx's stub_status) ; POST /form (urlencoded or multipart) ;
 * GET /pid (the serving process's pid) ; GET|HEAD /static/PATH (with --root) ; GET /hang
 * (only with --watchdog: a handler that never returns, stuck in a bug) ; GET /ws (a
 * WebSocket echo: each message back as the same kind; a plain GET is 426) ; else 404, or
 * 405 with Allow for a known path and another
 * method.
 *
 * With --workers N (or any supervisor flag) a supervisor binds the listeners, prints them
 * once and runs N worker processes serving them (myriad_sup_run): SIGHUP replaces them all
 * (rolling), SIGUSR2 re-executes this program in place, SIGTERM drains them and exits 0;
 * --max-requests recycles workers, --watchdog kills one whose loop is stuck, --user drops
 * privileges in the workers (unknown user: exit 2), --status ADDR serves the pool's status.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "myriad.h"

#define S(lit) (lit), (sizeof(lit) - 1)

static void usage(const char *msg) {
    fprintf(stderr,
            "hello: %s\n"
            "usage: hello [--http ADDR]... [--fcgi ADDR]... [--https ADDR]... [--cert FILE --key FILE]...\n"
            "             [--threads N] [--backend NAME] [--max-body BYTES]\n"
            "             [--access-log PATH] [--root DIR]\n"
            "             [--workers N] [--max-requests N] [--watchdog SECONDS] [--user NAME]\n"
            "             [--status ADDR]...\n"
            "ADDR is HOST:PORT, [V6]:PORT, unix:PATH or fd:N, optionally followed by\n"
            "?mode=0660&owner=USER&group=GROUP (unix) or ?reuseport (TCP)\n",
            msg);
    exit(2);
}

static void die(const char *what, int code) {
    const char *detail = myriad_last_error_detail();
    fprintf(stderr, "hello: %s: %s\n", what, *detail ? detail : myriad_strerror(code));
    exit(1);
}

/* Sends a whole response; one that cannot be built (a header value the library refuses,
 * such as a Content-Type echoed from the request with a control byte in it) is answered 500
 * instead, so no request is left open. */
static int reply(myriad_req_t *req, int status, const char *ct, size_t ctl, const uint8_t *body, size_t len) {
    int rc = myriad_req_send(req, status, ct, ctl, body, len);
    if (rc == MYRIAD_EINVAL) {
        fprintf(stderr, "hello: cannot build a %d response (%s): answering 500\n", status, myriad_strerror(rc));
        rc = myriad_req_send(req, 500, S("text/plain"), (const uint8_t *)"Internal Server Error\n", 22);
    }
    if (rc == MYRIAD_EINVAL) rc = myriad_req_finish(req);
    return rc;
}

/* ---- /work on the library's work pool ---- */

struct job {
    myriad_req_t *req;
    unsigned ms;
    int n;
    char body[64];
};

/* On a pool thread: the CPU-bound part (here a sleep standing for it). */
static void work_run(void *ud) {
    struct job *j = (struct job *)ud;
    struct timespec ts = {(time_t)(j->ms / 1000), (long)(j->ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
    j->n = snprintf(j->body, sizeof j->body, "worked %u", j->ms);
}

/* Back on the loop's thread. */
static void work_done(myriad_loop_t *lp, int status, void *ud) {
    struct job *j = (struct job *)ud;
    (void)lp;
    if (status == MYRIAD_OK)
        reply(j->req, 200, S("text/plain"), (const uint8_t *)j->body, (size_t)j->n);
    else
        reply(j->req, 503, S("text/plain"), (const uint8_t *)"cancelled", 9);
    j->req = NULL; /* answered */
}

/* The job's destructor. A job dropped before its done ran (the loop was freed with the job
   still queued) owes its request an answer: myriad_req_send_async may be called from any
   thread and releases the handle when the loop is gone. */
static void job_free(void *ud) {
    struct job *j = (struct job *)ud;
    if (j->req) myriad_req_send_async(j->req, 503, S("text/plain"), (const uint8_t *)"cancelled", 9);
    free(j);
}

static void work_push(myriad_req_t *req, unsigned ms) {
    struct job *j = (struct job *)malloc(sizeof *j);
    if (!j) {
        reply(req, 503, S("text/plain"), (const uint8_t *)"busy", 4);
        return;
    }
    j->req = req;
    j->ms = ms;
    /* The pool's queue is bounded: a full one refuses at once (MYRIAD_EFULL). */
    if (myriad_work_queue(myriad_req_loop(req), work_run, work_done, j, job_free, NULL) != MYRIAD_OK) {
        free(j);
        reply(req, 503, S("text/plain"), (const uint8_t *)"busy", 4);
    }
}

/* ---- helpers ---- */

/* Reads an unsigned query parameter (default `def`, capped at `max`). */
static unsigned long param(myriad_req_t *req, const char *name, unsigned long def, unsigned long max) {
    const char *q;
    size_t qn;
    if (myriad_req_query(req, &q, &qn) != MYRIAD_OK) return def;
    size_t nl = strlen(name);
    size_t i = 0;
    while (i < qn) {
        size_t end = i;
        while (end < qn && q[end] != '&') end++;
        if (end - i > nl && memcmp(q + i, name, nl) == 0 && q[i + nl] == '=') {
            unsigned long v = 0;
            size_t k = i + nl + 1;
            if (k == end) return def;
            for (; k < end; k++) {
                if (q[k] < '0' || q[k] > '9') return def;
                v = v * 10 + (unsigned long)(q[k] - '0');
                if (v > max) return max;
            }
            return v;
        }
        i = end + 1;
    }
    return def;
}

/* ---- routes ---- */

static void echo_done(myriad_req_t *req, const uint8_t *data, size_t len, int status, void *ud) {
    char *ct = (char *)ud; /* "len:bytes" copied in the handler */
    if (status != MYRIAD_OK) {
        myriad_req_finish(req); /* aborted: just release it */
        return;
    }
    size_t ctlen = strlen(ct);
    reply(req, 200, ct, ctlen, data, len);
}

struct stream {
    myriad_req_t *req;
    unsigned long i, chunks, bytes;
    uint64_t timer;
    char *buf;
};

static void stream_free(void *ud) {
    struct stream *s = (struct stream *)ud;
    free(s->buf);
    free(s);
}

static void stream_tick(myriad_loop_t *lp, void *ud) {
    struct stream *s = (struct stream *)ud;
    if (myriad_req_is_aborted(s->req) == 1) {
        myriad_req_finish(s->req);
        myriad_timer_cancel(lp, s->timer); /* frees s */
        return;
    }
    if (myriad_req_queued(s->req) > 256 * 1024) return; /* slow reader: wait */
    memset(s->buf, 'a' + (int)(s->i % 26), s->bytes);
    myriad_req_write(s->req, (const uint8_t *)s->buf, s->bytes);
    myriad_req_flush(s->req);
    if (++s->i == s->chunks) {
        myriad_req_finish(s->req);
        myriad_timer_cancel(lp, s->timer); /* frees s */
    }
}

struct delay {
    myriad_req_t *req;
    unsigned long ms;
};

static void delay_fire(myriad_loop_t *lp, void *ud) {
    struct delay *d = (struct delay *)ud;
    char body[64];
    int n = snprintf(body, sizeof body, "delayed %lu", d->ms);
    (void)lp;
    reply(d->req, 200, S("text/plain"), (const uint8_t *)body, (size_t)n);
}

static void route_env(myriad_req_t *req) {
    /* The library gives the CGI variables sorted by name already. */
    int n = myriad_req_cgi_count(req);
    size_t cap = 256, len = 0;
    char *out = (char *)malloc(cap);
    for (int i = 0; out && i < n; i++) {
        const char *k, *v;
        size_t kl, vl;
        if (myriad_req_cgi_at(req, (size_t)i, &k, &kl, &v, &vl) != MYRIAD_OK) continue;
        while (len + kl + vl + 2 > cap) {
            char *bigger = (char *)realloc(out, cap *= 2);
            if (!bigger) { free(out); out = NULL; break; }
            out = bigger;
        }
        if (!out) break;
        memcpy(out + len, k, kl); len += kl;
        out[len++] = '=';
        memcpy(out + len, v, vl); len += vl;
        out[len++] = '\n';
    }
    reply(req, out ? 200 : 500, S("text/plain"), (const uint8_t *)out, out ? len : 0);
    free(out);
}

/* The counters of the loop serving this request (with --threads N, one of N loops). */
static void route_stats(myriad_req_t *req) {
    myriad_stats_t st;
    char body[512];
    int n;
    if (myriad_loop_stats(myriad_req_loop(req), &st) != MYRIAD_OK) {
        reply(req, 500, S("text/plain"), NULL, 0);
        return;
    }
#define U(x) (unsigned long long)st.x
    n = snprintf(body, sizeof body,
                 "{\"iterations\":%llu,\"wait\":%llu,\"ctl\":%llu,\"read\":%llu,"
                 "\"received\":%llu,\"write\":%llu,\"accept\":%llu,\"other\":%llu,"
                 "\"wakeups\":%llu,\"accepted\":%llu}\n",
                 U(iterations), U(wait), U(ctl), U(read), U(received), U(write), U(accept),
                 U(other), U(wakeups), U(accepted));
#undef U
    reply(req, 200, S("application/json"), (const uint8_t *)body, (size_t)n);
}

/* --watchdog: /hang is served. */
static int hang_route;
/* --root DIR: the static file handler (NULL: no /static/ route). */
static myriad_files_t *files;

/* ---- routes (registered on the router in main) ---- */

static void route_root(myriad_req_t *req, void *ud) {
    (void)ud;
    if (myriad_req_header_add(req, S("Content-Type"), S("text/plain")) != MYRIAD_OK ||
        myriad_req_write_static(req, (const uint8_t *)"Hello, World!", 13) != MYRIAD_OK)
        reply(req, 500, S("text/plain"), NULL, 0);
    else
        myriad_req_finish(req);
}

/* GET|HEAD /static/PATH — the raw (still percent-encoded) path below /static/ goes to the
 * handler, which decodes and checks it once; it answers every case and frees the request. */
static void route_static(myriad_req_t *req, void *ud) {
    const char *p;
    size_t n;
    (void)ud;
    if (myriad_req_path(req, &p, &n) != MYRIAD_OK || n < 8) {
        reply(req, 400, S("text/plain"), (const uint8_t *)"Bad Request", 11);
        return;
    }
    int rc = myriad_files_serve(files, req, p + 8, n - 8);
    if (rc != MYRIAD_OK) fprintf(stderr, "hello: /static/: %s\n", myriad_strerror(rc));
}

/* GET /hello/:name — the parameter comes percent-decoded ("a%2Fb" is "a/b"). */
static void route_hello(myriad_req_t *req, void *ud) {
    const char *name;
    size_t n;
    char body[512];
    (void)ud;
    if (myriad_req_param(req, S("name"), &name, &n) != MYRIAD_OK || n > 400) {
        reply(req, 400, S("text/plain"), (const uint8_t *)"Bad Request", 11);
        return;
    }
    int len = snprintf(body, sizeof body, "Hello, %.*s!", (int)n, name);
    reply(req, 200, S("text/plain"), (const uint8_t *)body, (size_t)len);
}

static void route_echo(myriad_req_t *req, void *ud) {
    const char *ct;
    size_t ctl;
    (void)ud;
    if (myriad_req_header(req, S("content-type"), &ct, &ctl) != MYRIAD_OK) {
        ct = "application/octet-stream";
        ctl = strlen(ct);
    }
    char *copy = (char *)malloc(ctl + 1);
    if (!copy) { reply(req, 500, S("text/plain"), NULL, 0); return; }
    memcpy(copy, ct, ctl);
    copy[ctl] = 0;
    if (myriad_req_read_body(req, echo_done, copy, free) != MYRIAD_OK) {
        free(copy);
        reply(req, 500, S("text/plain"), NULL, 0);
    }
}

static void route_env_h(myriad_req_t *req, void *ud) { (void)ud; route_env(req); }
static void route_stats_h(myriad_req_t *req, void *ud) { (void)ud; route_stats(req); }

static void route_stream(myriad_req_t *req, void *ud) {
    (void)ud;
    struct stream *s = (struct stream *)calloc(1, sizeof *s);
    if (!s) { reply(req, 500, S("text/plain"), NULL, 0); return; }
    s->req = req;
    s->chunks = param(req, "chunks", 1, 100000);
    s->bytes = param(req, "bytes", 1, 1 << 20);
    s->buf = (char *)malloc(s->bytes ? s->bytes : 1);
    myriad_req_header_add(req, S("Content-Type"), S("text/plain"));
    if (s->chunks == 0 || !s->buf) {
        myriad_req_finish(req);
        stream_free(s);
        return;
    }
    myriad_timer_start(myriad_req_loop(req), 0, 1, stream_tick, s, stream_free, &s->timer);
}

static void route_delay(myriad_req_t *req, void *ud) {
    (void)ud;
    struct delay *d = (struct delay *)malloc(sizeof *d);
    if (!d) { reply(req, 500, S("text/plain"), NULL, 0); return; }
    d->req = req;
    d->ms = param(req, "ms", 0, 60000);
    myriad_timer_start(myriad_req_loop(req), d->ms, 0, delay_fire, d, free, NULL);
}

static void route_work(myriad_req_t *req, void *ud) {
    (void)ud;
    work_push(req, (unsigned)param(req, "ms", 0, 60000));
}

static void route_pid(myriad_req_t *req, void *ud) {
    char body[32];
    (void)ud;
    int n = snprintf(body, sizeof body, "%ld", (long)getpid());
    myriad_req_send(req, 200, S("text/plain"), (const uint8_t *)body, (size_t)n);
}

static void route_hang(myriad_req_t *req, void *ud) {
    (void)req; (void)ud;
    for (;;) sleep(1); /* stuck for good: the supervisor's watchdog kills this worker */
}

/* POST /form — urlencoded or multipart: one line per field in the order received,
 * "NAME=VALUE", or for a file "NAME: FILENAME (SIZE bytes)" (file data is counted as it
 * streams in, never kept). A malformed body gets 400, a limit 413, another type 415. */
struct form {
    myriad_req_t *req;
    char *out;
    size_t len, cap;
    int file, oom;
    uint64_t size;
    char *name, *filename; /* the current part's, copied */
};

static void form_add(struct form *f, const char *p, size_t n) {
    if (f->oom) return;
    if (f->len + n > f->cap) {
        size_t cap = f->cap ? f->cap : 256;
        while (cap < f->len + n) cap *= 2;
        char *b = (char *)realloc(f->out, cap);
        if (!b) { f->oom = 1; return; }
        f->out = b;
        f->cap = cap;
    }
    memcpy(f->out + f->len, p, n);
    f->len += n;
}

static char *dup_part(const myriad_part_t *part, int (*get)(const myriad_part_t *, const char **, size_t *)) {
    const char *s;
    size_t n;
    if (get(part, &s, &n) != MYRIAD_OK) return NULL;
    char *c = (char *)malloc(n + 1);
    if (c) { memcpy(c, s, n); c[n] = 0; }
    return c;
}

static int form_event(int ev, const myriad_part_t *part, const uint8_t *data, size_t len, void *ud) {
    struct form *f = (struct form *)ud;
    if (ev == MYRIAD_FORM_PART) {
        free(f->name);
        free(f->filename);
        f->name = dup_part(part, myriad_part_name);
        f->filename = dup_part(part, myriad_part_filename);
        f->file = f->filename != NULL;
        f->size = 0;
        if (!f->name) f->oom = 1;
        else if (!f->file) { form_add(f, f->name, strlen(f->name)); form_add(f, "=", 1); }
    } else if (ev == MYRIAD_FORM_DATA) {
        if (f->file) f->size += len;
        else form_add(f, (const char *)data, len);
    } else if (ev == MYRIAD_FORM_PART_END) {
        if (f->file) {
            char line[64];
            form_add(f, f->name, strlen(f->name));
            form_add(f, ": ", 2);
            form_add(f, f->filename, strlen(f->filename));
            int n = snprintf(line, sizeof line, " (%llu bytes)\n", (unsigned long long)f->size);
            form_add(f, line, (size_t)n);
        } else {
            form_add(f, "\n", 1);
        }
    } else if (ev == MYRIAD_FORM_END) {
        if (f->oom) reply(f->req, 500, S("text/plain"), NULL, 0);
        else reply(f->req, 200, S("text/plain"), (const uint8_t *)f->out, f->len);
    } else if (ev == MYRIAD_EGONE) {
        myriad_req_finish(f->req); /* the client went away: just release it */
    } else { /* a malformed body or a limit: 400 / 413, with the reason */
        reply(f->req, myriad_http_status_of(ev), S("text/plain"), data, len);
    }
    return 0;
}

static void form_free(void *ud) {
    struct form *f = (struct form *)ud;
    free(f->out);
    free(f->name);
    free(f->filename);
    free(f);
}

static void route_form(myriad_req_t *req, void *ud) {
    (void)ud;
    struct form *f = (struct form *)calloc(1, sizeof *f);
    if (!f) { reply(req, 500, S("text/plain"), NULL, 0); return; }
    f->req = req;
    int rc = myriad_req_read_form(req, form_event, f, form_free);
    if (rc != MYRIAD_OK) {
        free(f);
        const char *msg = myriad_strerror(rc);
        reply(req, myriad_http_status_of(rc), S("text/plain"), (const uint8_t *)msg, strlen(msg));
    }
}

/* GET /ws — a WebSocket echo: each text or binary message comes back as the same kind
 * (pings are answered and a close is echoed with its code by the library; permessage-deflate
 * is accepted when offered). A request that is not a valid upgrade was answered by
 * myriad_ws_accept (426, 400...); the request handle is gone either way. */
static void ws_echo(myriad_ws_t *ws, int opcode, const uint8_t *data, size_t len, void *ud) {
    (void)ud;
    myriad_ws_send(ws, opcode, data, len);
}

static void route_ws(myriad_req_t *req, void *ud) {
    static const myriad_ws_callbacks_t cbs = {NULL, ws_echo, NULL, NULL};
    (void)ud;
    myriad_ws_accept(req, NULL, &cbs, NULL, NULL, NULL);
}

static myriad_router_t *build_router(void) {
    static const struct { const char *method, *pattern; myriad_handler_fn fn; } routes[] = {
        {"GET", "/", route_root},             {"GET", "/hello/:name", route_hello},
        {"POST", "/echo", route_echo},        {"PUT", "/echo", route_echo},
        {"GET", "/env", route_env_h},         {"GET", "/stream", route_stream},
        {"GET", "/delay", route_delay},       {"GET", "/work", route_work},
        {"GET", "/stats", route_stats_h},     {"POST", "/form", route_form},
        {"GET", "/pid", route_pid},           {"GET", "/hang", route_hang},
        {"GET", "/static/*path", route_static},
        {"GET", "/ws", route_ws},
    };
    myriad_router_t *r;
    int rc;
    if ((rc = myriad_router_new(&r)) != MYRIAD_OK) die("router", rc);
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        if (routes[i].fn == route_hang && !hang_route) continue;
        if (routes[i].fn == route_static && !files) continue;
        rc = myriad_router_add(r, routes[i].method, strlen(routes[i].method), routes[i].pattern,
                               strlen(routes[i].pattern), routes[i].fn, NULL, NULL);
        if (rc != MYRIAD_OK) die(routes[i].pattern, rc);
    }
    return r;
}

/* ---- main ---- */

static myriad_server_t *srv;

static void drained(myriad_loop_t *lp, void *ud) {
    (void)ud;
    myriad_loop_stop(lp);
}

/* sd_notify when a service manager listens (NOTIFY_SOCKET); a failure is not fatal. */
static void notify(const char *state, size_t len) {
    int rc = myriad_notify(state, len);
    if (rc < 0) fprintf(stderr, "hello: sd_notify: %s\n", myriad_strerror(rc));
}

static myriad_access_log_t *alog;

static void on_usr1(myriad_loop_t *lp, int signo, void *ud) {
    int rc;
    (void)lp; (void)signo; (void)ud;
    if (alog && (rc = myriad_access_log_reopen(alog)) != MYRIAD_OK)
        fprintf(stderr, "hello: reopening the access log: %s\n", myriad_strerror(rc));
}

static void on_signal(myriad_loop_t *lp, int signo, void *ud) {
    static int once;
    (void)lp; (void)signo; (void)ud;
    if (!once++) {
        notify(S("STOPPING=1\nSTATUS=draining"));
        myriad_server_shutdown(srv, drained, NULL);
    }
}

/* The library's warnings and errors (out of fds, a response timed out...) on stderr. */
static void log_stderr(int level, const char *msg, size_t len, void *ud) {
    (void)ud;
    fprintf(stderr, "hello: myriad %s: %.*s\n", level <= 1 ? "error" : "warning", (int)len, msg);
}

/* ---- TLS: --cert/--key pairs, reloaded on SIGHUP ---- */

#define MAX_CERTS 16
static const char *certs[MAX_CERTS], *keys[MAX_CERTS];
static int ncerts, nkeys;
static myriad_tls_config_t *tls;

/* A configuration with every --cert/--key pair; NULL (and the message on stderr) if a
 * file is missing, unreadable or not PEM, or a key does not match its certificate. */
static myriad_tls_config_t *load_certs(void) {
    myriad_tls_config_t *c;
    if (myriad_tls_config_new(&c) != MYRIAD_OK) return NULL;
    for (int i = 0; i < ncerts; i++) {
        if (myriad_tls_config_add_cert_files(c, certs[i], strlen(certs[i]), keys[i], strlen(keys[i])) != MYRIAD_OK) {
            fprintf(stderr, "hello: %s\n", myriad_tls_config_error(c));
            myriad_tls_config_free(c);
            return NULL;
        }
    }
    return c;
}

static void on_hup(myriad_loop_t *lp, int signo, void *ud) {
    (void)lp; (void)signo; (void)ud;
    myriad_tls_config_t *fresh = load_certs();
    if (!fresh) {
        fprintf(stderr, "hello: SIGHUP: certificates not reloaded\n");
        return;
    }
    if (myriad_tls_config_reload(tls, fresh) != MYRIAD_OK)
        fprintf(stderr, "hello: SIGHUP: %s\n", myriad_tls_config_error(tls));
    else
        fprintf(stderr, "hello: certificates reloaded\n");
    myriad_tls_config_free(fresh);
}

static int is_fcgi_listen_fd0(void) {
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    return getpeername(0, (struct sockaddr *)&ss, &len) == -1 && errno == ENOTCONN;
}

/* What the command line asked for. */
static struct {
    int proto[64];
    const char *addr[64];
    int naddr;
    const char *status[8];
    int nstatus;
    const char *backend;
    unsigned long threads;
    int supervised;
    long long workers, max_requests, watchdog;
    const char *user;
    const char *access_log;
    unsigned long long max_body;
    const char *https[64];
    int nhttps;
} cfg = {{0}, {0}, 0, {0}, 0, "", 1, 0, 1, 0, 0, NULL, NULL, 64ull << 20, {0}, 0};

/* Serves the listeners (a worker's, or the command line's) until SIGTERM/SIGINT drained. */
static int serve(myriad_worker_t *w) {
    myriad_loop_t *lp = NULL;
    int rc;
    const char *backend = cfg.backend;

    myriad_set_logger(log_stderr, NULL, 2);
    if ((rc = myriad_server_new(&srv)) != MYRIAD_OK) die("server", rc);
    if (w) {
        /* The worker loads the certificates itself: after a SIGHUP every worker is new. */
        if (ncerts && !(tls = load_certs())) exit(2);
        if ((rc = myriad_worker_listen_tls(w, srv, tls)) != MYRIAD_OK) die("worker listeners", rc);
    } else {
        for (int i = 0; i < cfg.naddr; i++) {
            rc = myriad_server_listen(srv, cfg.proto[i], cfg.addr[i], strlen(cfg.addr[i]));
            if (rc != MYRIAD_OK) usage(*myriad_last_error_detail() ? myriad_last_error_detail() : myriad_strerror(rc));
        }
        if (cfg.nhttps) {
            if (!(tls = load_certs())) exit(2);
            for (int i = 0; i < cfg.nhttps; i++) {
                rc = myriad_server_listen_tls(srv, cfg.https[i], strlen(cfg.https[i]), tls);
                if (rc != MYRIAD_OK) usage(rc == MYRIAD_ETLS ? myriad_tls_config_error(tls) : myriad_strerror(rc));
            }
        }
        if (!cfg.naddr && !cfg.nhttps) {
            /* Socket activation (systemd, systemd-socket-activate): the fds passed, "fcgi" by
               name serving FastCGI. Else spawn-fcgi's fd 0, else the default address. */
            rc = myriad_server_listen_inherited(srv, 1);
            if (rc < 0) die("cannot serve the passed fds", rc);
            if (rc == 0 && is_fcgi_listen_fd0()) myriad_server_listen(srv, MYRIAD_FCGI, S("fd:0"));
            else if (rc == 0) myriad_server_listen(srv, MYRIAD_HTTP, S("127.0.0.1:8080"));
        }
    }
    if (cfg.access_log) {
        rc = myriad_access_log_new(&alog, cfg.access_log, strlen(cfg.access_log), NULL, 0);
        if (rc != MYRIAD_OK) {
            fprintf(stderr, "hello: --access-log %s: %s\n", cfg.access_log, myriad_strerror(rc));
            exit(2);
        }
        myriad_server_set_access_log(srv, alog);
    }
    if ((rc = myriad_loop_new_backend(&lp, backend, strlen(backend))) != MYRIAD_OK) usage(myriad_strerror(rc));
    /* Signals before any thread starts: threads inherit the blocked mask. */
    myriad_signal_watch(lp, SIGTERM, on_signal, NULL, NULL, NULL);
    myriad_signal_watch(lp, SIGINT, on_signal, NULL, NULL, NULL);
    myriad_signal_watch(lp, SIGUSR1, on_usr1, NULL, NULL, NULL);
    if (tls) myriad_signal_watch(lp, SIGHUP, on_hup, NULL, NULL, NULL);

    myriad_server_set_threads(srv, (uint32_t)cfg.threads);
    myriad_server_set_limit(srv, MYRIAD_MAX_BODY, cfg.max_body);
    myriad_router_t *router = build_router();
    myriad_server_set_handler(srv, myriad_router_handler, router, NULL);
    if ((rc = myriad_server_start(srv, lp)) != MYRIAD_OK) die("listen", rc);
    char status[1024];
    size_t sl = (size_t)snprintf(status, sizeof status, "READY=1\nSTATUS=serving");
    for (size_t i = 0; !w && i < myriad_server_listener_count(srv); i++) {
        char addr[256];
        int proto;
        if (myriad_server_listener_addr(srv, i, &proto, addr, sizeof addr) >= 0) {
            const char *name = proto == MYRIAD_HTTP ? "http" : proto == MYRIAD_HTTPS ? "https" : "fcgi";
            printf("listening %s %s\n", name, addr);
            if (sl < sizeof status)
                sl += (size_t)snprintf(status + sl, sizeof status - sl, "%s %s %s", i ? "," : "", name, addr);
        }
    }
    fflush(stdout);
    if (!w) {
        /* A worker's readiness and watchdog are its supervisor's business (no NOTIFY_SOCKET). */
        if (sl < sizeof status)
            sl += (size_t)snprintf(status + sl, sizeof status - sl, " (%lu thread%s)", cfg.threads,
                                   cfg.threads > 1 ? "s" : "");
        notify(status, sl < sizeof status ? sl : sizeof status - 1);
        /* WATCHDOG=1 from this loop's timers when the manager asks for it (WatchdogSec=). */
        if ((rc = myriad_watchdog_start(lp, NULL)) < 0) die("watchdog", rc);
    }

    rc = myriad_loop_run(lp);

    myriad_server_free(srv);
    myriad_router_free(router);
    myriad_tls_config_free(tls);
    myriad_access_log_free(alog);
    myriad_loop_free(lp);
    myriad_files_free(files);
    return rc == MYRIAD_OK ? 0 : 1;
}

static int worker_main(myriad_worker_t *w, void *ud) {
    (void)ud;
    return serve(w);
}

/* --workers: bind once, print the addresses once, run the workers. */
static int supervise(void) {
    myriad_sup_t *sup;
    int rc;
    if ((rc = myriad_sup_new(&sup)) != MYRIAD_OK) die("supervisor", rc);
    if (cfg.nhttps) { /* a bad certificate file: exit 2 before anything is served */
        myriad_tls_config_t *check = load_certs();
        if (!check) exit(2);
        myriad_tls_config_free(check);
    }
    if ((rc = myriad_sup_set(sup, MYRIAD_SUP_WORKERS, cfg.workers)) != MYRIAD_OK) usage("--workers takes 1..1024");
    myriad_sup_set(sup, MYRIAD_SUP_MAX_REQUESTS, cfg.max_requests);
    myriad_sup_set(sup, MYRIAD_SUP_WATCHDOG_MS, cfg.watchdog * 1000);
    if (cfg.user && (rc = myriad_sup_set_user(sup, cfg.user, strlen(cfg.user), NULL, 0)) != MYRIAD_OK) {
        fprintf(stderr, "hello: --user %s: %s\n", cfg.user,
                rc == MYRIAD_ENOTFOUND ? "unknown user" : myriad_strerror(rc));
        exit(2);
    }
    for (int i = 0; i < cfg.naddr; i++) {
        rc = myriad_sup_listen(sup, cfg.proto[i], cfg.addr[i], strlen(cfg.addr[i]));
        if (rc == MYRIAD_EADDR || rc == MYRIAD_EINVAL) usage(myriad_strerror(rc));
        if (rc != MYRIAD_OK) die(cfg.addr[i], rc);
    }
    /* No listener flag: the fds of socket activation (shared by every worker), else the
       default address. */
    for (int i = 0; i < cfg.nhttps; i++) {
        rc = myriad_sup_listen(sup, MYRIAD_HTTPS, cfg.https[i], strlen(cfg.https[i]));
        if (rc == MYRIAD_EADDR || rc == MYRIAD_EINVAL) usage(myriad_strerror(rc));
        if (rc != MYRIAD_OK) die(cfg.https[i], rc);
    }
    if (!cfg.naddr && !cfg.nhttps && (rc = myriad_sup_listen_inherited(sup)) < 0)
        die(*myriad_last_error_detail() ? myriad_last_error_detail() : "socket activation", rc);
    if (!cfg.naddr && !cfg.nhttps && rc == 0 && (rc = myriad_sup_listen(sup, MYRIAD_HTTP, S("127.0.0.1:8080"))) != MYRIAD_OK)
        die("127.0.0.1:8080", rc);
    for (int i = 0; i < cfg.nstatus; i++) {
        rc = myriad_sup_status_listen(sup, cfg.status[i], strlen(cfg.status[i]));
        if (rc == MYRIAD_EADDR || rc == MYRIAD_EINVAL) usage(myriad_strerror(rc));
        if (rc != MYRIAD_OK) die(cfg.status[i], rc);
    }
    for (size_t i = 0; i < myriad_sup_listener_count(sup); i++) {
        char addr[256];
        int proto;
        if (myriad_sup_listener_addr(sup, i, &proto, addr, sizeof addr) >= 0)
            printf("listening %s %s\n",
                   proto == MYRIAD_HTTP    ? "http"
                   : proto == MYRIAD_HTTPS ? "https"
                   : proto == MYRIAD_FCGI  ? "fcgi"
                                           : "status",
                   addr);
    }
    fflush(stdout);
    rc = myriad_sup_run(sup, worker_main, NULL);
    myriad_sup_free(sup);
    return rc == MYRIAD_OK ? 0 : 1;
}

static long long number(const char *s, long long lo, long long hi, const char *msg) {
    char *end;
    long long v = strtoll(s, &end, 10);
    if (!*s || *end || v < lo || v > hi) usage(msg);
    return v;
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        int proto = 0;
        if (strcmp(argv[i], "--http") == 0) proto = MYRIAD_HTTP;
        else if (strcmp(argv[i], "--fcgi") == 0) proto = MYRIAD_FCGI;
        if (proto) {
            if (++i == argc) usage("missing ADDR");
            if (cfg.naddr == 64) usage("too many listeners");
            cfg.proto[cfg.naddr] = proto;
            cfg.addr[cfg.naddr++] = argv[i];
        } else if (strcmp(argv[i], "--https") == 0) {
            if (++i == argc) usage("missing ADDR");
            if (cfg.nhttps == 64) usage("too many --https");
            cfg.https[cfg.nhttps++] = argv[i];
        } else if (strcmp(argv[i], "--cert") == 0 || strcmp(argv[i], "--key") == 0) {
            int cert = argv[i][2] == 'c';
            if (++i == argc) usage("missing FILE");
            if ((cert ? ncerts : nkeys) == MAX_CERTS) usage("too many certificates");
            if (cert) certs[ncerts++] = argv[i];
            else keys[nkeys++] = argv[i];
            if (nkeys > ncerts || ncerts > nkeys + 1) usage("--cert FILE --key FILE go in pairs");
        } else if (strcmp(argv[i], "--threads") == 0) {
            if (++i == argc) usage("missing N");
            cfg.threads = (unsigned long)number(argv[i], 1, 256, "--threads takes 1..256");
        } else if (strcmp(argv[i], "--backend") == 0) {
            if (++i == argc) usage("missing NAME");
            cfg.backend = argv[i];
        } else if (strcmp(argv[i], "--root") == 0) {
            if (++i == argc) usage("missing DIR");
            myriad_files_free(files); /* (the last --root wins) */
            files = NULL;
            int rc = myriad_files_new(argv[i], strlen(argv[i]), &files);
            if (rc != MYRIAD_OK) usage(rc == MYRIAD_EFILES_ROOT ? myriad_last_error_detail() : myriad_strerror(rc));
        } else if (strcmp(argv[i], "--access-log") == 0) {
            if (++i == argc) usage("missing PATH");
            cfg.access_log = argv[i];
        } else if (strcmp(argv[i], "--workers") == 0) {
            if (++i == argc) usage("missing N");
            cfg.workers = number(argv[i], 1, 1024, "--workers takes 1..1024");
            cfg.supervised = 1;
        } else if (strcmp(argv[i], "--max-requests") == 0) {
            if (++i == argc) usage("missing N");
            cfg.max_requests = number(argv[i], 0, INT64_MAX, "--max-requests takes a number");
            cfg.supervised = 1;
        } else if (strcmp(argv[i], "--watchdog") == 0) {
            if (++i == argc) usage("missing SECONDS");
            cfg.watchdog = number(argv[i], 1, 86400, "--watchdog takes 1..86400 seconds");
            cfg.supervised = hang_route = 1;
        } else if (strcmp(argv[i], "--user") == 0) {
            if (++i == argc) usage("missing NAME");
            cfg.user = argv[i];
            cfg.supervised = 1;
        } else if (strcmp(argv[i], "--status") == 0) {
            if (++i == argc) usage("missing ADDR");
            if (cfg.nstatus == 8) usage("too many status listeners");
            cfg.status[cfg.nstatus++] = argv[i];
            cfg.supervised = 1;
        } else if (strcmp(argv[i], "--max-body") == 0) {
            char *end;
            if (++i == argc) usage("missing BYTES");
            cfg.max_body = strtoull(argv[i], &end, 10);
            if (*end || argv[i][0] < '0' || argv[i][0] > '9' || cfg.max_body < 1) usage("--max-body takes a byte count");
        } else {
            usage("unknown argument");
        }
    }
    if (ncerts != nkeys) usage("--cert FILE --key FILE go in pairs");
    if (cfg.nhttps && !ncerts) usage("--https needs --cert FILE --key FILE");
    return cfg.supervised ? supervise() : serve(NULL);
}
