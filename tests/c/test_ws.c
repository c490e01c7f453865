/*
 * test_ws.c — WebSocket through the C ABI: accept with callbacks and options, echo of text
 * and binary, a refused upgrade (426), the close handshake with the client's code, an
 * application close, pub/sub from a callback, the subprotocol, user data destructors (one
 * per connection, after the close callback), and the error codes. A client thread writes
 * raw frames. Prints one line per failed check and ends with "N passed, M failed".
 */
#define _DEFAULT_SOURCE
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
#include <sys/time.h>
#include <unistd.h>

#include "check.h"

static int port;
static myriad_loop_t *main_lp;
static myriad_server_t *srv;
static atomic_int opened, closed, freed, refused, last_code;

static void ws_open(myriad_ws_t *ws, void *ud) {
    (void)ud;
    atomic_fetch_add(&opened, 1);
    CHECK(myriad_ws_subscribe(ws, S("room")) == MYRIAD_OK);
    CHECK(myriad_ws_subscribe(ws, S("room")) == MYRIAD_OK); /* twice is once */
    CHECK(myriad_ws_unsubscribe(ws, S("nope")) == MYRIAD_ENOTFOUND);
}

static void ws_message(myriad_ws_t *ws, int op, const uint8_t *d, size_t n, void *ud) {
    (void)ud;
    if (n > 4 && !memcmp(d, "pub:", 4)) {
        CHECK(myriad_ws_publish(NULL, S("room"), op, d + 4, n - 4) >= 1);
        return;
    }
    if (n == 5 && !memcmp(d, "close", 5)) {
        CHECK(myriad_ws_close(ws, 999, S("bad")) == MYRIAD_EWS_CODE);
        CHECK(myriad_ws_close(ws, 4001, S("done")) == MYRIAD_OK);
        CHECK(myriad_ws_send(ws, MYRIAD_WS_TEXT, (const uint8_t *)"late", 4) == MYRIAD_EWS_CLOSED);
        CHECK(myriad_ws_close(ws, 4001, S("again")) == MYRIAD_EWS_CLOSED);
        return;
    }
    if (n == 5 && !memcmp(d, "proto", 5)) {
        const char *p;
        size_t len;
        CHECK(myriad_ws_protocol(ws, &p, &len) == MYRIAD_OK);
        CHECK(myriad_ws_send(ws, MYRIAD_WS_TEXT, (const uint8_t *)p, len) == MYRIAD_OK);
        return;
    }
    CHECK(myriad_ws_send(ws, 7, d, n) == MYRIAD_EINVAL);
    CHECK(myriad_ws_send(ws, op, d, n) == MYRIAD_OK);
    CHECK(myriad_ws_queued(ws) >= n);
}

static void ws_close(myriad_ws_t *ws, int code, const char *reason, size_t len, void *ud) {
    (void)ws; (void)reason; (void)len; (void)ud;
    atomic_store(&last_code, code);
    atomic_fetch_add(&closed, 1);
}

static void ws_free(void *ud) {
    /* After the close callback, once per connection. */
    CHECK(atomic_load(&closed) > atomic_load(&freed));
    atomic_fetch_add(&freed, 1);
    free(ud);
}

static void handler(myriad_req_t *req, void *ud) {
    (void)ud;
    const char *path;
    size_t len;
    myriad_req_path(req, &path, &len);
    if (len == 3 && !memcmp(path, "/ws", 3)) {
        myriad_ws_options_t o;
        CHECK(myriad_ws_options_init(&o) == MYRIAD_OK);
        o.protocols = "chat, echo";
        o.protocols_len = strlen(o.protocols);
        myriad_ws_callbacks_t cbs = {ws_open, ws_message, NULL, ws_close};
        myriad_ws_t *ws = NULL;
        void *mine = malloc(16);
        int rc = myriad_ws_accept(req, &o, &cbs, &ws, mine, ws_free);
        if (rc != MYRIAD_OK) free(mine); /* not taken: no destructor on a refusal */
        if (rc == MYRIAD_EWS_REFUSED) {
            atomic_fetch_add(&refused, 1);
            return;
        }
        CHECK(rc == MYRIAD_OK && ws != NULL);
        return;
    }
    myriad_req_send(req, 404, S("text/plain"), (const uint8_t *)"no", 2);
}

static int tcp_connect(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) { close(fd); return -1; }
    struct timeval tv = {10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

static int read_n(int fd, uint8_t *b, size_t n) {
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, b + got, n - got);
        if (r <= 0) return -1;
        got += (size_t)r;
    }
    return 0;
}

/* Sends the upgrade; returns the fd after the 101 head (or -1), the head in `head`. */
static int upgrade(const char *extra, char *head, size_t cap) {
    int fd = tcp_connect();
    if (fd < 0) return -1;
    char req[512];
    int n = snprintf(req, sizeof req,
                     "GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n%s\r\n",
                     extra);
    if (write(fd, req, (size_t)n) != n) { close(fd); return -1; }
    size_t len = 0;
    while (len + 1 < cap) {
        if (read(fd, head + len, 1) != 1) break;
        len++;
        if (len >= 4 && !memcmp(head + len - 4, "\r\n\r\n", 4)) break;
    }
    head[len] = 0;
    return fd;
}

static void send_frame(int fd, int op, const void *p, size_t n) {
    uint8_t f[256];
    const uint8_t key[4] = {1, 2, 3, 4};
    f[0] = (uint8_t)(0x80 | op);
    f[1] = (uint8_t)(0x80 | n); /* n < 126 here */
    memcpy(f + 2, key, 4);
    for (size_t i = 0; i < n; i++) f[6 + i] = ((const uint8_t *)p)[i] ^ key[i % 4];
    CHECK(write(fd, f, 6 + n) == (ssize_t)(6 + n));
}

/* Reads one (short) server frame; returns its opcode, -1 at EOF. */
static int read_frame(int fd, uint8_t *p, size_t *n) {
    uint8_t h[2];
    if (read_n(fd, h, 2)) return -1;
    CHECK((h[1] & 0x80) == 0);
    *n = h[1] & 0x7F;
    if (*n >= 126 || read_n(fd, p, *n)) return -1;
    return h[0] & 0x0F;
}

static void *client(void *arg) {
    (void)arg;
    char head[1024];
    uint8_t p[256];
    size_t n;
    /* A plain GET of /ws: 426 with Upgrade: websocket. */
    int fd = tcp_connect();
    const char *plain = "GET /ws HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    CHECK(write(fd, plain, strlen(plain)) == (ssize_t)strlen(plain));
    ssize_t r = read(fd, head, sizeof head - 1);
    head[r > 0 ? r : 0] = 0;
    CHECK(!strncmp(head, "HTTP/1.1 426", 12));
    CHECK(strstr(head, "Upgrade: websocket\r\n") != NULL);
    close(fd);

    /* Echo, the subprotocol, pub/sub, the client's close code. */
    fd = upgrade("Sec-WebSocket-Protocol: superchat, echo\r\n", head, sizeof head);
    CHECK(!strncmp(head, "HTTP/1.1 101", 12));
    CHECK(strstr(head, "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n") != NULL);
    CHECK(strstr(head, "Sec-WebSocket-Protocol: echo\r\n") != NULL);
    send_frame(fd, 1, "hello", 5);
    CHECK(read_frame(fd, p, &n) == 1 && n == 5 && !memcmp(p, "hello", 5));
    send_frame(fd, 2, "\x00\xff", 2);
    CHECK(read_frame(fd, p, &n) == 2 && n == 2 && p[1] == 0xff);
    send_frame(fd, 1, "proto", 5);
    CHECK(read_frame(fd, p, &n) == 1 && n == 4 && !memcmp(p, "echo", 4));
    send_frame(fd, 9, "pi", 2);
    CHECK(read_frame(fd, p, &n) == 10 && n == 2 && !memcmp(p, "pi", 2));
    int fd2 = upgrade("", head, sizeof head);
    send_frame(fd2, 1, "pub:news", 8);
    CHECK(read_frame(fd, p, &n) == 1 && n == 4 && !memcmp(p, "news", 4));
    CHECK(read_frame(fd2, p, &n) == 1 && n == 4 && !memcmp(p, "news", 4));
    send_frame(fd, 8, "\x0f\xa0" "bye", 5); /* 4000 */
    CHECK(read_frame(fd, p, &n) == 8 && n == 2 && p[0] == 0x0f && p[1] == 0xa0);
    CHECK(read_frame(fd, p, &n) == -1);
    close(fd);

    /* An application close: 4001 "done", answered by the client. */
    send_frame(fd2, 1, "close", 5);
    CHECK(read_frame(fd2, p, &n) == 8 && n == 6 && p[0] == 0x0f && p[1] == 0xa1 && !memcmp(p + 2, "done", 4));
    send_frame(fd2, 8, "\x0f\xa1", 2);
    CHECK(read_frame(fd2, p, &n) == -1);
    close(fd2);

    /* A protocol error: an unmasked frame gets 1002. */
    fd = upgrade("", head, sizeof head);
    CHECK(write(fd, "\x81\x01x", 3) == 3);
    CHECK(read_frame(fd, p, &n) == 8 && n == 2 && p[0] == 0x03 && p[1] == 0xea);
    close(fd);
    for (int i = 0; i < 500 && atomic_load(&freed) < 3; i++) usleep(10000);
    myriad_loop_stop(main_lp);
    return NULL;
}

int main(void) {
    /* Argument checks, before any server. */
    CHECK(myriad_ws_options_init(NULL) == MYRIAD_EINVAL);
    CHECK(myriad_ws_send(NULL, MYRIAD_WS_TEXT, (const uint8_t *)"x", 1) == MYRIAD_EINVAL);
    CHECK(myriad_ws_close(NULL, 1000, NULL, 0) == MYRIAD_EINVAL);
    CHECK(myriad_ws_queued(NULL) == 0);
    CHECK(myriad_ws_accept(NULL, NULL, NULL, NULL, NULL, NULL) == MYRIAD_EINVAL);
    CHECK(myriad_ws_publish(NULL, S("room"), 9, NULL, 0) == MYRIAD_EINVAL);
    CHECK(myriad_ws_publish(NULL, S("room"), MYRIAD_WS_TEXT, NULL, 0) == 0);
    CHECK(strcmp(myriad_strerror(MYRIAD_EWS_BACKPRESSURE), "unknown error code") != 0);
    CHECK(strcmp(myriad_strerror(MYRIAD_EWS_REFUSED), myriad_strerror(MYRIAD_EWS_CLOSED)) != 0);

    CHECK(myriad_loop_new(&main_lp) == MYRIAD_OK);
    CHECK(myriad_server_new(&srv) == MYRIAD_OK);
    CHECK(myriad_server_listen(srv, MYRIAD_HTTP, S("127.0.0.1:0")) == MYRIAD_OK);
    CHECK(myriad_server_set_handler(srv, handler, NULL, NULL) == MYRIAD_OK);
    CHECK(myriad_server_start(srv, main_lp) == MYRIAD_OK);
    char buf[128];
    int proto;
    CHECK(myriad_server_listener_addr(srv, 0, &proto, buf, sizeof buf) > 0);
    port = atoi(strrchr(buf, ':') + 1);
    pthread_t th;
    pthread_create(&th, NULL, client, NULL);
    CHECK(myriad_loop_run(main_lp) == MYRIAD_OK);
    pthread_join(th, NULL);
    CHECK(atomic_load(&refused) == 1);
    CHECK(atomic_load(&opened) == 3);
    CHECK(atomic_load(&closed) == 3);
    CHECK(atomic_load(&freed) == 3);
    CHECK(atomic_load(&last_code) == 1002);
    myriad_server_free(srv);
    myriad_loop_free(main_lp);
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
