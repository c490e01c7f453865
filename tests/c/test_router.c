/*
 * test_router.c — the router, form, query and cookie parts of myriad.h from C: route
 * registration errors, dispatch with before-hooks, parameters, 404/405/400 answers,
 * myriad_router_match, the streaming form parser fed in pieces, urlencoded pairs (the same
 * inputs as the Lua and Node tests), Cookie parsing and the Set-Cookie builder.
 * Prints one line per failed check and ends with "N passed, M failed".
 */
#define _POSIX_C_SOURCE 200809L
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "check.h"

static atomic_int dtors, hooks_run;
static void count_dtor(void *ud) { (void)ud; atomic_fetch_add(&dtors, 1); }

/* ---- urlencoded pairs: the shared query-string cases ---- */

static char pairs[512];
static int collect(const char *n, size_t nl, const char *v, size_t vl, void *ud) {
    (void)ud;
    size_t l = strlen(pairs);
    snprintf(pairs + l, sizeof pairs - l, "[%.*s=%.*s]", (int)nl, n, (int)vl, v);
    return 0;
}
static int stop_first(const char *n, size_t nl, const char *v, size_t vl, void *ud) {
    (void)n; (void)nl; (void)v; (void)vl;
    ++*(int *)ud;
    return 1;
}

static void test_urlencoded(void) {
    pairs[0] = 0;
    /* The cases the Lua and Node tests check too (see README, query strings). */
    CHECK(myriad_urlencoded_parse(S("a=1&b=x+y%21&a=2&&flag&e=&%zz=100%&k=a=b"), collect, NULL) == MYRIAD_OK);
    CHECK(strcmp(pairs, "[a=1][b=x y!][a=2][flag=][e=][%zz=100%][k=a=b]") == 0);
    int n = 0;
    CHECK(myriad_urlencoded_parse(S("a=1&b=2"), stop_first, &n) == MYRIAD_ESTOPPED && n == 1);
    CHECK(myriad_urlencoded_parse(NULL, 3, collect, NULL) == MYRIAD_EINVAL);
    CHECK(myriad_urlencoded_parse(S("a"), NULL, NULL) == MYRIAD_EINVAL);
}

/* ---- cookies ---- */

static void test_cookies(void) {
    pairs[0] = 0;
    CHECK(myriad_cookie_parse(S(" a=1; b = two ;c=\"q\"; novalue; a=again"), collect, NULL) == MYRIAD_OK);
    CHECK(strcmp(pairs, "[a=1][b=two][c=q][a=again]") == 0);
    myriad_cookie_t *c = NULL;
    CHECK(myriad_cookie_new(&c, S("bad name"), S("v")) == MYRIAD_ECOOKIE && c == NULL);
    CHECK(myriad_cookie_new(&c, S("n"), S("a;b")) == MYRIAD_ECOOKIE && c == NULL);
    CHECK(myriad_cookie_new(&c, S("n"), S("a\r\nX: y")) == MYRIAD_ECOOKIE);
    CHECK(myriad_cookie_new(&c, S("id"), S("42")) == MYRIAD_OK && c != NULL);
    CHECK(myriad_cookie_set(c, MYRIAD_COOKIE_PATH, S("/a;b")) == MYRIAD_ECOOKIE);
    CHECK(strstr(myriad_cookie_error(c), "Path") != NULL);
    CHECK(myriad_cookie_set(c, MYRIAD_COOKIE_DOMAIN, S("bad domain")) == MYRIAD_ECOOKIE);
    CHECK(myriad_cookie_set(c, MYRIAD_COOKIE_SAMESITE, S("sometimes")) == MYRIAD_ECOOKIE);
    CHECK(myriad_cookie_set(c, 99, S("x")) == MYRIAD_EINVAL);
    CHECK(myriad_cookie_set_int(c, MYRIAD_COOKIE_SECURE, 2) == MYRIAD_EINVAL);
    CHECK(myriad_cookie_set_int(c, MYRIAD_COOKIE_EXPIRES, -1) == MYRIAD_EINVAL);
    CHECK(myriad_cookie_set(c, MYRIAD_COOKIE_PATH, S("/")) == MYRIAD_OK);
    CHECK(myriad_cookie_set_int(c, MYRIAD_COOKIE_MAX_AGE, 60) == MYRIAD_OK);
    CHECK(myriad_cookie_set_int(c, MYRIAD_COOKIE_EXPIRES, 784111777) == MYRIAD_OK);
    CHECK(myriad_cookie_set_int(c, MYRIAD_COOKIE_HTTPONLY, 1) == MYRIAD_OK);
    CHECK(myriad_cookie_set(c, MYRIAD_COOKIE_SAMESITE, S("None")) == MYRIAD_OK);
    const char *v;
    size_t vl;
    CHECK(myriad_cookie_value(c, &v, &vl) == MYRIAD_ECOOKIE); /* None without Secure */
    CHECK(strstr(myriad_cookie_error(c), "Secure") != NULL);
    CHECK(myriad_cookie_set_int(c, MYRIAD_COOKIE_SECURE, 1) == MYRIAD_OK);
    CHECK(myriad_cookie_value(c, &v, &vl) == MYRIAD_OK);
    CHECK(vl == strlen("id=42; Path=/; Max-Age=60; Expires=Sun, 06 Nov 1994 08:49:37 GMT; Secure; HttpOnly; SameSite=None") &&
          memcmp(v, "id=42; Path=/; Max-Age=60; Expires=Sun, 06 Nov 1994 08:49:37 GMT; Secure; HttpOnly; SameSite=None", vl) == 0);
    myriad_cookie_free(c);
    myriad_cookie_free(NULL);
}

/* ---- the form parser, fed in pieces ---- */

static char events[1024];
static int form_cb(int ev, const myriad_part_t *part, const uint8_t *data, size_t len, void *ud) {
    size_t l = strlen(events);
    const char *s, *f;
    size_t sn, fn;
    (void)ud;
    if (ev == MYRIAD_FORM_PART) {
        myriad_part_name(part, &s, &sn);
        if (myriad_part_filename(part, &f, &fn) != MYRIAD_OK) { f = "-"; fn = 1; }
        snprintf(events + l, sizeof events - l, "<%.*s|%.*s>", (int)sn, s, (int)fn, f);
    } else if (ev == MYRIAD_FORM_DATA) {
        snprintf(events + l, sizeof events - l, "%.*s", (int)len, (const char *)data);
    } else if (ev == MYRIAD_FORM_PART_END) {
        snprintf(events + l, sizeof events - l, ";");
    } else if (ev == MYRIAD_FORM_END) {
        snprintf(events + l, sizeof events - l, "END");
    }
    return 0;
}

static void test_form(void) {
    static const char body[] =
        "pre\r\n--B\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n"
        "--B\r\nContent-Disposition: form-data; name=\"f\"; filename=\"x.txt\"\r\n"
        "Content-Type: text/plain\r\n\r\nline\r\n--not\r\n--B--\r\nepilogue";
    size_t n = sizeof body - 1;
    /* Every split point gives the same events. */
    for (size_t k = 0; k <= n; k++) {
        myriad_form_t *f;
        events[0] = 0;
        CHECK(myriad_form_new(&f, S("multipart/form-data; boundary=B"), form_cb, NULL, count_dtor) == MYRIAD_OK);
        CHECK(myriad_form_feed(f, (const uint8_t *)body, k) == MYRIAD_OK);
        CHECK(myriad_form_feed(f, (const uint8_t *)body + k, n - k) == MYRIAD_OK);
        CHECK(myriad_form_finish(f) == MYRIAD_OK);
        if (strcmp(events, "<a|->1;<f|x.txt>line\r\n--not;END") != 0) {
            printf("FAIL split %zu: %s\n", k, events);
            failed++;
        }
        myriad_form_free(f);
    }
    int before = atomic_load(&dtors);
    myriad_form_t *f = NULL;
    CHECK(myriad_form_new(&f, S("text/plain"), form_cb, NULL, count_dtor) == MYRIAD_EMEDIATYPE && f == NULL);
    CHECK(myriad_form_new(&f, S("multipart/form-data"), form_cb, NULL, count_dtor) == MYRIAD_EBADREQ);
    CHECK(atomic_load(&dtors) == before); /* refused: the destructor is not called */
    CHECK(myriad_http_status_of(MYRIAD_EMEDIATYPE) == 415 && myriad_http_status_of(MYRIAD_EBADREQ) == 400 &&
          myriad_http_status_of(MYRIAD_ETOOLARGE) == 413 && myriad_http_status_of(MYRIAD_EMETHOD) == 405);
    /* Truncated, and a header line without a colon. */
    CHECK(myriad_form_new(&f, S("multipart/form-data; boundary=B"), form_cb, NULL, NULL) == MYRIAD_OK);
    CHECK(myriad_form_feed(f, (const uint8_t *)body, 60) == MYRIAD_OK);
    CHECK(myriad_form_finish(f) == MYRIAD_EBADREQ);
    CHECK(strstr(myriad_form_error(f), "closing delimiter") != NULL);
    CHECK(myriad_form_feed(f, (const uint8_t *)"x", 1) == MYRIAD_EBADREQ); /* final */
    myriad_form_free(f);
    CHECK(myriad_form_new(&f, S("multipart/form-data; boundary=B"), form_cb, NULL, NULL) == MYRIAD_OK);
    CHECK(myriad_form_feed(f, (const uint8_t *)"--B\r\nno colon\r\n\r\n", 18) == MYRIAD_EBADREQ);
    myriad_form_free(f);
    /* Limits: set before feeding, 413 beyond. */
    CHECK(myriad_form_new(&f, S("application/x-www-form-urlencoded"), form_cb, NULL, NULL) == MYRIAD_OK);
    CHECK(myriad_form_set_limit(f, MYRIAD_FORM_MAX_PARTS, 2) == MYRIAD_OK);
    CHECK(myriad_form_set_limit(f, 77, 2) == MYRIAD_EINVAL);
    CHECK(myriad_form_set_limit(f, MYRIAD_FORM_MAX_FIELD, 0) == MYRIAD_EINVAL);
    events[0] = 0;
    CHECK(myriad_form_feed(f, (const uint8_t *)"a=1&b=2&c", 9) == MYRIAD_OK);
    CHECK(myriad_form_finish(f) == MYRIAD_ETOOLARGE);
    CHECK(myriad_form_set_limit(f, MYRIAD_FORM_MAX_PARTS, 5) == MYRIAD_ESTATE);
    CHECK(strcmp(events, "<a|->1;<b|->2;") == 0);
    myriad_form_free(f);
    CHECK(myriad_form_new(&f, S("multipart/form-data; boundary=B"), form_cb, NULL, NULL) == MYRIAD_OK);
    CHECK(myriad_form_set_limit(f, MYRIAD_FORM_MAX_TOTAL, 10) == MYRIAD_OK);
    CHECK(myriad_form_feed(f, (const uint8_t *)body, n) == MYRIAD_ETOOLARGE);
    myriad_form_free(f);
    myriad_form_free(NULL);
}

/* ---- the router ---- */

static void h_user(myriad_req_t *req, void *ud) {
    const char *id, *k, *v;
    size_t n, kl, vl;
    char body[256];
    (void)ud;
    CHECK(myriad_req_param(req, S("id"), &id, &n) == MYRIAD_OK);
    CHECK(myriad_req_param(req, S("nope"), &k, &kl) == MYRIAD_ENOTFOUND);
    CHECK(myriad_req_param_count(req) == 1);
    CHECK(myriad_req_param_at(req, 0, &k, &kl, &v, &vl) == MYRIAD_OK && kl == 2 && !memcmp(k, "id", 2));
    CHECK(myriad_req_param_at(req, 1, &k, &kl, &v, &vl) == MYRIAD_ENOTFOUND);
    const char *ck;
    size_t ckl;
    int hc = myriad_req_cookie(req, S("sid"), &ck, &ckl);
    int len = snprintf(body, sizeof body, "user %.*s cookie %.*s", (int)n, id, hc == MYRIAD_OK ? (int)ckl : 1,
                       hc == MYRIAD_OK ? ck : "-");
    myriad_cookie_t *c;
    CHECK(myriad_cookie_new(&c, S("seen"), S("yes")) == MYRIAD_OK);
    CHECK(myriad_req_set_cookie(req, c) == MYRIAD_OK);
    myriad_cookie_free(c);
    myriad_req_send(req, 200, S("text/plain"), (const uint8_t *)body, (size_t)len);
}

static void h_named(myriad_req_t *req, void *ud) {
    myriad_req_send(req, 200, S("text/plain"), (const uint8_t *)ud, strlen((const char *)ud));
}

static void h_files(myriad_req_t *req, void *ud) {
    const char *p;
    size_t n;
    char body[256];
    (void)ud;
    CHECK(myriad_req_param(req, S("path"), &p, &n) == MYRIAD_OK);
    int len = snprintf(body, sizeof body, "file [%.*s]", (int)n, p);
    myriad_req_send(req, 200, S("text/plain"), (const uint8_t *)body, (size_t)len);
}

/* A before-hook: counts every request, answers 401 for /private/... without a token. */
static int hook(myriad_req_t *req, void *ud) {
    const char *p, *t;
    size_t n, tn;
    (void)ud;
    atomic_fetch_add(&hooks_run, 1);
    myriad_req_path(req, &p, &n);
    if (n >= 9 && !memcmp(p, "/private/", 9) && myriad_req_header(req, S("x-token"), &t, &tn) != MYRIAD_OK) {
        myriad_req_send(req, 401, S("text/plain"), (const uint8_t *)"no token", 8);
        return 1;
    }
    return 0;
}

static myriad_router_t *router;
static int port;

static void handler(myriad_req_t *req, void *ud) {
    const char *p;
    size_t n;
    (void)ud;
    myriad_req_path(req, &p, &n);
    if (n == 6 && !memcmp(p, "/match", 6)) {
        /* match-only, as the bindings use it: this request matches nothing */
        void *rud = NULL;
        CHECK(myriad_router_match(router, req, &rud, NULL, NULL) == MYRIAD_ENOTFOUND);
        myriad_req_send(req, 200, S("text/plain"), (const uint8_t *)"matched", 7);
        return;
    }
    if (n == 7 && !memcmp(p, "/match2", 7)) {
        void *rud = NULL;
        const char *allow;
        size_t al;
        CHECK(myriad_router_match(router, req, &rud, &allow, &al) == MYRIAD_EMETHOD);
        CHECK(al == 9 && memcmp(allow, "GET, HEAD", 9) == 0);
        myriad_req_send(req, 200, S("text/plain"), (const uint8_t *)"m2", 2);
        return;
    }
    CHECK(myriad_router_dispatch(router, req) == MYRIAD_OK);
}

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
    ssize_t r;
    while ((r = read(fd, out + len, cap - len - 1)) > 0) {
        len += (size_t)r;
        if (len + 1 == cap) out = realloc(out, cap *= 2);
    }
    out[len] = 0;
    close(fd);
    return out;
}

static myriad_server_t *srv;
static myriad_loop_t *lp;
static void drained(myriad_loop_t *l, void *ud) { (void)ud; myriad_loop_stop(l); }
static void do_shutdown(myriad_loop_t *l, void *ud) { (void)l; (void)ud; myriad_server_shutdown(srv, drained, NULL); }

static void expect(const char *req, const char *want) {
    char full[512];
    snprintf(full, sizeof full, "%s HTTP/1.1\r\nHost: t\r\nConnection: close\r\nCookie: a=1; sid=s3cr3t\r\n\r\n", req);
    char *r = http(full);
    int ok = r && strstr(r, want);
    if (!ok) { printf("FAIL %s: want [%s] in [%s]\n", req, want, r ? r : "(null)"); failed++; }
    else passed++;
    free(r);
}

static void *client(void *arg) {
    (void)arg;
    expect("GET /users/42", "\r\n\r\nuser 42 cookie s3cr3t");
    expect("GET /users/42", "Set-Cookie: seen=yes\r\n");
    expect("GET /users/new", "\r\n\r\nnew user form");
    expect("GET /users/a%20b", "user a b cookie");
    expect("GET /users/%zz", "HTTP/1.1 400");
    expect("GET /users/", "HTTP/1.1 404");
    expect("DELETE /users/1", "HTTP/1.1 405");
    expect("DELETE /users/1", "Allow: GET, HEAD, PUT\r\n");
    expect("PUT /users/1", "\r\n\r\nput");
    expect("HEAD /users/7", "HTTP/1.1 200");
    expect("GET /files/a/b%2Fc.txt", "file [a/b/c.txt]");
    expect("GET /files/", "file []");
    expect("GET /private/x", "HTTP/1.1 401");
    expect("GET /nothing", "HTTP/1.1 404");
    expect("GET /nothing", "\r\n\r\nNot Found");
    expect("GET /match", "matched");
    expect("POST /match2", "m2");
    myriad_loop_post(lp, do_shutdown, NULL, NULL);
    return NULL;
}

static void test_router(void) {
    char msg[256];
    CHECK(myriad_router_new(NULL) == MYRIAD_EINVAL);
    CHECK(myriad_router_new(&router) == MYRIAD_OK);
    CHECK(myriad_router_add(router, S("GET"), S("/users/:id"), h_user, NULL, count_dtor) == MYRIAD_OK);
    CHECK(myriad_router_add(router, S("PUT"), S("/users/:id"), h_named, (void *)"put", NULL) == MYRIAD_OK);
    CHECK(myriad_router_add(router, S("GET"), S("/users/new"), h_named, (void *)"new user form", NULL) == MYRIAD_OK);
    CHECK(myriad_router_add(router, S("GET"), S("/files/*path"), h_files, NULL, NULL) == MYRIAD_OK);
    CHECK(myriad_router_add(router, S("GET"), S("/match2"), h_named, NULL, NULL) == MYRIAD_OK);
    int before = atomic_load(&dtors);
    CHECK(myriad_router_add(router, S("GET"), S("/users/:id"), h_user, NULL, count_dtor) == MYRIAD_ECONFLICT);
    CHECK(myriad_router_last_error(router, msg, sizeof msg) > 0 && strstr(msg, "GET /users/:id"));
    CHECK(myriad_router_add(router, S("GET"), S("/users/:name/posts"), h_user, NULL, count_dtor) == MYRIAD_ECONFLICT);
    CHECK(myriad_router_add(router, S("GET"), S("users"), h_user, NULL, count_dtor) == MYRIAD_EPATTERN);
    CHECK(myriad_router_last_error(router, msg, sizeof msg) > 0 && strstr(msg, "starts with '/'"));
    CHECK(myriad_router_add(router, S("GET"), S("/a/*w/b"), h_user, NULL, count_dtor) == MYRIAD_EPATTERN);
    CHECK(myriad_router_add(router, S("G T"), S("/a"), h_user, NULL, count_dtor) == MYRIAD_EPATTERN);
    CHECK(myriad_router_add(router, NULL, 3, S("/a"), h_user, NULL, NULL) == MYRIAD_EINVAL);
    CHECK(myriad_router_last_error(router, msg, 2) == MYRIAD_EINVAL);
    CHECK(atomic_load(&dtors) == before); /* refused routes keep their user data */
    CHECK(myriad_router_before(router, NULL, NULL, NULL) == MYRIAD_EINVAL);
    CHECK(myriad_router_before(router, hook, NULL, count_dtor) == MYRIAD_OK);
    CHECK(myriad_strerror(MYRIAD_ECONFLICT) != NULL && strstr(myriad_strerror(MYRIAD_ECONFLICT), "conflict"));

    CHECK(myriad_server_new(&srv) == MYRIAD_OK);
    CHECK(myriad_loop_new(&lp) == MYRIAD_OK);
    CHECK(myriad_server_listen(srv, MYRIAD_HTTP, S("127.0.0.1:0")) == MYRIAD_OK);
    CHECK(myriad_server_set_handler(srv, handler, NULL, NULL) == MYRIAD_OK);
    CHECK(myriad_server_start(srv, lp) == MYRIAD_OK);
    char buf[128];
    int proto;
    CHECK(myriad_server_listener_addr(srv, 0, &proto, buf, sizeof buf) > 0);
    port = atoi(strrchr(buf, ':') + 1);
    pthread_t c;
    pthread_create(&c, NULL, client, NULL);
    CHECK(myriad_loop_run(lp) == MYRIAD_OK);
    pthread_join(c, NULL);
    CHECK(atomic_load(&hooks_run) == 15); /* every dispatched request, 401 included */
    myriad_server_free(srv);
    myriad_loop_free(lp);
    before = atomic_load(&dtors);
    myriad_router_free(router);
    CHECK(atomic_load(&dtors) == before + 2); /* the GET /users/:id route's and the hook's */
    myriad_router_free(NULL);
    CHECK(myriad_router_dispatch(NULL, NULL) == MYRIAD_EINVAL);
}

int main(void) {
    test_urlencoded();
    test_cookies();
    test_form();
    test_router();
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
