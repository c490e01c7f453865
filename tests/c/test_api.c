/*
 * test_api.c — exercises every function of myriad.h from C, including error paths,
 * finishing requests from 8 threads at once, wrong-thread calls and the panic boundary.
 * Prints one line per failed check and ends with "N passed, M failed".
 */
#define _POSIX_C_SOURCE 200809L
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "check.h"

static atomic_int dtors, fired, posted, freed_bufs;
static void count_dtor(void *ud) { (void)ud; atomic_fetch_add(&dtors, 1); }
static void buf_free(void *ud) { free(ud); atomic_fetch_add(&freed_bufs, 1); }

/* ---- loop-level tests ---- */

static void on_timer(myriad_loop_t *lp, void *ud) { (void)lp; (void)ud; atomic_fetch_add(&fired, 1); }

static uint64_t rep_id;
static int rep_ticks;
static void on_repeat(myriad_loop_t *lp, void *ud) {
    (void)ud;
    if (++rep_ticks == 3) CHECK(myriad_timer_cancel(lp, rep_id) == MYRIAD_OK);
}

static int got_signal;
static void on_signal(myriad_loop_t *lp, int signo, void *ud) { (void)lp; (void)ud; got_signal = signo; }

static int fd_events;
static void on_fd(myriad_loop_t *lp, int fd, int events, void *ud) {
    char b[16];
    (void)lp; (void)ud;
    fd_events |= events;
    while (read(fd, b, sizeof b) > 0) {}
}

static void on_post(myriad_loop_t *lp, void *ud) { (void)lp; (void)ud; atomic_fetch_add(&posted, 1); }

static void *poster(void *arg) {
    myriad_loop_t *lp = arg;
    for (int i = 0; i < 1000; i++) myriad_loop_post(lp, on_post, NULL, NULL);
    return NULL;
}

struct wrong { myriad_loop_t *lp; int rc; };
static void *wrong_thread(void *arg) {
    struct wrong *w = arg;
    w->rc = myriad_timer_start(w->lp, 1, 0, on_timer, NULL, NULL, NULL);
    return NULL;
}

static void *stopper(void *arg) {
    struct timespec ts = {0, 30 * 1000000L};
    nanosleep(&ts, NULL);
    myriad_loop_stop(arg);
    return NULL;
}

static void run_until(myriad_loop_t *lp, atomic_int *v, int want) {
    for (int i = 0; i < 2000 && atomic_load(v) < want; i++) myriad_loop_run_once(lp, 0);
}

static void test_loop(void) {
    myriad_loop_t *lp = NULL;
    CHECK(myriad_loop_new(NULL) == MYRIAD_EINVAL);
    CHECK(myriad_loop_new_backend(&lp, S("nope")) == MYRIAD_EUNSUPPORTED);
    CHECK(myriad_loop_new_backend(&lp, S("epoll")) == MYRIAD_OK);
    CHECK(strcmp(myriad_loop_backend(lp), "epoll") == 0);
    myriad_loop_free(lp);
    CHECK(myriad_loop_new_backend(&lp, S("io_uring")) == MYRIAD_OK);
    CHECK(strcmp(myriad_loop_backend(lp), "io_uring") == 0);
    myriad_loop_free(lp);
    CHECK(myriad_loop_backend(NULL) == NULL);
    CHECK(myriad_loop_new(&lp) == MYRIAD_OK && lp);
    /* The default is MYRIAD_BACKEND's, else epoll. */
    const char *env = getenv("MYRIAD_BACKEND");
    CHECK(strcmp(myriad_loop_backend(lp), env && !strcmp(env, "io_uring") ? "io_uring" : "epoll") == 0);
    CHECK(myriad_loop_backend_fd(lp) >= 0);
    CHECK(myriad_loop_next_timeout(lp) == 0); /* its own registration is pending */
    CHECK(myriad_loop_run_once(lp, 1) == 0);
    CHECK(myriad_loop_next_timeout(lp) == -1); /* nothing armed: sleep on the fd */

    /* timers */
    uint64_t id = 0;
    CHECK(myriad_timer_start(lp, 1, 0, NULL, NULL, NULL, &id) == MYRIAD_EINVAL);
    CHECK(myriad_timer_start(lp, 10, 0, on_timer, NULL, count_dtor, &id) == MYRIAD_OK);
    int64_t t = myriad_loop_next_timeout(lp);
    CHECK(t >= 1 && t <= 10);
    run_until(lp, &fired, 1);
    CHECK(atomic_load(&fired) == 1);
    CHECK(atomic_load(&dtors) == 1); /* one-shot: destructor after firing */
    CHECK(myriad_timer_cancel(lp, id) == MYRIAD_ENOTFOUND);
    CHECK(myriad_timer_start(lp, 1, 1, on_repeat, NULL, count_dtor, &rep_id) == MYRIAD_OK);
    for (int i = 0; i < 200 && rep_ticks < 3; i++) myriad_loop_run_once(lp, 0);
    CHECK(rep_ticks == 3);
    CHECK(atomic_load(&dtors) == 2);
    CHECK(myriad_timer_start(lp, 100000, 0, on_timer, NULL, count_dtor, &id) == MYRIAD_OK);
    CHECK(myriad_timer_cancel(lp, id) == MYRIAD_OK);
    CHECK(atomic_load(&dtors) == 3);

    /* signals (this process is single-threaded here) */
    uint64_t sid;
    CHECK(myriad_signal_watch(lp, SIGKILL, on_signal, NULL, NULL, &sid) == MYRIAD_EINVAL);
    CHECK(myriad_signal_watch(lp, SIGUSR1, NULL, NULL, NULL, &sid) == MYRIAD_EINVAL);
    CHECK(myriad_signal_watch(lp, SIGUSR1, on_signal, NULL, count_dtor, &sid) == MYRIAD_OK);
    kill(getpid(), SIGUSR1);
    for (int i = 0; i < 100 && !got_signal; i++) myriad_loop_run_once(lp, 0);
    CHECK(got_signal == SIGUSR1);
    CHECK(myriad_signal_unwatch(lp, sid) == MYRIAD_OK);
    CHECK(myriad_signal_unwatch(lp, sid) == MYRIAD_ENOTFOUND);
    CHECK(atomic_load(&dtors) == 4);

    /* fd watchers */
    int p[2];
    CHECK(pipe(p) == 0);
    CHECK(fcntl(p[0], F_SETFL, O_NONBLOCK) == 0);
    uint64_t wid;
    CHECK(myriad_fd_watch(lp, -1, MYRIAD_READ, on_fd, NULL, NULL, &wid) == MYRIAD_EINVAL);
    CHECK(myriad_fd_watch(lp, p[0], 0, on_fd, NULL, NULL, &wid) == MYRIAD_EINVAL);
    CHECK(myriad_fd_watch(lp, p[0], 64, on_fd, NULL, NULL, &wid) == MYRIAD_EINVAL);
    CHECK(myriad_fd_watch(lp, p[0], MYRIAD_READ, on_fd, NULL, count_dtor, &wid) == MYRIAD_OK);
    CHECK(write(p[1], "x", 1) == 1);
    for (int i = 0; i < 100 && !fd_events; i++) myriad_loop_run_once(lp, 0);
    CHECK(fd_events & MYRIAD_READ);
    CHECK(myriad_fd_unwatch(lp, wid) == MYRIAD_OK);
    CHECK(myriad_fd_unwatch(lp, wid) == MYRIAD_ENOTFOUND);
    CHECK(atomic_load(&dtors) == 5);
    close(p[0]);
    close(p[1]);

    /* posts from 8 threads */
    pthread_t th[8];
    CHECK(myriad_loop_post(NULL, on_post, NULL, NULL) == MYRIAD_EINVAL);
    CHECK(myriad_loop_post(lp, NULL, NULL, NULL) == MYRIAD_EINVAL);
    for (int i = 0; i < 8; i++) pthread_create(&th[i], NULL, poster, lp);
    for (int i = 0; i < 8; i++) pthread_join(th[i], NULL);
    run_until(lp, &posted, 8000);
    CHECK(atomic_load(&posted) == 8000);

    /* wrong thread, stop from another thread */
    struct wrong w = {lp, 0};
    pthread_create(&th[0], NULL, wrong_thread, &w);
    pthread_join(th[0], NULL);
    CHECK(w.rc == MYRIAD_EWRONGTHREAD);
    pthread_create(&th[0], NULL, stopper, lp);
    CHECK(myriad_loop_run(lp) == MYRIAD_OK);
    pthread_join(th[0], NULL);
    CHECK(myriad_loop_stop(NULL) == MYRIAD_EINVAL);

    myriad_stats_t st;
    CHECK(myriad_loop_stats(lp, NULL) == MYRIAD_EINVAL);
    CHECK(myriad_loop_stats(lp, &st) == MYRIAD_OK && st.wait > 0 && st.iterations > 0);
    /* a timer still armed when the loop is freed: its destructor runs */
    CHECK(myriad_timer_start(lp, 100000, 0, on_timer, NULL, count_dtor, NULL) == MYRIAD_OK);
    myriad_loop_free(lp);
    CHECK(atomic_load(&dtors) == 6);
    myriad_loop_free(NULL);
}

/* ---- server tests ---- */

static myriad_req_t *pending[8];
static int npending;
static pthread_barrier_t go;
static atomic_int api_checked;

static void *finisher(void *arg) {
    myriad_req_t *r = arg;
    pthread_barrier_wait(&go);
    CHECK(myriad_req_send_async(r, 200, S("text/plain"), (const uint8_t *)"async", 5) == MYRIAD_OK);
    return NULL;
}

static void posted_finish(myriad_req_t *req, void *ud) {
    (void)ud;
    CHECK(myriad_req_send(req, 200, S("text/plain"), (const uint8_t *)"posted", 6) == MYRIAD_OK);
}

static void *post_thread(void *arg) {
    CHECK(myriad_req_post(arg, posted_finish, NULL) == MYRIAD_OK);
    return NULL;
}

static char body_seen[64];
static size_t body_len;
static void on_body(myriad_req_t *req, const uint8_t *data, size_t len, int ev, void *ud) {
    (void)ud;
    if (ev == MYRIAD_BODY_DATA && body_len + len < sizeof body_seen) {
        memcpy(body_seen + body_len, data, len);
        body_len += len;
    } else if (ev == MYRIAD_BODY_END) {
        myriad_req_send(req, 200, S("text/plain"), (const uint8_t *)body_seen, body_len);
    } else if (ev == MYRIAD_BODY_ABORTED) {
        myriad_req_finish(req);
    }
}

static void on_abort(myriad_req_t *req, void *ud) { (void)req; (void)ud; }

static void check_accessors(myriad_req_t *req) {
    const char *s, *v;
    size_t n, vn;
    char buf[128];
    CHECK(myriad_req_method(req, &s, &n) == MYRIAD_OK && n == 3 && !memcmp(s, "GET", 3));
    CHECK(myriad_req_method(req, NULL, &n) == MYRIAD_EINVAL);
    CHECK(myriad_req_target(req, &s, &n) == MYRIAD_OK && n == 10 && !memcmp(s, "/api?a=1&b", 10));
    CHECK(myriad_req_path(req, &s, &n) == MYRIAD_OK && n == 4 && !memcmp(s, "/api", 4));
    CHECK(myriad_req_query(req, &s, &n) == MYRIAD_OK && n == 5 && !memcmp(s, "a=1&b", 5));
    CHECK(myriad_req_header(req, S("x-test"), &s, &n) == MYRIAD_OK && n == 3 && !memcmp(s, "one", 3));
    CHECK(myriad_req_header(req, S("missing"), &s, &n) == MYRIAD_ENOTFOUND);
    CHECK(myriad_req_header_count(req) == 4);
    CHECK(myriad_req_header_at(req, 2, &s, &n, &v, &vn) == MYRIAD_OK && n == 6 && vn == 3 && !memcmp(v, "two", 3));
    CHECK(myriad_req_header_at(req, 9, &s, &n, &v, &vn) == MYRIAD_ENOTFOUND);
    CHECK(myriad_req_cgi(req, S("QUERY_STRING"), &s, &n) == MYRIAD_OK && n == 5);
    CHECK(myriad_req_cgi(req, S("NOPE"), &s, &n) == MYRIAD_ENOTFOUND);
    int count = myriad_req_cgi_count(req);
    CHECK(count > 8);
    const char *prev = "";
    size_t prevn = 0;
    for (int i = 0; i < count; i++) {
        CHECK(myriad_req_cgi_at(req, (size_t)i, &s, &n, &v, &vn) == MYRIAD_OK);
        size_t m = n < prevn ? n : prevn;
        int c = memcmp(prev, s, m);
        CHECK(c < 0 || (c == 0 && prevn <= n)); /* sorted */
        prev = s;
        prevn = n;
    }
    CHECK(myriad_req_cgi_at(req, (size_t)count, &s, &n, &v, &vn) == MYRIAD_ENOTFOUND);
    CHECK(myriad_req_peer(req, buf, 2) == MYRIAD_EINVAL);
    CHECK(myriad_req_peer(req, buf, sizeof buf) > 0 && !strncmp(buf, "127.0.0.1:", 10));
    CHECK(myriad_req_protocol(req) == MYRIAD_HTTP);
    {
        uint64_t len = 77;
        /* (This request is a GET without a body.) */
        CHECK(myriad_req_body_size(req, &len) == MYRIAD_BODYLEN_NONE && len == 77);
    }
    CHECK(myriad_req_loop(req) != NULL);
    CHECK(myriad_req_status(req, 99) == MYRIAD_EINVAL);
    CHECK(myriad_req_status(req, 201) == MYRIAD_OK);
    CHECK(myriad_req_header_add(req, S("bad name"), S("v")) == MYRIAD_EINVAL);
    CHECK(myriad_req_header_add(req, S("X-Ok"), S("a\r\nb")) == MYRIAD_EINVAL);
    CHECK(myriad_req_header_add(req, S("Content-Length"), S("5")) == MYRIAD_EINVAL);
    CHECK(myriad_req_header_add(req, S("X-Ok"), S("yes")) == MYRIAD_OK);
    CHECK(myriad_req_write(req, NULL, 3) == MYRIAD_EINVAL);
    CHECK(myriad_req_write(req, (const uint8_t *)"copy,", 5) == MYRIAD_OK);
    CHECK(myriad_req_write_static(req, (const uint8_t *)"static,", 7) == MYRIAD_OK);
    char *heap = malloc(6);
    memcpy(heap, "freed.", 6);
    CHECK(myriad_req_write_free(req, (const uint8_t *)heap, 6, buf_free, heap) == MYRIAD_OK);
    CHECK(myriad_req_stderr(req, (const uint8_t *)"logged", 6) == MYRIAD_OK);
    CHECK(myriad_req_is_aborted(req) == 0);
    CHECK(myriad_req_queued(req) >= 18);
    CHECK(myriad_req_flush(req) == MYRIAD_OK);
    CHECK(myriad_req_status(req, 500) == MYRIAD_ESTATE); /* head sent */
    CHECK(myriad_req_on_abort(req, on_abort, NULL, count_dtor) == MYRIAD_OK);
    CHECK(myriad_req_finish(req) == MYRIAD_OK);
    atomic_fetch_add(&api_checked, 1);
}

static void handler(myriad_req_t *req, void *ud) {
    const char *p;
    size_t pn;
    (void)ud;
    myriad_req_path(req, &p, &pn);
    if (pn == 4 && !memcmp(p, "/api", 4)) {
        check_accessors(req);
    } else if (pn == 6 && !memcmp(p, "/async", 6)) {
        pending[npending++] = req;
        if (npending == 8) {
            pthread_t th[8];
            for (int i = 0; i < 8; i++) pthread_create(&th[i], NULL, finisher, pending[i]);
            for (int i = 0; i < 8; i++) pthread_detach(th[i]);
        }
    } else if (pn == 5 && !memcmp(p, "/post", 5)) {
        pthread_t th;
        pthread_create(&th, NULL, post_thread, req);
        pthread_detach(th);
    } else if (pn == 4 && !memcmp(p, "/cut", 4)) {
        /* Flushed, then abandoned: the client must see the body cut short. */
        CHECK(myriad_req_write(req, (const uint8_t *)"partial", 7) == MYRIAD_OK);
        CHECK(myriad_req_flush(req) == MYRIAD_OK);
        CHECK(myriad_req_abort(req) == MYRIAD_OK);
    } else if (pn == 5 && !memcmp(p, "/cut0", 5)) {
        /* Abandoned before anything was flushed: no response at all. */
        CHECK(myriad_req_write(req, (const uint8_t *)"unsent", 6) == MYRIAD_OK);
        CHECK(myriad_req_abort(req) == MYRIAD_OK);
    } else if (pn == 5 && !memcmp(p, "/body", 5)) {
        CHECK(myriad_req_on_body(req, NULL, NULL, NULL) == MYRIAD_EINVAL);
        {
            uint64_t len = 0;
            CHECK(myriad_req_body_size(req, &len) == MYRIAD_BODYLEN_KNOWN && len == 5);
        }
        CHECK(myriad_req_on_body(req, on_body, NULL, count_dtor) == MYRIAD_OK);
    } else {
        CHECK(myriad_req_send(req, 404, S("text/plain"), (const uint8_t *)"nf", 2) == MYRIAD_OK);
    }
}

static int port;

/* A blocking HTTP/1.1 exchange (Connection: close); returns the malloc'd response. */
static char *http(const char *req) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) { close(fd); return NULL; }
    if (write(fd, req, strlen(req)) < 0) { close(fd); return NULL; }
    size_t cap = 4096, len = 0;
    char *out = malloc(cap);
    ssize_t n;
    while ((n = read(fd, out + len, cap - len - 1)) > 0) {
        len += (size_t)n;
        if (len + 1 == cap) out = realloc(out, cap *= 2);
    }
    out[len] = 0;
    close(fd);
    return out;
}

static myriad_server_t *srv;
static myriad_loop_t *main_lp;

static void *async_client(void *arg) {
    (void)arg;
    char *r = http("GET /async HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    CHECK(r && strstr(r, "\r\n\r\nasync"));
    free(r);
    return NULL;
}

static void drained(myriad_loop_t *lp, void *ud) { (void)ud; myriad_loop_stop(lp); }
static void do_shutdown(myriad_loop_t *lp, void *ud) {
    (void)lp; (void)ud;
    CHECK(myriad_server_shutdown(srv, drained, NULL) == MYRIAD_OK);
}

static void *clients(void *arg) {
    (void)arg;
    char *r = http("GET /api?a=1&b HTTP/1.1\r\nHost: t\r\nX-Test: one\r\nX-Two2: two\r\nConnection: close\r\n\r\n");
    CHECK(r && !strncmp(r, "HTTP/1.1 201", 12));
    CHECK(r && strstr(r, "X-Ok: yes\r\n"));
    CHECK(r && strstr(r, "copy,static,freed."));
    free(r);
    r = http("POST /body HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello");
    CHECK(r && strstr(r, "\r\n\r\nhello"));
    free(r);
    r = http("GET /cut HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    CHECK(r && strstr(r, "Transfer-Encoding: chunked\r\n"));
    CHECK(r && strstr(r, "\r\n\r\n7\r\npartial\r\n"));
    CHECK(r && !strstr(r, "\r\n0\r\n\r\n")); /* no last chunk */
    free(r);
    r = http("GET /cut0 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    CHECK(r && r[0] == 0);
    free(r);
    r = http("GET /post HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    CHECK(r && strstr(r, "\r\n\r\nposted"));
    free(r);
    pthread_t th[8];
    for (int i = 0; i < 8; i++) pthread_create(&th[i], NULL, async_client, NULL);
    for (int i = 0; i < 8; i++) pthread_join(th[i], NULL);
    myriad_loop_post(main_lp, do_shutdown, NULL, NULL);
    return NULL;
}

static void test_server(void) {
    char buf[128];
    int proto = 0;
    CHECK(myriad_server_new(NULL) == MYRIAD_EINVAL);
    CHECK(myriad_server_new(&srv) == MYRIAD_OK);
    CHECK(myriad_server_listen(srv, 7, S("127.0.0.1:0")) == MYRIAD_EINVAL);
    CHECK(myriad_server_listen(srv, MYRIAD_HTTP, S("localhost")) == MYRIAD_EADDR);
    CHECK(myriad_server_listen(srv, MYRIAD_HTTP, S("1.2.3.4:99999")) == MYRIAD_EADDR);
    CHECK(myriad_server_set_threads(srv, 0) == MYRIAD_EINVAL);
    CHECK(myriad_server_set_threads(srv, 2) == MYRIAD_OK);
    CHECK(myriad_server_set_limit(srv, 999, 1) == MYRIAD_EINVAL);
    CHECK(myriad_server_set_limit(srv, MYRIAD_HEADER_TIMEOUT_MS, 0) == MYRIAD_EINVAL);
    CHECK(myriad_server_set_limit(srv, MYRIAD_MAX_BODY, 1 << 20) == MYRIAD_OK);
    CHECK(myriad_server_set_limit(srv, MYRIAD_IDLE_TIMEOUT_MS, 5000) == MYRIAD_OK);
    CHECK(myriad_server_set_limit(srv, MYRIAD_RESPONSE_TIMEOUT_MS, 0) == MYRIAD_OK); /* off */
    CHECK(myriad_server_set_limit(srv, MYRIAD_RESPONSE_TIMEOUT_MS, 60000) == MYRIAD_OK);
    CHECK(myriad_server_set_limit(srv, MYRIAD_FCGI_MAX_REQUESTS, 0) == MYRIAD_EINVAL);
    CHECK(myriad_server_set_limit(srv, MYRIAD_FCGI_MAX_REQUESTS, 16) == MYRIAD_OK);
    CHECK(myriad_req_body_size(NULL, NULL) == MYRIAD_EINVAL);
    CHECK(myriad_server_set_handler(srv, NULL, NULL, NULL) == MYRIAD_EINVAL);
    CHECK(myriad_loop_new(&main_lp) == MYRIAD_OK);
    CHECK(myriad_server_start(srv, main_lp) == MYRIAD_EINVAL); /* no handler, no listener */
    CHECK(myriad_server_listener_addr(srv, 0, &proto, buf, sizeof buf) == MYRIAD_ENOTFOUND);
    CHECK(myriad_server_shutdown(srv, drained, NULL) == MYRIAD_ESTATE);
    CHECK(myriad_server_listen(srv, MYRIAD_HTTP, S("127.0.0.1:0")) == MYRIAD_OK);
    CHECK(myriad_server_set_handler(srv, handler, NULL, count_dtor) == MYRIAD_OK);
    CHECK(myriad_server_start(srv, main_lp) == MYRIAD_OK);
    CHECK(myriad_server_start(srv, main_lp) == MYRIAD_ESTATE);
    CHECK(myriad_server_listen(srv, MYRIAD_FCGI, S("127.0.0.1:0")) == MYRIAD_ESTATE);
    CHECK(myriad_server_listener_count(srv) == 1);
    CHECK(myriad_server_listener_addr(srv, 0, &proto, buf, 3) == MYRIAD_EINVAL);
    CHECK(myriad_server_listener_addr(srv, 0, &proto, buf, sizeof buf) > 0 && proto == MYRIAD_HTTP);
    port = atoi(strrchr(buf, ':') + 1);
    CHECK(port > 0);

    /* In a callback outside a handler, handler-only calls fail cleanly (no request). */
    CHECK(myriad_req_on_body(NULL, on_body, NULL, NULL) == MYRIAD_EINVAL);
    CHECK(myriad_req_finish(NULL) == MYRIAD_EINVAL);
    CHECK(myriad_req_abort(NULL) == MYRIAD_EINVAL);
    CHECK(myriad_req_send_async(NULL, 200, S("a"), NULL, 0) == MYRIAD_EINVAL);

    pthread_barrier_init(&go, NULL, 8);
    pthread_t c;
    pthread_create(&c, NULL, clients, NULL);
    int before = atomic_load(&dtors);
    CHECK(myriad_loop_run(main_lp) == MYRIAD_OK);
    pthread_join(c, NULL);
    CHECK(atomic_load(&api_checked) == 1);
    CHECK(atomic_load(&freed_bufs) == 1); /* write_free's buffer released after writing */
    myriad_server_free(srv);
    CHECK(atomic_load(&dtors) >= before + 2); /* handler userdata, on_abort, on_body dtors */
    myriad_server_free(NULL);
    myriad_loop_free(main_lp);
    pthread_barrier_destroy(&go);
}

static void noop_handler(myriad_req_t *req, void *ud) { (void)ud; myriad_req_finish(req); }

/* A server with one listener at `addr` and `threads` threads, started on `lp`: the start's
 * return code; *out gets the server (to free). */
static int start_one(myriad_loop_t *lp, const char *addr, unsigned threads, myriad_server_t **out) {
    myriad_server_t *s;
    if (myriad_server_new(&s) != MYRIAD_OK) return -9999;
    *out = s;
    myriad_server_set_threads(s, threads);
    myriad_server_set_handler(s, noop_handler, NULL, NULL);
    int rc = myriad_server_listen(s, MYRIAD_HTTP, addr, strlen(addr));
    return rc != MYRIAD_OK ? rc : myriad_server_start(s, lp);
}

#define DETAIL_HAS(sub) (strstr(myriad_last_error_detail(), (sub)) != NULL)

/* Errors name what failed (myriad_last_error_detail); listener options after the address;
 * a port is shared only when every side asks for it. */
static void test_listen_errors(void) {
    myriad_loop_t *lp;
    myriad_server_t *a, *b;
    char buf[160], want[200];
    CHECK(myriad_loop_new(&lp) == MYRIAD_OK);
    CHECK(strcmp(myriad_last_error_detail(), "") == 0 || myriad_last_error_detail() != NULL);

    CHECK(start_one(lp, "127.0.0.1:0", 1, &a) == MYRIAD_OK);
    CHECK(myriad_server_listener_addr(a, 0, NULL, buf, sizeof buf) > 0);
    snprintf(want, sizeof want, "http listener %s", buf);
    /* The port in use: named, with one thread and with two (no silent SO_REUSEPORT share). */
    for (unsigned t = 1; t <= 2; t++) {
        CHECK(start_one(lp, buf, t, &b) == MYRIAD_EOS_BASE - 98);
        CHECK(DETAIL_HAS(want) && DETAIL_HAS("Address already in use"));
        if (!DETAIL_HAS(want)) printf("  detail: %s\n", myriad_last_error_detail());
        myriad_server_free(b);
    }
    myriad_server_free(a);
    /* Sharing on purpose: ?reuseport on both sides. */
    CHECK(start_one(lp, "127.0.0.1:0?reuseport", 1, &a) == MYRIAD_OK);
    CHECK(myriad_server_listener_addr(a, 0, NULL, buf, sizeof buf) > 0);
    strcat(buf, "?reuseport");
    CHECK(start_one(lp, buf, 2, &b) == MYRIAD_OK);
    myriad_server_free(b);
    *strchr(buf, '?') = 0;
    CHECK(start_one(lp, buf, 2, &b) == MYRIAD_EOS_BASE - 98); /* not asked for: refused */
    myriad_server_free(b);
    myriad_server_free(a);

    CHECK(start_one(lp, "unix:/nonexistent/x.sock", 1, &a) == MYRIAD_EOS_BASE - 2);
    CHECK(DETAIL_HAS("unix:/nonexistent/x.sock") && DETAIL_HAS("directory /nonexistent does not exist"));
    myriad_server_free(a);
    CHECK(start_one(lp, "nosuchhost.invalid:80", 1, &a) == MYRIAD_EADDR);
    CHECK(DETAIL_HAS("nosuchhost.invalid") && DETAIL_HAS("host name") && DETAIL_HAS("numeric"));
    myriad_server_free(a);
    CHECK(start_one(lp, "127.0.0.1:0?bogus=1", 1, &a) == MYRIAD_EADDR);
    CHECK(DETAIL_HAS("unknown option \"bogus\""));
    myriad_server_free(a);
    CHECK(start_one(lp, "unix:/tmp/x.sock?owner=no-such-user-here", 1, &a) == MYRIAD_EADDR);
    CHECK(DETAIL_HAS("no such user"));
    myriad_server_free(a);
    /* A success clears the detail. */
    CHECK(start_one(lp, "127.0.0.1:0", 1, &a) == MYRIAD_OK && strcmp(myriad_last_error_detail(), "") == 0);
    myriad_server_free(a);

    /* Unix socket mode and group from the address. */
    char path[64], addr[128];
    snprintf(path, sizeof path, "/tmp/myriad-mode-%d.sock", (int)getpid());
    snprintf(addr, sizeof addr, "unix:%s?mode=0666&group=%d", path, (int)getgid());
    CHECK(start_one(lp, addr, 1, &a) == MYRIAD_OK);
    struct stat st;
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0666 && st.st_gid == getgid());
    myriad_server_free(a);
    strcat(path, "2"); /* (a freed server's listener stays on its loop until the loop goes) */
    snprintf(addr, sizeof addr, "unix:%s?mode=0600", path);
    int rc = start_one(lp, addr, 1, &a);
    CHECK(rc == MYRIAD_OK);
    if (rc) printf("  %d %s\n", rc, myriad_last_error_detail());
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600);
    myriad_server_free(a);
    myriad_loop_free(lp);
    CHECK(stat(path, &st) != 0); /* our socket file removed with its listener */
    path[strlen(path) - 1] = 0;
    CHECK(stat(path, &st) != 0);
}

static void logger(int level, const char *msg, size_t len, void *ud) {
    (void)level; (void)msg; (void)len; (void)ud;
}

/* ---- the supervisor's C ABI (its runs are checked by tests/supervisor_e2e.sh) ---- */

static void sup_hook(void *ud) { (void)ud; }

static void test_supervisor(void) {
    myriad_sup_t *sup = NULL;
    char buf[128];
    int proto = 0;
    const char *argv[] = {"true"};
    CHECK(myriad_sup_new(NULL) == MYRIAD_EINVAL);
    CHECK(myriad_sup_new(&sup) == MYRIAD_OK && sup);
    CHECK(myriad_sup_set(NULL, MYRIAD_SUP_WORKERS, 2) == MYRIAD_EINVAL);
    CHECK(myriad_sup_set(sup, 999, 1) == MYRIAD_EINVAL);
    CHECK(myriad_sup_set(sup, MYRIAD_SUP_WORKERS, 0) == MYRIAD_EINVAL);
    CHECK(myriad_sup_set(sup, MYRIAD_SUP_WORKERS, 5000) == MYRIAD_EINVAL);
    CHECK(myriad_sup_set(sup, MYRIAD_SUP_MAX_REQUESTS, -1) == MYRIAD_EINVAL);
    CHECK(myriad_sup_set(sup, MYRIAD_SUP_WORKERS, 2) == MYRIAD_OK);
    CHECK(myriad_sup_set(sup, MYRIAD_SUP_WATCHDOG_MS, 1000) == MYRIAD_OK);
    CHECK(myriad_sup_set(sup, MYRIAD_SUP_MAX_RSS, 1 << 30) == MYRIAD_OK);
    CHECK(myriad_sup_set_user(sup, S("no-such-user-myriad"), NULL, 0) == MYRIAD_ENOTFOUND);
    CHECK(myriad_sup_set_user(sup, NULL, 3, NULL, 0) == MYRIAD_EINVAL);
    CHECK(myriad_sup_set_user(sup, S("root"), S("no-such-group-myriad")) == MYRIAD_ENOTFOUND);
    CHECK(myriad_sup_set_chroot(NULL, S("/tmp")) == MYRIAD_EINVAL);
    CHECK(myriad_sup_set_chroot(sup, S("relative/dir")) == MYRIAD_EINVAL);
    CHECK(myriad_sup_set_chroot(sup, S("/etc/passwd")) == MYRIAD_EINVAL); /* not a directory */
    CHECK(myriad_sup_set_chroot(sup, S("/no/such/dir/myriad")) == MYRIAD_ENOTFOUND);
    CHECK(myriad_sup_set_chroot(sup, S("/tmp")) == MYRIAD_OK);
    CHECK(myriad_sup_listen(sup, 7, S("127.0.0.1:0")) == MYRIAD_EINVAL);
    CHECK(myriad_sup_listen(sup, MYRIAD_HTTP, S("nope")) == MYRIAD_EADDR);
    CHECK(myriad_sup_listener_count(sup) == 0);
    CHECK(myriad_sup_listener_count(NULL) == 0);
    CHECK(myriad_sup_run(sup, NULL, NULL) == MYRIAD_EINVAL);
    CHECK(myriad_sup_listen(sup, MYRIAD_HTTP, S("127.0.0.1:0")) == MYRIAD_OK);
    CHECK(myriad_sup_set(sup, MYRIAD_SUP_WORKERS, 3) == MYRIAD_ESTATE); /* fixed once bound */
    CHECK(myriad_sup_set_chroot(sup, S("/tmp")) == MYRIAD_ESTATE);
    CHECK(myriad_sup_status_listen(sup, S("bad")) == MYRIAD_EADDR);
    CHECK(myriad_sup_status_listen(sup, S("127.0.0.1:0")) == MYRIAD_OK);
    CHECK(myriad_sup_listener_count(sup) == 2);
    CHECK(myriad_sup_listener_addr(sup, 0, &proto, buf, sizeof buf) > 10 && proto == MYRIAD_HTTP &&
          strncmp(buf, "127.0.0.1:", 10) == 0);
    CHECK(myriad_sup_listener_addr(sup, 1, &proto, buf, sizeof buf) > 10 && proto == MYRIAD_SUP_STATUS);
    CHECK(myriad_sup_listener_addr(sup, 2, &proto, buf, sizeof buf) == MYRIAD_ENOTFOUND);
    CHECK(myriad_sup_listener_addr(sup, 0, &proto, buf, 3) == MYRIAD_EINVAL);
    CHECK(myriad_sup_listener_addr(NULL, 0, &proto, buf, sizeof buf) == MYRIAD_EINVAL);
    CHECK(myriad_sup_on_reload(sup, NULL, NULL, NULL) == MYRIAD_EINVAL);
    int d0 = atomic_load(&dtors);
    CHECK(myriad_sup_on_reload(sup, sup_hook, NULL, count_dtor) == MYRIAD_OK);
    CHECK(myriad_sup_on_reopen(sup, sup_hook, NULL, count_dtor) == MYRIAD_OK);
    CHECK(myriad_sup_run_exec(sup, NULL, 0) == MYRIAD_EINVAL);
    CHECK(myriad_sup_run_exec(sup, argv, 0) == MYRIAD_EINVAL);
    myriad_sup_free(sup);
    CHECK(atomic_load(&dtors) == d0 + 2); /* both hooks' user data released */
    myriad_sup_free(NULL);
    CHECK(myriad_worker_listener_count(NULL) == 0);
    CHECK(myriad_worker_listener(NULL, 0, &proto) == MYRIAD_EINVAL);
    CHECK(myriad_worker_slot(NULL) == MYRIAD_EINVAL);
    CHECK(myriad_worker_listen(NULL, NULL) == MYRIAD_EINVAL);
    CHECK(myriad_worker_listen_tls(NULL, NULL, NULL) == MYRIAD_EINVAL);
    CHECK(MYRIAD_SUP_STATUS != MYRIAD_HTTPS && MYRIAD_SUP_STATUS != MYRIAD_HTTP && MYRIAD_SUP_STATUS != MYRIAD_FCGI);
}

/* TLS configurations: argument checks, messages naming what failed, free(NULL). */
static void test_tls_config(void) {
    myriad_tls_config_t *c = NULL;
    myriad_server_t *srv = NULL;
    myriad_loop_t *lp = NULL;
    CHECK(myriad_tls_config_new(NULL) == MYRIAD_EINVAL);
    myriad_tls_config_free(NULL);
    CHECK(strcmp(myriad_tls_config_error(NULL), "") == 0);
    CHECK(myriad_tls_config_new(&c) == MYRIAD_OK && c);
    CHECK(strcmp(myriad_tls_config_error(c), "") == 0);
    CHECK(myriad_tls_config_add_cert_pem(NULL, (const uint8_t *)"x", 1, (const uint8_t *)"y", 1) == MYRIAD_EINVAL);
    CHECK(myriad_tls_config_add_cert_pem(c, NULL, 5, (const uint8_t *)"y", 1) == MYRIAD_EINVAL);
    CHECK(myriad_tls_config_add_cert_pem(c, (const uint8_t *)"junk", 4, (const uint8_t *)"junk", 4) == MYRIAD_ETLS);
    CHECK(strstr(myriad_tls_config_error(c), "no PEM certificate") != NULL);
    CHECK(myriad_tls_config_add_cert_files(c, S("/nonexistent/c.pem"), S("/nonexistent/k.pem")) == MYRIAD_ETLS);
    CHECK(strstr(myriad_tls_config_error(c), "/nonexistent/c.pem") != NULL);
    CHECK(myriad_tls_config_set_versions(c, MYRIAD_TLS1_3, MYRIAD_TLS1_2) == MYRIAD_ETLS);
    CHECK(myriad_tls_config_set_versions(c, 0x0301, MYRIAD_TLS1_3) == MYRIAD_ETLS);
    CHECK(myriad_tls_config_set_versions(c, MYRIAD_TLS1_2, MYRIAD_TLS1_3) == MYRIAD_OK);
    CHECK(myriad_tls_config_set_versions(NULL, MYRIAD_TLS1_2, MYRIAD_TLS1_3) == MYRIAD_EINVAL);
    CHECK(myriad_tls_config_set_alpn(c, S("h2, http/1.1")) == MYRIAD_OK);
    CHECK(myriad_tls_config_set_alpn(NULL, S("h2")) == MYRIAD_EINVAL);
    CHECK(myriad_tls_config_set_sessions(c, 2, 10) == MYRIAD_EINVAL);
    CHECK(myriad_tls_config_set_sessions(c, 0, 0) == MYRIAD_OK);
    CHECK(myriad_tls_config_add_ca_pem(c, (const uint8_t *)"junk", 4) == MYRIAD_ETLS);
    CHECK(myriad_tls_config_add_ca_file(c, S("/nonexistent/ca.pem")) == MYRIAD_ETLS);
    CHECK(strstr(myriad_tls_config_error(c), "/nonexistent/ca.pem") != NULL);
    CHECK(myriad_tls_config_reload(c, c) == MYRIAD_ENOTFOUND); /* never attached */
    CHECK(myriad_tls_config_reload(NULL, c) == MYRIAD_EINVAL);
    /* A listener needs a certificate: refused now, with the message. */
    CHECK(myriad_server_new(&srv) == MYRIAD_OK);
    CHECK(myriad_server_listen_tls(srv, S("127.0.0.1:0"), c) == MYRIAD_ETLS);
    CHECK(strstr(myriad_tls_config_error(c), "no certificate") != NULL);
    CHECK(myriad_server_listen_tls(srv, S("not an address"), c) == MYRIAD_EADDR);
    CHECK(myriad_server_listen_tls(srv, S("127.0.0.1:0"), NULL) == MYRIAD_EINVAL);
    CHECK(myriad_strerror(MYRIAD_ETLS) != NULL && strstr(myriad_strerror(MYRIAD_ETLS), "TLS") != NULL);
    myriad_server_free(srv);
    CHECK(myriad_loop_new(&lp) == MYRIAD_OK);
    CHECK(myriad_stream_listen_tls(lp, S("127.0.0.1:0"), c, NULL, NULL, NULL, NULL) == MYRIAD_ETLS);
    myriad_stream_t *st = NULL;
    CHECK(myriad_stream_connect_tls(lp, S("127.0.0.1:1"), 0, NULL, NULL, 0, &st) == MYRIAD_EINVAL);
    CHECK(myriad_stream_tls(NULL, MYRIAD_TLS_VERSION, NULL, NULL) == MYRIAD_EINVAL);
    myriad_loop_free(lp);
    myriad_tls_config_free(c);
}

int main(void) {
    CHECK(strcmp(myriad_version(), MYRIAD_VERSION_STRING) == 0);
    CHECK(MYRIAD_VERSION_MAJOR == 0 && MYRIAD_VERSION_MINOR >= 0 && MYRIAD_VERSION_PATCH >= 0);
    int codes[] = {MYRIAD_OK, MYRIAD_EINVAL, MYRIAD_ENOMEM, MYRIAD_ESTATE, MYRIAD_ENOTFOUND, MYRIAD_EADDR,
                   MYRIAD_EWRONGTHREAD, MYRIAD_EPANIC, MYRIAD_EGONE, MYRIAD_EUNSUPPORTED, 12345};
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) CHECK(myriad_strerror(codes[i]) != NULL);
    CHECK(strstr(myriad_strerror(MYRIAD_EOS_BASE - 98), "in use") != NULL); /* EADDRINUSE */
    CHECK(myriad_test_panic(1) == MYRIAD_EPANIC);
    CHECK(myriad_test_panic(0) == MYRIAD_OK);
    CHECK(myriad_set_logger(logger, NULL, 9) == MYRIAD_EINVAL);
    CHECK(myriad_set_logger(logger, NULL, 2) == MYRIAD_OK);
    CHECK(myriad_set_logger(NULL, NULL, 0) == MYRIAD_OK);
    test_loop();
    test_server();
    test_listen_errors();
    test_supervisor();
    test_tls_config();
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
