/* libevent evhttp hello world. Usage: evhttp PORT */
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

static void handler(struct evhttp_request *req, void *arg) {
    (void)arg;
    struct evbuffer *b = evbuffer_new();
    evbuffer_add_reference(b, "Hello, World!", 13, NULL, NULL);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "text/plain");
    evhttp_send_reply(req, 200, "OK", b);
    evbuffer_free(b);
}

static void on_sig(evutil_socket_t fd, short ev, void *arg) {
    (void)fd; (void)ev;
    event_base_loopbreak(arg);
}

int main(int argc, char **argv) {
    (void)argc;
    /* libevent leaves SIGPIPE alone: a write to a client that left (wrk closing with
     * pipelined responses in flight) would kill the process, as a real server must not. */
    signal(SIGPIPE, SIG_IGN);
    struct event_base *base = event_base_new();
    struct evhttp *http = evhttp_new(base);
    evhttp_set_gencb(http, handler, NULL);
    if (evhttp_bind_socket(http, "127.0.0.1", (unsigned short)atoi(argv[1])) != 0) return 1;
    struct event *s1 = evsignal_new(base, SIGTERM, on_sig, base);
    event_add(s1, NULL);
    printf("ready\n");
    fflush(stdout);
    event_base_dispatch(base);
    event_free(s1);
    evhttp_free(http);
    event_base_free(base);
    return 0;
}
