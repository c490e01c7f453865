/* libmicrohttpd hello world: epoll, internal thread, turbo. Usage: mhd PORT */
#include <microhttpd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static struct MHD_Response *resp;

static enum MHD_Result handler(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                               const char *version, const char *upload, size_t *upload_size, void **ptr) {
    static int marker;
    (void)cls; (void)url; (void)method; (void)version; (void)upload; (void)upload_size;
    /* The first call only announces the request: a response queued then (before MHD knows
     * the request is complete) makes it answer "Connection: close" and drop keep-alive. */
    if (*ptr != &marker) {
        *ptr = &marker;
        return MHD_YES;
    }
    return MHD_queue_response(c, MHD_HTTP_OK, resp);
}

int main(int argc, char **argv) {
    sigset_t s;
    int sig;
    resp = MHD_create_response_from_buffer(13, (void *)"Hello, World!", MHD_RESPMEM_PERSISTENT);
    MHD_add_response_header(resp, "Content-Type", "text/plain");
    struct MHD_Daemon *d = MHD_start_daemon(MHD_USE_EPOLL_INTERNAL_THREAD | MHD_USE_TURBO, (uint16_t)atoi(argv[1]),
                                            NULL, NULL, handler, NULL, MHD_OPTION_CONNECTION_LIMIT, 20000,
                                            MHD_OPTION_CONNECTION_TIMEOUT, 120, MHD_OPTION_END);
    if (!d) return 1;
    printf("ready\n");
    fflush(stdout);
    sigemptyset(&s);
    sigaddset(&s, SIGTERM);
    sigaddset(&s, SIGINT);
    sigprocmask(SIG_BLOCK, &s, NULL);
    sigwait(&s, &sig);
    MHD_stop_daemon(d);
    return 0;
}
