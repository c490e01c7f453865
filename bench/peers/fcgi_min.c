#define _GNU_SOURCE
/* A minimal hand-written epoll FastCGI responder on fd 0 (spawn-fcgi): the floor the bench
 * measures myriad's FastCGI backend against. It answers every request, once its empty STDIN
 * record arrives, with the hello-world response, and closes the connection unless the web
 * server asked to keep it. No params are looked at: a yardstick, not an application server. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define BODY "Status: 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!"
#define BLEN (sizeof BODY - 1)

struct conn { int fd, keep; unsigned have; unsigned char in[16384]; };

static size_t reply(unsigned char *o, unsigned id) {
    unsigned char h[8] = {1, 6, id >> 8, id & 255, BLEN >> 8, BLEN & 255, (8 - BLEN % 8) % 8, 0};
    size_t n = 0, pad = h[6];
    memcpy(o, h, 8); n += 8;
    memcpy(o + n, BODY, BLEN); n += BLEN;
    memset(o + n, 0, pad); n += pad;
    unsigned char e[8] = {1, 6, id >> 8, id & 255, 0, 0, 0, 0};          /* empty STDOUT */
    memcpy(o + n, e, 8); n += 8;
    unsigned char end[16] = {1, 3, id >> 8, id & 255, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    memcpy(o + n, end, 16); n += 16;
    return n;
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL}, evs[256];
    epoll_ctl(ep, EPOLL_CTL_ADD, 0, &ev);
    static unsigned char out[1 << 16];
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (!c) {
                int fd;
                while ((fd = accept4(0, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    c = calloc(1, sizeof *c);
                    c->fd = fd;
                    struct epoll_event e = {.events = EPOLLIN, .data.ptr = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e);
                }
                continue;
            }
            ssize_t r = recv(c->fd, c->in + c->have, sizeof c->in - c->have, 0);
            if (r <= 0) {
                if (r < 0 && errno == EAGAIN) continue;
                close(c->fd); free(c); continue;
            }
            c->have += r;
            size_t at = 0, k = 0;
            int done = 0;
            while (c->have - at >= 8) {
                unsigned char *h = c->in + at;
                size_t len = (h[4] << 8 | h[5]) + h[6];
                if (c->have - at < 8 + len) break;
                unsigned id = h[2] << 8 | h[3];
                if (h[1] == 1) c->keep = h[9] & 1;                  /* BEGIN_REQUEST flags */
                if (h[1] == 5 && (h[4] << 8 | h[5]) == 0) {          /* empty STDIN: answer */
                    if (k + 128 + BLEN > sizeof out) break;
                    k += reply(out + k, id);
                    if (!c->keep) done = 1;
                }
                at += 8 + len;
            }
            memmove(c->in, c->in + at, c->have - at);
            c->have -= at;
            if ((k && send(c->fd, out, k, MSG_NOSIGNAL) != (ssize_t)k) || done || c->have == sizeof c->in) {
                close(c->fd); free(c);
            }
        }
    }
}
