/*
 * test_files.c — file responses and the static file handler from C: myriad_req_write_file
 * (an fd body by sendfile; errors leave the fd the caller's), myriad_files_* (every setter
 * and its errors, serving on a 2-thread server: each thread its own FileServer), the
 * loop's file counters, and the error codes' descriptions. Ends with "N passed, M failed".
 */
#define _POSIX_C_SOURCE 200809L
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"

static int port;
static myriad_server_t *srv;
static myriad_loop_t *lp;
static myriad_files_t *files;
static char dir[100];
static atomic_int bad_fd_ok, serve_errors;

static void handler(myriad_req_t *req, void *ud) {
    const char *p;
    size_t n;
    (void)ud;
    myriad_req_path(req, &p, &n);
    if (n >= 8 && !memcmp(p, "/static/", 8)) {
        if (myriad_files_serve(files, req, p + 8, n - 8) != MYRIAD_OK) atomic_fetch_add(&serve_errors, 1);
        return;
    }
    if (n == 3 && !memcmp(p, "/fd", 3)) {
        char path[300];
        snprintf(path, sizeof path, "%s/big.bin", dir);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        myriad_req_header_add(req, S("Content-Type"), S("application/octet-stream"));
        myriad_req_write(req, (const uint8_t *)"<", 1);
        if (myriad_req_write_file(req, fd, 10, UINT64_MAX) != MYRIAD_OK) close(fd);
        myriad_req_write(req, (const uint8_t *)">", 1);
        myriad_req_finish(req);
        return;
    }
    if (n == 6 && !memcmp(p, "/fdbad", 6)) {
        int pipefd[2], ok = 1;
        char path[300];
        snprintf(path, sizeof path, "%s/a.txt", dir);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        ok &= pipe(pipefd) == 0;
        ok &= myriad_req_write_file(req, pipefd[0], 0, 1) == MYRIAD_EFILES_FD;
        ok &= myriad_req_write_file(req, -1, 0, 1) == MYRIAD_EINVAL;
        ok &= myriad_req_write_file(req, fd, 0, 100) == MYRIAD_EFILES_RANGE;
        ok &= myriad_req_write_file(req, fd, 6, 1) == MYRIAD_EFILES_RANGE;
        ok &= myriad_req_write_file(NULL, fd, 0, 1) == MYRIAD_EINVAL;
        /* The descriptors are still the caller's. */
        ok &= fcntl(fd, F_GETFD) >= 0 && fcntl(pipefd[0], F_GETFD) >= 0;
        close(fd);
        close(pipefd[0]);
        close(pipefd[1]);
        if (ok) atomic_fetch_add(&bad_fd_ok, 1);
        myriad_req_send(req, 200, S("text/plain"), (const uint8_t *)"checked", 7);
        return;
    }
    myriad_req_send(req, 404, S("text/plain"), (const uint8_t *)"no", 2);
}

/* One request with Connection: close; the response (head and body) into buf. */
static size_t fetch(const char *line, char *buf, size_t cap) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    char req[512];
    size_t got = 0;
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) { close(fd); return 0; }
    snprintf(req, sizeof req, "%s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", line);
    if (write(fd, req, strlen(req)) < 0) { close(fd); return 0; }
    for (;;) {
        ssize_t r = read(fd, buf + got, cap - got - 1);
        if (r <= 0) break;
        got += (size_t)r;
    }
    buf[got] = 0;
    close(fd);
    return got;
}

static const char *body(const char *resp) {
    const char *b = strstr(resp, "\r\n\r\n");
    return b ? b + 4 : "";
}

static atomic_int client_ok;
static char *big;
static const size_t big_len = 3 * 1024 * 1024;

static void drained(myriad_loop_t *l, void *ud) { (void)ud; myriad_loop_stop(l); }
static void do_shutdown(myriad_loop_t *l, void *ud) { (void)l; (void)ud; myriad_server_shutdown(srv, drained, NULL); }
static void *client(void *arg) {
    static char buf[4 * 1024 * 1024];
    int ok = 1;
    (void)arg;
    for (int i = 0; i < 8; i++) { /* spread over both threads */
        fetch("GET /static/a.txt", buf, sizeof buf);
        ok &= !strncmp(buf, "HTTP/1.1 200", 12) && !strcmp(body(buf), "hello");
        ok &= strstr(buf, "Content-Type: text/plain\r\n") != NULL && strstr(buf, "ETag: \"") != NULL;
    }
    fetch("GET /static/../secret", buf, sizeof buf);
    ok &= !strncmp(buf, "HTTP/1.1 400", 12);
    fetch("GET /static/missing", buf, sizeof buf);
    ok &= !strncmp(buf, "HTTP/1.1 404", 12);
    fetch("GET /static/sub", buf, sizeof buf);
    ok &= !strncmp(buf, "HTTP/1.1 301", 12) && strstr(buf, "Location: /static/sub/\r\n") != NULL;
    fetch("GET /static/sub/", buf, sizeof buf);
    ok &= !strncmp(buf, "HTTP/1.1 200", 12) && !strcmp(body(buf), "home");
    fetch("GET /static/a.txt", buf, sizeof buf);
    ok &= strstr(buf, "Cache-Control: max-age=5\r\n") != NULL;
    fetch("POST /static/a.txt", buf, sizeof buf);
    ok &= !strncmp(buf, "HTTP/1.1 405", 12) && strstr(buf, "Allow: GET, HEAD\r\n") != NULL;
    size_t n = fetch("GET /fd", buf, sizeof buf);
    const char *b = body(buf);
    ok &= n > big_len && (size_t)(buf + n - b) == big_len - 10 + 2 && b[0] == '<' && b[big_len - 10 + 1] == '>' &&
          !memcmp(b + 1, big + 10, big_len - 10);
    fetch("GET /fdbad", buf, sizeof buf);
    ok &= !strcmp(body(buf), "checked");
    if (ok) atomic_fetch_add(&client_ok, 1);
    myriad_loop_post(lp, do_shutdown, NULL, NULL);
    return NULL;
}

static void put(const char *name, const char *data, size_t len) {
    char path[300];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    fwrite(data, 1, len, f);
    fclose(f);
}

int main(void) {
    char buf[128];
    int proto;
    pthread_t t;
    myriad_file_stats_t fst;

    snprintf(dir, sizeof dir, "/tmp/myriad-c-files-%d", (int)getpid());
    mkdir(dir, 0755);
    snprintf(buf, sizeof buf, "%s/sub", dir);
    mkdir(buf, 0755);
    put("a.txt", "hello", 5);
    put("sub/index.html", "home", 4);
    big = malloc(big_len);
    for (size_t i = 0; i < big_len; i++) big[i] = (char)(i % 251);
    put("big.bin", big, big_len);

    /* Errors. */
    CHECK(myriad_files_new(NULL, 0, &files) == MYRIAD_EINVAL);
    CHECK(myriad_files_new(S("/tmp"), NULL) == MYRIAD_EINVAL);
    CHECK(myriad_files_new(S("/nonexistent-myriad-root"), &files) == MYRIAD_EFILES_ROOT);
    CHECK(strstr(myriad_last_error_detail(), "/nonexistent-myriad-root") != NULL);
    CHECK(myriad_files_new(S("/etc/hostname"), &files) == MYRIAD_EFILES_ROOT);
    CHECK(strcmp(myriad_strerror(MYRIAD_EFILES_ROOT), "unknown error code") != 0);
    CHECK(strcmp(myriad_strerror(MYRIAD_EFILES_FD), "unknown error code") != 0);
    CHECK(strcmp(myriad_strerror(MYRIAD_EFILES_RANGE), "unknown error code") != 0);
    myriad_files_free(NULL);
    CHECK(myriad_files_set_index(NULL, S("index.html")) == MYRIAD_EINVAL);
    CHECK(myriad_files_serve(NULL, NULL, S("a")) == MYRIAD_EINVAL);

    CHECK(myriad_files_new(dir, strlen(dir), &files) == MYRIAD_OK);
    CHECK(myriad_files_set_index(files, S("a/b")) == MYRIAD_EINVAL);
    CHECK(myriad_files_set_index(files, S("..")) == MYRIAD_EINVAL);
    CHECK(myriad_files_set_index(files, S("index.html")) == MYRIAD_OK);
    CHECK(myriad_files_set_precompressed(files, 2) == MYRIAD_EINVAL);
    CHECK(myriad_files_set_precompressed(files, 0) == MYRIAD_OK);
    CHECK(myriad_files_set_cache_control(files, S("max-age=5\r\nX: y")) == MYRIAD_EINVAL);
    CHECK(myriad_files_set_cache_control(files, S("max-age=5")) == MYRIAD_OK);
    CHECK(myriad_files_set_cache(files, 16, 0) == MYRIAD_EINVAL);
    CHECK(myriad_files_set_cache(files, 16, 500) == MYRIAD_OK);

    CHECK(myriad_server_new(&srv) == MYRIAD_OK);
    CHECK(myriad_server_listen(srv, MYRIAD_HTTP, S("127.0.0.1:0")) == MYRIAD_OK);
    CHECK(myriad_server_set_threads(srv, 2) == MYRIAD_OK);
    CHECK(myriad_server_set_handler(srv, handler, NULL, NULL) == MYRIAD_OK);
    CHECK(myriad_loop_new(&lp) == MYRIAD_OK);
    CHECK(myriad_loop_file_stats(lp, NULL) == MYRIAD_EINVAL);
    CHECK(myriad_server_start(srv, lp) == MYRIAD_OK);
    CHECK(myriad_server_listener_addr(srv, 0, &proto, buf, sizeof buf) > 0);
    port = atoi(strrchr(buf, ':') + 1);
    pthread_create(&t, NULL, client, NULL);
    CHECK(myriad_loop_run(lp) == MYRIAD_OK);
    pthread_join(t, NULL);
    CHECK(atomic_load(&client_ok) == 1);
    CHECK(atomic_load(&bad_fd_ok) == 1);
    CHECK(atomic_load(&serve_errors) == 0);
    /* Options are fixed once serving started. */
    CHECK(myriad_files_set_precompressed(files, 1) == MYRIAD_ESTATE);
    CHECK(myriad_loop_file_stats(lp, &fst) == MYRIAD_OK);
    CHECK(fst.file_copied == 0);
    myriad_server_free(srv);
    myriad_loop_free(lp);
    myriad_files_free(files);
    free(big);

    snprintf(buf, sizeof buf, "rm -rf %s", dir);
    CHECK(system(buf) == 0);
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
