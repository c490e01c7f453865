/*
 * ws_server.c — the myriad side of bench/ws/run, on the C ABI (one thread):
 *   GET /ws   WebSocket echo (each message back as the same kind)
 *   GET /sub  WebSocket subscribed to "bcast"; a message "pub:X" on any socket publishes X
 *             to every subscriber (encoded once)
 *   GET /     "ok" (for the idle keep-alive HTTP comparison)
 *   ws_server ADDR   (prints "listening ADDR" once ready; SIGTERM/SIGINT stop it)
 */
#define _POSIX_C_SOURCE 200809L
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "myriad.h"

static myriad_loop_t *lp;

static void on_message(myriad_ws_t *ws, int op, const uint8_t *d, size_t n, void *ud) {
    (void)ud;
    if (n > 4 && !memcmp(d, "pub:", 4)) {
        myriad_ws_publish(NULL, "bcast", 5, op, d + 4, n - 4);
        return;
    }
    myriad_ws_send(ws, op, d, n);
}

static void on_open_sub(myriad_ws_t *ws, void *ud) {
    (void)ud;
    myriad_ws_subscribe(ws, "bcast", 5);
}

static void handler(myriad_req_t *req, void *ud) {
    const char *p;
    size_t n;
    (void)ud;
    myriad_req_path(req, &p, &n);
    myriad_ws_options_t o;
    myriad_ws_options_init(&o);
    o.deflate = 0;
    o.idle_timeout_ms = 0;
    if (n == 3 && !memcmp(p, "/ws", 3)) {
        myriad_ws_callbacks_t cb = {NULL, on_message, NULL, NULL};
        myriad_ws_accept(req, &o, &cb, NULL, NULL, NULL);
    } else if (n == 4 && !memcmp(p, "/sub", 4)) {
        myriad_ws_callbacks_t cb = {on_open_sub, on_message, NULL, NULL};
        myriad_ws_accept(req, &o, &cb, NULL, NULL, NULL);
    } else {
        myriad_req_send(req, 200, "text/plain", 10, (const uint8_t *)"ok", 2);
    }
}

static void on_signal(myriad_loop_t *l, int signo, void *ud) {
    (void)signo;
    (void)ud;
    myriad_loop_stop(l);
}

int main(int argc, char **argv) {
    const char *addr = argc > 1 ? argv[1] : "127.0.0.1:0";
    myriad_server_t *srv;
    char buf[128];
    int proto;
    if (myriad_loop_new(&lp) || myriad_server_new(&srv)) return 1;
    if (myriad_server_listen(srv, MYRIAD_HTTP, addr, strlen(addr)) || myriad_server_set_handler(srv, handler, NULL, NULL) ||
        myriad_server_start(srv, lp))
        return 1;
    myriad_signal_watch(lp, SIGTERM, on_signal, NULL, NULL, NULL);
    myriad_signal_watch(lp, SIGINT, on_signal, NULL, NULL, NULL);
    myriad_server_listener_addr(srv, 0, &proto, buf, sizeof buf);
    printf("listening %s\n", buf);
    fflush(stdout);
    myriad_loop_run(lp);
    myriad_server_free(srv);
    myriad_loop_free(lp);
    return 0;
}
