/* A minimal hand-written io_uring HTTP/1.1 server: the io_uring floor the bench measures
 * myriad's io_uring backend against, as epoll_min.c is the epoll one. One multishot accept,
 * one multishot receive per connection into a ring of provided buffers, and each answer a
 * send submitted by the io_uring_enter that also waits. It answers every request with the
 * same hello-world response and understands nothing else: a request is whatever ends in an
 * empty line (no bodies), so it is a yardstick, not a server.
 * Usage: uring_min [port] [setup flags, e.g. 0x3000 for SINGLE_ISSUER|DEFER_TASKRUN] */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

static const char RESP[] = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!";
#define RLEN (sizeof RESP - 1)
#define MAXK 1024        /* responses in one send */
#define NBUF 4096        /* provided receive buffers */
#define BUFSZ 4096
#define TAG_ACCEPT 1ULL
#define TAG_SEND 2ULL    /* user_data of sends; connections are pointers (aligned, > 2) */

struct conn { int fd; unsigned have; char in[4096]; };

static struct io_uring ring;
static struct io_uring_buf_ring *br;
static char *bufs;
static char out[RLEN * MAXK];

static struct io_uring_sqe *sqe(void) {
    struct io_uring_sqe *s = io_uring_get_sqe(&ring);
    if (!s) { io_uring_submit(&ring); s = io_uring_get_sqe(&ring); }
    return s;
}

static void arm_recv(struct conn *c) {
    struct io_uring_sqe *s = sqe();
    io_uring_prep_recv_multishot(s, c->fd, NULL, 0, 0);
    s->flags |= IOSQE_BUFFER_SELECT;
    s->buf_group = 0;
    io_uring_sqe_set_data64(s, (unsigned long long)(uintptr_t)c);
}

static void put_buf(unsigned bid) {
    io_uring_buf_ring_add(br, bufs + (size_t)bid * BUFSZ, BUFSZ, bid, io_uring_buf_ring_mask(NBUF), 0);
    io_uring_buf_ring_advance(br, 1);
}

int main(int argc, char **argv) {
    signal(SIGPIPE, SIG_IGN);
    int ls = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argc > 1 ? argv[1] : "8080"))};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(ls, (struct sockaddr *)&a, sizeof a) || listen(ls, 65535)) return 1;
    for (int k = 0; k < MAXK; k++) memcpy(out + k * RLEN, RESP, RLEN);

    struct io_uring_params p = {.flags = IORING_SETUP_CQSIZE | IORING_SETUP_SUBMIT_ALL, .cq_entries = 65536};
    p.flags |= argc > 2 ? (unsigned)strtoul(argv[2], NULL, 0) : IORING_SETUP_COOP_TASKRUN;
    if (io_uring_queue_init_params(4096, &ring, &p)) return 2;
    br = mmap(NULL, NBUF * sizeof(struct io_uring_buf), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    bufs = malloc((size_t)NBUF * BUFSZ);
    struct io_uring_buf_reg reg = {.ring_addr = (unsigned long)br, .ring_entries = NBUF, .bgid = 0};
    if (br == MAP_FAILED || !bufs || io_uring_register_buf_ring(&ring, &reg, 0)) return 3;
    io_uring_buf_ring_init(br);
    for (unsigned b = 0; b < NBUF; b++) put_buf(b);

    struct io_uring_sqe *s = sqe();
    io_uring_prep_multishot_accept(s, ls, NULL, NULL, SOCK_CLOEXEC);
    io_uring_sqe_set_data64(s, TAG_ACCEPT);
    for (;;) {
        if (io_uring_submit_and_wait(&ring, 1) < 0) continue;
        struct io_uring_cqe *cqe;
        unsigned head, seen = 0;
        io_uring_for_each_cqe(&ring, head, cqe) {
            seen++;
            unsigned long long ud = cqe->user_data;
            if (ud == TAG_SEND) {
                continue; /* a short send leaves the client waiting: the floor does not retry */
            }
            if (ud == TAG_ACCEPT) {
                if (cqe->res >= 0) {
                    setsockopt(cqe->res, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    struct conn *c = calloc(1, sizeof *c);
                    c->fd = cqe->res;
                    arm_recv(c);
                }
                if (!(cqe->flags & IORING_CQE_F_MORE)) {
                    s = sqe();
                    io_uring_prep_multishot_accept(s, ls, NULL, NULL, SOCK_CLOEXEC);
                    io_uring_sqe_set_data64(s, TAG_ACCEPT);
                }
                continue;
            }
            struct conn *c = (struct conn *)(uintptr_t)ud;
            int more = cqe->flags & IORING_CQE_F_MORE;
            if (cqe->res > 0 && (cqe->flags & IORING_CQE_F_BUFFER)) {
                unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
                size_t n = (size_t)cqe->res;
                if (n > sizeof c->in - c->have) n = sizeof c->in - c->have;
                memcpy(c->in + c->have, bufs + (size_t)bid * BUFSZ, n);
                put_buf(bid);
                c->have += n;
                size_t k = 0, start = 0;
                for (size_t j = 3; j < c->have; j++)
                    if (c->in[j] == '\n' && c->in[j - 1] == '\r' && c->in[j - 2] == '\n' && c->in[j - 3] == '\r') {
                        k++; start = j + 1;
                    }
                memmove(c->in, c->in + start, c->have - start);
                c->have -= start;
                if (k > MAXK) k = MAXK;
                if (k) {
                    s = sqe();
                    io_uring_prep_send(s, c->fd, out, k * RLEN, MSG_NOSIGNAL | MSG_DONTWAIT);
                    io_uring_sqe_set_data64(s, TAG_SEND);
                }
                if (more) continue;
                if (c->have < sizeof c->in) { arm_recv(c); continue; }
            } else if (more) {
                continue;
            } else if (cqe->res == -ENOBUFS) {
                arm_recv(c);
                continue;
            }
            close(c->fd);
            free(c);
        }
        io_uring_cq_advance(&ring, seen);
    }
}
