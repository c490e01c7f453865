/*
 * proxy.c — an HTTP/1.1 front that forwards every request to one upstream HTTP server.
 *
 *   proxy --upstream ADDR [--http ADDR]... [--fcgi ADDR]... [--timeout MS]
 *         [--upstream-tls] [--upstream-ca FILE] [--upstream-name NAME]
 *
 * --upstream-tls: the upstream speaks HTTPS; its certificate is verified against the
 * system's CA roots, or those of --upstream-ca, for NAME (default: the host of ADDR),
 * which is also sent as SNI. A bad CA file: its name on stderr, exit 2.
 * ADDR is HOST:PORT (names are resolved off the loop), [V6]:PORT, unix:PATH or fd:N.
 * Prints "listening http|fcgi ADDR" per listener (default: HTTP on 127.0.0.1:8081).
 *
 * - Upstream connections are kept alive and reused (an idle pool); a response that did not
 *   end cleanly (close-delimited, Connection: close, an error) retires its connection.
 * - Request bodies stream to the upstream as they arrive (Content-Length passed through, a
 *   chunked upload re-chunked); responses stream back, Content-Length or chunked or
 *   close-delimited, paced by the client: the upstream is paused while 256 KiB wait for
 *   the client and resumed when its output drains (myriad_req_on_drain).
 * - A client that goes away aborts its upstream connection at once (no leaked fd, no
 *   callback after free); an upstream that fails gives 502 (504 on timeout), or, once the
 *   head was sent, cuts the response short (myriad_req_abort): no client takes a
 *   truncated body for a whole one.
 * SIGTERM/SIGINT: stop accepting, finish in-flight requests, exit 0.
 */
#define _POSIX_C_SOURCE 200809L
#include <ctype.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "myriad.h"

#define S(lit) (lit), (sizeof(lit) - 1)
#define HIGH_WATER (256 * 1024)
#define MAX_HEAD (32 * 1024)
#define POOL_MAX 64

static const char *upstream = NULL;
static uint64_t timeout_ms = 10000;
/* --upstream-tls: the TLS client configuration, and the name verified (NULL: the host). */
static myriad_tls_config_t *up_tls = NULL;
static const char *up_name = NULL;
static myriad_server_t *srv;

/* ---- the idle pool ---- */

static myriad_stream_t *pool[POOL_MAX];
static int pool_n;

static void pool_remove(myriad_stream_t *s) {
    for (int i = 0; i < pool_n; i++)
        if (pool[i] == s) { pool[i] = pool[--pool_n]; return; }
}

/* An idle upstream must stay silent: any data, EOF or timeout retires it. */
static size_t idle_data(myriad_stream_t *s, const uint8_t *d, size_t n, void *ud) {
    (void)d; (void)ud;
    pool_remove(s);
    myriad_stream_abort(s);
    return n;
}

static void idle_event(myriad_stream_t *s, int ev, int err, void *ud) {
    (void)err; (void)ud;
    pool_remove(s);
    if (ev != MYRIAD_STREAM_CLOSED) myriad_stream_abort(s);
}

static void pool_put(myriad_stream_t *s) {
    if (pool_n == POOL_MAX) { myriad_stream_close(s); return; }
    myriad_stream_set_callbacks(s, idle_data, idle_event, NULL, NULL);
    myriad_stream_set_timeouts(s, 30000, 0);
    pool[pool_n++] = s;
}

/* ---- one proxied exchange ---- */

enum body { B_NONE, B_LENGTH, B_CHUNKED, B_CLOSE };
enum chunk { C_SIZE, C_DATA, C_DATA_CRLF, C_TRAILER };

struct px {
    int refs;                /* the upstream stream's userdata + the request body callback */
    myriad_req_t *req;       /* NULL once finished */
    myriad_stream_t *up;     /* NULL once detached */
    int is_head, up_chunked_req, head_done, reusable, paused;
    enum body body;
    uint64_t left;           /* B_LENGTH: bytes left; B_CHUNKED: of this chunk */
    enum chunk cs;
};

static void px_unref(void *p) {
    struct px *x = (struct px *)p;
    if (--x->refs == 0) free(x);
}

/* Ends the client's response: whole (status 0), or failed with `status`: an error page if
 * nothing was sent yet, else cut short (myriad_req_abort) so that the client does not take
 * the truncated body for a whole one. */
static void finish(struct px *x, int status, const char *msg) {
    if (!x->req) return;
    if (!status)
        myriad_req_finish(x->req);
    else if (!x->head_done)
        myriad_req_send(x->req, status, S("text/plain"), (const uint8_t *)msg, strlen(msg));
    else
        myriad_req_abort(x->req);
    x->req = NULL;
}

/* The response is complete: the client gets its end, the upstream goes back to the pool. */
static void done(struct px *x) {
    finish(x, 0, NULL);
    myriad_stream_t *up = x->up;
    x->up = NULL;
    if (x->paused) myriad_stream_pause(up, 0); /* the next user must find it reading */
    if (x->reusable) pool_put(up); /* replaces the callbacks: drops x's reference */
    else myriad_stream_close(up);
}

static int header_is(const char *n, size_t nl, const char *want) {
    return nl == strlen(want) && strncasecmp(n, want, nl) == 0;
}

static int hop_by_hop(const char *n, size_t nl) {
    return header_is(n, nl, "connection") || header_is(n, nl, "keep-alive") ||
           header_is(n, nl, "transfer-encoding") || header_is(n, nl, "te") ||
           header_is(n, nl, "trailer") || header_is(n, nl, "upgrade") ||
           header_is(n, nl, "proxy-connection") || header_is(n, nl, "proxy-authenticate") ||
           header_is(n, nl, "proxy-authorization");
}

static const char *find_crlf(const char *p, const char *end) {
    for (; p + 1 < end; p++)
        if (p[0] == '\r' && p[1] == '\n') return p;
    return NULL;
}

/* Parses the upstream's response head; returns bytes used, 0 for "need more", -1 bad. */
static long parse_head(struct px *x, const char *d, size_t n) {
    const char *end = NULL;
    for (size_t i = 3; i < n; i++)
        if (d[i - 3] == '\r' && d[i - 2] == '\n' && d[i - 1] == '\r' && d[i] == '\n') { end = d + i + 1; break; }
    if (!end) return n >= MAX_HEAD ? -1 : 0;
    if (n < 12 || strncmp(d, "HTTP/1.", 7) != 0 || !isdigit((unsigned char)d[9])) return -1;
    int status = atoi(d + 9);
    if (status >= 100 && status < 200 && status != 101) return (long)(end - d); /* interim: skip */
    if (status < 200 || status > 999) return -1;
    int http10 = d[7] == '0';
    int has_len = 0, chunked = 0, close_conn = http10, keep = 0;
    uint64_t len = 0;
    myriad_req_status(x->req, status);
    const char *line = find_crlf(d, end) + 2;
    while (line < end - 2) {
        const char *eol = find_crlf(line, end);
        const char *colon = (const char *)memchr(line, ':', (size_t)(eol - line));
        if (!colon) return -1;
        size_t nl = (size_t)(colon - line);
        const char *v = colon + 1;
        while (v < eol && (*v == ' ' || *v == '\t')) v++;
        size_t vl = (size_t)(eol - v);
        while (vl && (v[vl - 1] == ' ' || v[vl - 1] == '\t')) vl--;
        if (header_is(line, nl, "content-length")) {
            char *e;
            char buf[24];
            if (vl == 0 || vl >= sizeof buf) return -1;
            memcpy(buf, v, vl);
            buf[vl] = 0;
            uint64_t l = strtoull(buf, &e, 10);
            if (*e || !isdigit((unsigned char)buf[0]) || (has_len && l != len)) return -1;
            len = l;
            has_len = 1;
        } else if (header_is(line, nl, "transfer-encoding")) {
            chunked = vl == 7 && strncasecmp(v, "chunked", 7) == 0;
            if (!chunked) return -1;
        } else if (header_is(line, nl, "connection")) {
            if (vl >= 5 && strncasecmp(v, "close", 5) == 0) close_conn = 1;
            if (vl >= 10 && strncasecmp(v, "keep-alive", 10) == 0) keep = 1;
        }
        if (!hop_by_hop(line, nl) && !header_is(line, nl, "content-length") &&
            !header_is(line, nl, "date") && !header_is(line, nl, "server"))
            myriad_req_header_add(x->req, line, nl, v, vl);
        line = eol + 2;
    }
    if (http10 && keep) close_conn = 0;
    x->reusable = !close_conn;
    if (x->is_head || status == 204 || status == 304) x->body = B_NONE;
    else if (chunked) x->body = B_CHUNKED, x->cs = C_SIZE;
    else if (has_len) x->body = B_LENGTH, x->left = len;
    else x->body = B_CLOSE, x->reusable = 0;
    x->head_done = 1;
    if (x->body != B_NONE) myriad_req_flush(x->req); /* the head goes out now */
    return (long)(end - d);
}

static void resume_up(myriad_req_t *req, void *ud) {
    (void)req;
    struct px *x = (struct px *)ud;
    if (x->up && x->paused) {
        x->paused = 0;
        myriad_stream_pause(x->up, 0);
    }
}

static void relay(struct px *x, const uint8_t *d, size_t n) {
    if (!x->req || n == 0) return;
    myriad_req_write(x->req, d, n);
    myriad_req_flush(x->req);
    if (myriad_req_queued(x->req) > HIGH_WATER && x->up && !x->paused) {
        /* The client reads slower than the upstream sends: hold the upstream. */
        x->paused = 1;
        myriad_stream_pause(x->up, 1);
        myriad_req_on_drain(x->req, resume_up, x);
    }
}

/* Consumes chunked framing; returns bytes used, or -1 on bad framing. Sets done. */
static long dechunk(struct px *x, const uint8_t *d, size_t n, int *complete) {
    size_t i = 0;
    while (i < n && !x->paused) {
        if (x->cs == C_SIZE || x->cs == C_DATA_CRLF || x->cs == C_TRAILER) {
            const char *eol = find_crlf((const char *)d + i, (const char *)d + n);
            if (!eol) return n - i > 1024 ? -1 : (long)i;
            size_t ll = (size_t)(eol - (const char *)d - i);
            if (x->cs == C_SIZE) {
                char *e;
                if (ll == 0 || !isxdigit(d[i])) return -1;
                x->left = strtoull((const char *)d + i, &e, 16);
                if (e != eol && *e != ';' && *e != ' ') return -1;
                x->cs = x->left ? C_DATA : C_TRAILER;
            } else if (x->cs == C_DATA_CRLF) {
                if (ll) return -1;
                x->cs = C_SIZE;
            } else if (ll == 0) {
                *complete = 1;
                return (long)(i + 2);
            }
            i += ll + 2;
        } else {
            size_t take = n - i < x->left ? n - i : (size_t)x->left;
            relay(x, d + i, take);
            i += take;
            x->left -= take;
            if (!x->left) x->cs = C_DATA_CRLF;
        }
    }
    return (long)i;
}

static size_t up_data(myriad_stream_t *s, const uint8_t *d, size_t n, void *ud) {
    (void)s;
    struct px *x = (struct px *)ud;
    if (!x->req) return n; /* the client is gone; the abort is under way */
    size_t used = 0;
    while (!x->head_done) {
        long h = parse_head(x, (const char *)d + used, n - used);
        if (h < 0) {
            x->reusable = 0;
            finish(x, 502, "bad response from upstream\n");
            myriad_stream_abort(x->up);
            x->up = NULL;
            return n;
        }
        if (h == 0) return used; /* the rest of the head is still to come: keep it buffered */
        used += (size_t)h;
    }
    int complete = 0;
    if (x->body == B_NONE) {
        complete = 1;
    } else if (x->body == B_LENGTH) {
        size_t take = n - used < x->left ? n - used : (size_t)x->left;
        relay(x, d + used, take);
        used += take;
        x->left -= take;
        complete = x->left == 0;
    } else if (x->body == B_CLOSE) {
        relay(x, d + used, n - used);
        used = n;
    } else {
        long c = dechunk(x, d + used, n - used, &complete);
        if (c < 0) {
            x->reusable = 0;
            finish(x, 502, "bad chunked framing from upstream\n");
            myriad_stream_abort(x->up);
            x->up = NULL;
            return n;
        }
        used += (size_t)c;
    }
    if (complete) {
        if (used < n) x->reusable = 0; /* bytes after the response: not a clean connection */
        done(x);
        return n;
    }
    return used;
}

static void up_event(myriad_stream_t *s, int ev, int err, void *ud) {
    struct px *x = (struct px *)ud;
    if (ev == MYRIAD_STREAM_EOF) {
        if (x->head_done && x->body == B_CLOSE) {
            x->reusable = 0;
            done(x);
        } else {
            /* The upstream closed before the response was complete. */
            finish(x, 502, "upstream closed the connection\n");
            myriad_stream_close(s);
            x->up = NULL;
        }
    } else if (ev == MYRIAD_STREAM_TIMEOUT) {
        finish(x, 504, "upstream timed out\n");
        myriad_stream_abort(s);
        x->up = NULL;
    } else if (ev == MYRIAD_STREAM_CLOSED) {
        if (x->req) {
            fprintf(stderr, "proxy: upstream %s: %s\n", upstream, myriad_strerror(err));
            finish(x, err == MYRIAD_ETIMEDOUT ? 504 : 502, "upstream unavailable\n");
        }
        x->up = NULL;
    }
}

/* ---- the client side ---- */

static void on_client_abort(myriad_req_t *req, void *ud) {
    struct px *x = (struct px *)ud;
    if (x->up) {
        myriad_stream_abort(x->up); /* CLOSED follows, then x's stream reference goes */
        x->up = NULL;
    }
    x->req = NULL;
    myriad_req_finish(req); /* releases the handle */
}

static void on_body(myriad_req_t *req, const uint8_t *d, size_t n, int event, void *ud) {
    (void)req;
    struct px *x = (struct px *)ud;
    if (!x->up) return;
    if (event == MYRIAD_BODY_DATA) {
        if (x->up_chunked_req) {
            char line[24];
            int l = snprintf(line, sizeof line, "%zx\r\n", n);
            myriad_stream_write(x->up, (const uint8_t *)line, (size_t)l);
            myriad_stream_write(x->up, d, n);
            myriad_stream_write(x->up, (const uint8_t *)S("\r\n"));
        } else {
            myriad_stream_write(x->up, d, n);
        }
    } else if (event == MYRIAD_BODY_END && x->up_chunked_req) {
        myriad_stream_write(x->up, (const uint8_t *)S("0\r\n\r\n"));
    } else if (event == MYRIAD_BODY_ABORTED) {
        x->reusable = 0;
    }
}

static void append(char **buf, size_t *len, size_t *cap, const char *s, size_t n) {
    if (*len + n > *cap) {
        *cap = (*len + n) * 2;
        *buf = (char *)realloc(*buf, *cap);
    }
    memcpy(*buf + *len, s, n);
    *len += n;
}

static void handler(myriad_req_t *req, void *ud) {
    (void)ud;
    const char *m, *t, *v;
    size_t ml, tl, vl;
    myriad_req_method(req, &m, &ml);
    myriad_req_target(req, &t, &tl);
    struct px *x = (struct px *)calloc(1, sizeof *x);
    x->req = req;
    x->is_head = ml == 4 && memcmp(m, "HEAD", 4) == 0;

    /* Take an idle upstream connection, or open one. */
    if (pool_n) {
        x->up = pool[--pool_n];
        myriad_stream_set_timeouts(x->up, 0, 0);
    } else {
        int rc = up_tls ? myriad_stream_connect_tls(myriad_req_loop(req), upstream, strlen(upstream), timeout_ms, up_tls,
                                                    up_name, up_name ? strlen(up_name) : 0, &x->up)
                        : myriad_stream_connect(myriad_req_loop(req), upstream, strlen(upstream), timeout_ms, &x->up);
        if (rc != MYRIAD_OK) {
            free(x);
            myriad_req_send(req, 502, S("text/plain"), (const uint8_t *)S("cannot reach upstream\n"));
            return;
        }
    }
    x->refs = 1;
    myriad_stream_set_callbacks(x->up, up_data, up_event, x, px_unref);
    myriad_stream_set_timeouts(x->up, (uint32_t)timeout_ms, (uint32_t)timeout_ms);
    myriad_req_on_abort(req, on_client_abort, x, NULL);

    /* The request head, hop-by-hop headers dropped. */
    size_t len = 0, cap = 1024;
    char *head = (char *)malloc(cap);
    append(&head, &len, &cap, m, ml);
    append(&head, &len, &cap, " ", 1);
    append(&head, &len, &cap, t, tl);
    append(&head, &len, &cap, S(" HTTP/1.1\r\n"));
    int n = myriad_req_header_count(req), has_len = 0, has_te = 0, has_host = 0;
    for (int i = 0; i < n; i++) {
        const char *hn;
        size_t hl;
        myriad_req_header_at(req, (size_t)i, &hn, &hl, &v, &vl);
        if (header_is(hn, hl, "content-length")) has_len = 1;
        if (header_is(hn, hl, "transfer-encoding")) has_te = 1;
        if (header_is(hn, hl, "host")) has_host = 1;
        /* Hop-by-hop headers stay here; so does Expect: this front answers 100-continue. */
        if (hop_by_hop(hn, hl) || header_is(hn, hl, "expect")) continue;
        append(&head, &len, &cap, hn, hl);
        append(&head, &len, &cap, ": ", 2);
        append(&head, &len, &cap, v, vl);
        append(&head, &len, &cap, "\r\n", 2);
    }
    if (!has_host) { /* HTTP/1.0 clients and FastCGI front ends may send none */
        append(&head, &len, &cap, S("Host: "));
        if (strncmp(upstream, "unix:", 5) == 0 || strncmp(upstream, "fd:", 3) == 0)
            append(&head, &len, &cap, S("localhost"));
        else
            append(&head, &len, &cap, upstream, strlen(upstream));
        append(&head, &len, &cap, "\r\n", 2);
    }
    char peer[64];
    int pl = myriad_req_peer(req, peer, sizeof peer);
    if (pl > 0) {
        append(&head, &len, &cap, S("X-Forwarded-For: "));
        append(&head, &len, &cap, peer, (size_t)pl);
        append(&head, &len, &cap, "\r\n", 2);
    }
    if (has_te && !has_len) {
        x->up_chunked_req = 1;
        append(&head, &len, &cap, S("Transfer-Encoding: chunked\r\n"));
    }
    append(&head, &len, &cap, S("Connection: keep-alive\r\n\r\n"));
    myriad_stream_write(x->up, (const uint8_t *)head, len);
    free(head);

    /* The body streams as it arrives. */
    if (has_len || has_te) {
        x->refs++;
        if (myriad_req_on_body(req, on_body, x, px_unref) != MYRIAD_OK) x->refs--;
    }
}

static void drained(myriad_loop_t *lp, void *ud) {
    (void)ud;
    myriad_loop_stop(lp);
}

static void on_signal(myriad_loop_t *lp, int signo, void *ud) {
    (void)lp; (void)signo; (void)ud;
    static int once;
    if (!once++) myriad_server_shutdown(srv, drained, NULL);
}

static void usage(const char *msg) {
    fprintf(stderr,
            "proxy: %s\nusage: proxy --upstream ADDR [--http ADDR]... [--fcgi ADDR]... [--timeout MS]\n"
            "             [--upstream-tls] [--upstream-ca FILE] [--upstream-name NAME]\n",
            msg);
    exit(2);
}

int main(int argc, char **argv) {
    myriad_loop_t *lp;
    int rc, listeners = 0, tls = 0;
    const char *ca = NULL;
    if ((rc = myriad_server_new(&srv)) != MYRIAD_OK) usage(myriad_strerror(rc));
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--upstream-tls") == 0) {
            tls = 1;
            continue;
        }
        int proto = strcmp(argv[i], "--http") == 0 ? MYRIAD_HTTP : strcmp(argv[i], "--fcgi") == 0 ? MYRIAD_FCGI : 0;
        if (i + 1 == argc) usage("missing value");
        if (proto) {
            rc = myriad_server_listen(srv, proto, argv[i + 1], strlen(argv[i + 1]));
            if (rc != MYRIAD_OK) usage(myriad_strerror(rc));
            listeners++;
        } else if (strcmp(argv[i], "--upstream") == 0) {
            upstream = argv[i + 1];
        } else if (strcmp(argv[i], "--timeout") == 0) {
            timeout_ms = strtoull(argv[i + 1], NULL, 10);
        } else if (strcmp(argv[i], "--upstream-ca") == 0) {
            ca = argv[i + 1];
        } else if (strcmp(argv[i], "--upstream-name") == 0) {
            up_name = argv[i + 1];
        } else {
            usage("unknown argument");
        }
        i++;
    }
    if (!upstream) usage("--upstream is required");
    if ((ca || up_name) && !tls) usage("--upstream-ca and --upstream-name go with --upstream-tls");
    if (tls) {
        if ((rc = myriad_tls_config_new(&up_tls)) != MYRIAD_OK) usage(myriad_strerror(rc));
        myriad_tls_config_set_alpn(up_tls, S("http/1.1"));
        if (ca && myriad_tls_config_add_ca_file(up_tls, ca, strlen(ca)) != MYRIAD_OK) {
            fprintf(stderr, "proxy: %s\n", myriad_tls_config_error(up_tls));
            exit(2);
        }
    }
    if (!listeners) myriad_server_listen(srv, MYRIAD_HTTP, S("127.0.0.1:8081"));
    if ((rc = myriad_loop_new(&lp)) != MYRIAD_OK) usage(myriad_strerror(rc));
    myriad_signal_watch(lp, SIGTERM, on_signal, NULL, NULL, NULL);
    myriad_signal_watch(lp, SIGINT, on_signal, NULL, NULL, NULL);
    myriad_server_set_limit(srv, MYRIAD_MAX_BODY, 1u << 30);
    myriad_server_set_handler(srv, handler, NULL, NULL);
    if ((rc = myriad_server_start(srv, lp)) != MYRIAD_OK) {
        fprintf(stderr, "proxy: listen: %s\n", myriad_strerror(rc));
        return 1;
    }
    for (size_t i = 0; i < myriad_server_listener_count(srv); i++) {
        char addr[256];
        int proto;
        if (myriad_server_listener_addr(srv, i, &proto, addr, sizeof addr) >= 0)
            printf("listening %s %s\n", proto == MYRIAD_HTTP ? "http" : "fcgi", addr);
    }
    fflush(stdout);
    rc = myriad_loop_run(lp);
    while (pool_n) myriad_stream_abort(pool[--pool_n]);
    myriad_server_free(srv);
    myriad_tls_config_free(up_tls);
    myriad_loop_free(lp);
    return rc == MYRIAD_OK ? 0 : 1;
}
