/* A minimal hand-written epoll HTTP/1.1 server: the floor the bench measures myriad against.
 * It answers every request with the same hello-world response and understands nothing else:
 * a request is whatever ends in an empty line (no bodies), so it is a yardstick, not a server. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

static const char RESP[] = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!";
#define RLEN (sizeof RESP - 1)

struct conn { int fd; unsigned have; char in[4096]; };

int main(int argc, char **argv) {
    signal(SIGPIPE, SIG_IGN);
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argc > 1 ? argv[1] : "8080"))};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(ls, (struct sockaddr *)&a, sizeof a) || listen(ls, 65535)) return 1;
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL}, evs[256];
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
    static char out[RLEN * 1024];
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (!c) {
                int fd;
                while ((fd = accept4(ls, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    c = calloc(1, sizeof *c);
                    c->fd = fd;
                    struct epoll_event e = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = c};
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
            size_t k = 0, start = 0;
            for (size_t j = 3; j < c->have; j++)
                if (c->in[j] == '\n' && c->in[j - 1] == '\r' && c->in[j - 2] == '\n' && c->in[j - 3] == '\r') {
                    memcpy(out + k * RLEN, RESP, RLEN);
                    k++; start = j + 1;
                }
            memmove(c->in, c->in + start, c->have - start);
            c->have -= start;
            if (c->have == sizeof c->in || (k && send(c->fd, out, k * RLEN, MSG_NOSIGNAL) != (ssize_t)(k * RLEN))) {
                close(c->fd); free(c);
            }
        }
    }
}
