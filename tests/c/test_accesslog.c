/*
 * test_accesslog.c — the access log from C: every function with its error paths, a
 * callback log on a 2-thread server (a line per request from either thread), a file log
 * written in a few writes and reopened after a rename, a full disk (/dev/full) reported
 * once through the log hook while every request is still answered. Ends with
 * "N passed, M failed".
 */
#define _POSIX_C_SOURCE 200809L
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "check.h"

static int port;
static myriad_server_t *srv;
static myriad_loop_t *lp;
static atomic_int cb_lines, cb_bad, reports, dtor_called;

static void handler(myriad_req_t *req, void *ud) {
    (void)ud;
    myriad_req_send(req, 200, S("text/plain"), (const uint8_t *)"hi", 2);
}

static void on_line(const char *line, size_t len, void *ud) {
    (void)ud;
    /* "$status $request_method $uri $protocol" */
    if (len == 16 && !memcmp(line, "200 GET /cb HTTP", 16)) atomic_fetch_add(&cb_lines, 1);
    else atomic_fetch_add(&cb_bad, 1);
}

static void on_log(int level, const char *msg, size_t len, void *ud) {
    char m[512];
    (void)ud;
    snprintf(m, sizeof m, "%.*s", (int)len, msg);
    if (level == 1 && strstr(m, "access log /dev/full: ") && strstr(m, "No space left")) atomic_fetch_add(&reports, 1);
}

static void count_dtor(void *ud) { (void)ud; atomic_fetch_add(&dtor_called, 1); }

/* N keep-alive requests for `path` on one connection; returns how many got a 200. */
static int requests(const char *path, int n) {
    int fd = socket(AF_INET, SOCK_STREAM, 0), ok = 0;
    struct sockaddr_in a = {0};
    char req[256], buf[4096];
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) { close(fd); return 0; }
    snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: t\r\n\r\n", path);
    for (int i = 0; i < n; i++) {
        size_t got = 0;
        if (write(fd, req, strlen(req)) < 0) break;
        while (got < 4 || !strstr(buf, "\r\n\r\nhi")) {
            ssize_t r = read(fd, buf + got, sizeof buf - got - 1);
            if (r <= 0) { close(fd); return ok; }
            got += (size_t)r;
            buf[got] = 0;
        }
        if (!strncmp(buf, "HTTP/1.1 200", 12)) ok++;
    }
    close(fd);
    return ok;
}

struct job { const char *path; int conns, each, ok; };
static void drained(myriad_loop_t *l, void *ud) { (void)ud; myriad_loop_stop(l); }
static void do_shutdown(myriad_loop_t *l, void *ud) { (void)l; (void)ud; myriad_server_shutdown(srv, drained, NULL); }
static void *client(void *arg) {
    struct job *j = arg;
    for (int c = 0; c < j->conns; c++) j->ok += requests(j->path, j->each);
    myriad_loop_post(lp, do_shutdown, NULL, NULL);
    return NULL;
}

/* Serves with `log` on `threads` threads while a client makes conns x each requests. */
static int serve(myriad_access_log_t *log, uint32_t threads, const char *path, int conns, int each) {
    char buf[128];
    int proto;
    struct job j = {path, conns, each, 0};
    pthread_t t;
    CHECK(myriad_server_new(&srv) == MYRIAD_OK);
    CHECK(myriad_server_listen(srv, MYRIAD_HTTP, S("127.0.0.1:0")) == MYRIAD_OK);
    CHECK(myriad_server_set_threads(srv, threads) == MYRIAD_OK);
    CHECK(myriad_server_set_handler(srv, handler, NULL, NULL) == MYRIAD_OK);
    CHECK(myriad_server_set_access_log(NULL, log) == MYRIAD_EINVAL);
    CHECK(myriad_server_set_access_log(srv, log) == MYRIAD_OK);
    CHECK(myriad_loop_new(&lp) == MYRIAD_OK);
    CHECK(myriad_server_start(srv, lp) == MYRIAD_OK);
    CHECK(myriad_server_set_access_log(srv, NULL) == MYRIAD_ESTATE);
    CHECK(myriad_server_listener_addr(srv, 0, &proto, buf, sizeof buf) > 0);
    port = atoi(strrchr(buf, ':') + 1);
    pthread_create(&t, NULL, client, &j);
    CHECK(myriad_loop_run(lp) == MYRIAD_OK);
    pthread_join(t, NULL);
    myriad_server_free(srv);
    myriad_loop_free(lp);
    return j.ok;
}

static int count_lines(const char *path, const char *needle) {
    FILE *f = fopen(path, "r");
    char line[1024];
    int n = 0;
    if (!f) return -1;
    while (fgets(line, sizeof line, f))
        if (strstr(line, needle)) n++;
    fclose(f);
    return n;
}

int main(void) {
    myriad_access_log_t *log = NULL;
    myriad_access_log_stats_t st;
    char path[256], old[300];
    snprintf(path, sizeof path, "/tmp/myriad-c-alog-%d.log", (int)getpid());
    snprintf(old, sizeof old, "%s.1", path);

    /* Errors. */
    CHECK(myriad_access_log_new(NULL, S("-"), NULL, 0) == MYRIAD_EINVAL);
    CHECK(myriad_access_log_new(&log, NULL, 0, NULL, 0) == MYRIAD_EINVAL);
    CHECK(myriad_access_log_new(&log, S(""), NULL, 0) == MYRIAD_EINVAL);
    CHECK(myriad_access_log_new(&log, S("-"), S("$nope")) == MYRIAD_EINVAL);
    CHECK(myriad_access_log_new(&log, S("-"), S("${status")) == MYRIAD_EINVAL);
    CHECK(myriad_access_log_new(&log, S("/nonexistent-dir/a.log"), NULL, 0) == MYRIAD_EOS_BASE - 2); /* ENOENT */
    CHECK(log == NULL);
    CHECK(myriad_access_log_new_callback(&log, NULL, 0, NULL, NULL, NULL) == MYRIAD_EINVAL);
    CHECK(myriad_access_log_reopen(NULL) == MYRIAD_EINVAL);
    CHECK(myriad_access_log_stats(NULL, &st) == MYRIAD_EINVAL);
    myriad_access_log_free(NULL);

    /* A callback log on two threads: each line once, without its newline. */
    CHECK(myriad_access_log_new_callback(&log, S("$status $request_method $uri $protocol"), on_line, NULL,
                                         count_dtor) == MYRIAD_OK);
    CHECK(myriad_access_log_stats(log, NULL) == MYRIAD_EINVAL);
    CHECK(myriad_access_log_reopen(log) == MYRIAD_OK); /* nothing to reopen */
    CHECK(serve(log, 2, "/cb", 8, 25) == 200);
    CHECK(atomic_load(&cb_lines) == 200);
    CHECK(atomic_load(&cb_bad) == 0);
    CHECK(myriad_access_log_stats(log, &st) == MYRIAD_OK && st.lines == 200 && st.writes == 0);
    CHECK(atomic_load(&dtor_called) == 0);
    myriad_access_log_free(log); /* the last user: the destructor runs */
    CHECK(atomic_load(&dtor_called) == 1);

    /* A file log: 2,000 requests in a few writes; a rename + reopen starts a new file. */
    unlink(path);
    unlink(old);
    CHECK(myriad_access_log_new(&log, path, strlen(path), NULL, 0) == MYRIAD_OK);
    CHECK(serve(log, 1, "/file", 4, 500) == 2000);
    CHECK(myriad_access_log_stats(log, &st) == MYRIAD_OK && st.lines == 2000 && st.dropped == 0);
    CHECK(st.writes >= 1 && st.writes <= 8);
    CHECK(count_lines(path, "\"GET /file HTTP/1.1\" 200 2 \"-\" \"-\"") == 2000);
    CHECK(rename(path, old) == 0);
    CHECK(myriad_access_log_reopen(log) == MYRIAD_OK);
    CHECK(serve(log, 1, "/new", 1, 3) == 3);
    CHECK(count_lines(path, "\"GET /new HTTP/1.1\" 200") == 3);
    CHECK(count_lines(old, "GET /new") == 0);
    myriad_access_log_free(log);
    unlink(path);
    unlink(old);

    /* A full disk: every request answered, lines dropped and counted, reported once. */
    CHECK(myriad_set_logger(on_log, NULL, 2) == MYRIAD_OK);
    CHECK(myriad_access_log_new(&log, S("/dev/full"), NULL, 0) == MYRIAD_OK);
    CHECK(serve(log, 1, "/full", 3, 400) == 1200);
    CHECK(myriad_access_log_stats(log, &st) == MYRIAD_OK && st.lines == 0 && st.dropped == 1200);
    CHECK(st.writes >= 2);
    CHECK(atomic_load(&reports) == 1);
    myriad_access_log_free(log);
    myriad_set_logger(NULL, NULL, 0);

    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
