/*
 * echo.c — a TCP (or Unix socket) echo server on myriad streams.
 *
 *   echo [--listen ADDR]... [--cert FILE --key FILE]...
 *
 * ADDR is HOST:PORT, [V6]:PORT, unix:PATH or fd:N (default 127.0.0.1:7000). Prints
 * "listening ADDR" per listener. With --cert/--key (PEM; the first pair the default, the
 * others chosen by SNI) every listener speaks TLS (a bad file: its name, exit 2). Each connection gets back what it sends; reading pauses
 * while 256 KiB of echo wait for a peer that does not read; a connection silent for 60 s
 * is closed. SIGTERM/SIGINT: exit 0.
 */
#define _POSIX_C_SOURCE 200809L
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "myriad.h"

static size_t on_data(myriad_stream_t *s, const uint8_t *data, size_t len, void *ud) {
    (void)ud;
    /* One write per read: everything echoed in an iteration leaves in one send. */
    return myriad_stream_write(s, data, len) == MYRIAD_OK ? len : 0;
}

static void on_event(myriad_stream_t *s, int event, int error, void *ud) {
    (void)ud;
    if (event == MYRIAD_STREAM_EOF || event == MYRIAD_STREAM_TIMEOUT) myriad_stream_close(s);
    else if (event == MYRIAD_STREAM_CLOSED && error < 0)
        fprintf(stderr, "echo: connection closed: %s\n", myriad_strerror(error));
}

static void on_accept(myriad_stream_t *s, const char *peer, size_t peer_len, void *ud) {
    (void)peer; (void)peer_len; (void)ud;
    myriad_stream_set_callbacks(s, on_data, on_event, NULL, NULL);
    myriad_stream_set_timeouts(s, 60000, 60000);
    myriad_stream_set_watermarks(s, 64 * 1024, 256 * 1024);
}

static void on_signal(myriad_loop_t *lp, int signo, void *ud) {
    (void)signo; (void)ud;
    myriad_loop_stop(lp);
}

int main(int argc, char **argv) {
    myriad_loop_t *lp;
    myriad_tls_config_t *tls = NULL;
    int rc, n = 0;
    if ((rc = myriad_loop_new(&lp)) != MYRIAD_OK) {
        fprintf(stderr, "echo: %s\n", myriad_strerror(rc));
        return 1;
    }
    myriad_signal_watch(lp, SIGTERM, on_signal, NULL, NULL, NULL);
    myriad_signal_watch(lp, SIGINT, on_signal, NULL, NULL, NULL);
    /* --cert FILE --key FILE (repeatable; first the default, others by SNI): TLS. */
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--cert") != 0) continue;
        if (i + 3 >= argc || strcmp(argv[i + 2], "--key") != 0) {
            fprintf(stderr, "echo: --cert FILE --key FILE go in pairs\n");
            return 2;
        }
        if (!tls && myriad_tls_config_new(&tls) != MYRIAD_OK) return 1;
        if (myriad_tls_config_add_cert_files(tls, argv[i + 1], strlen(argv[i + 1]), argv[i + 3], strlen(argv[i + 3])) != MYRIAD_OK) {
            fprintf(stderr, "echo: %s\n", myriad_tls_config_error(tls));
            return 2;
        }
        i += 3;
    }
    for (int i = 1; i <= argc; i++) {
        const char *addr;
        if (i < argc && strcmp(argv[i], "--listen") == 0 && i + 1 < argc) addr = argv[++i];
        else if (i + 1 < argc && (strcmp(argv[i], "--cert") == 0 || strcmp(argv[i], "--key") == 0)) {
            i++;
            continue;
        } else if (i < argc) {
            fprintf(stderr, "usage: echo [--listen ADDR]... [--cert FILE --key FILE]...\n");
            return 2;
        } else if (n == 0) addr = "127.0.0.1:7000";
        else break;
        uint64_t id;
        rc = tls ? myriad_stream_listen_tls(lp, addr, strlen(addr), tls, on_accept, NULL, NULL, &id)
                 : myriad_stream_listen(lp, addr, strlen(addr), on_accept, NULL, NULL, &id);
        if (rc != MYRIAD_OK) {
            fprintf(stderr, "echo: %s: %s\n", addr, rc == MYRIAD_ETLS ? myriad_tls_config_error(tls) : myriad_strerror(rc));
            return 1;
        }
        char bound[256];
        if (myriad_stream_listener_addr(lp, id, bound, sizeof bound) >= 0) printf("listening %s\n", bound);
        n++;
    }
    fflush(stdout);
    rc = myriad_loop_run(lp);
    myriad_loop_free(lp);
    myriad_tls_config_free(tls);
    return rc == MYRIAD_OK ? 0 : 1;
}
