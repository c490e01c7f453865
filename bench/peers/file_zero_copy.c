/*
 * file_zero_copy.c — which zero-copy path sends a cached file to a TCP socket cheapest:
 * sendfile(2), splice(2) through a pipe, or io_uring's IORING_OP_SPLICE (file -> pipe ->
 * socket, two linked operations per pipe-full, submitted and reaped by io_uring_enter).
 * The sender is this process (its CPU, io_uring's worker threads included, from
 * getrusage); a forked reader drains the socket on the other CPU. Prints, per mode, the
 * sender's CPU time per MiB and system calls per MiB.
 *
 *   gcc -O2 bench/peers/file_zero_copy.c -o fzc -luring && ./fzc [MiB per send] [sends]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double cpu_now(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static void pin(int cpu) {
    cpu_set_t s;
    CPU_ZERO(&s);
    CPU_SET(cpu, &s);
    sched_setaffinity(0, sizeof s, &s);
}

/* A connected loopback pair: returns the sender's socket; the child drains `total` bytes. */
static int pair(long long total, pid_t *child) {
    int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in a = {0};
    socklen_t al = sizeof a;
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(l, (struct sockaddr *)&a, sizeof a) || listen(l, 1) || getsockname(l, (struct sockaddr *)&a, &al)) {
        perror("listen");
        exit(1);
    }
    if ((*child = fork()) == 0) {
        static char buf[1 << 18];
        int s = socket(AF_INET, SOCK_STREAM, 0);
        pin(1);
        if (connect(s, (struct sockaddr *)&a, sizeof a)) _exit(1);
        for (long long got = 0; got < total;) {
            ssize_t n = recv(s, buf, sizeof buf, 0);
            if (n <= 0) _exit(2);
            got += n;
        }
        _exit(0);
    }
    int s = accept(l, NULL, NULL);
    close(l);
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return s;
}

int main(int argc, char **argv) {
    long mib = argc > 1 ? atol(argv[1]) : 1, sends = argc > 2 ? atol(argv[2]) : 1000;
    size_t size = (size_t)mib << 20;
    char path[] = "/tmp/myriad-fzc-XXXXXX";
    int fd = mkstemp(path);
    char *data = malloc(size);
    for (size_t i = 0; i < size; i++) data[i] = (char)(i * 7);
    if (write(fd, data, size) != (ssize_t)size) return 1;
    unlink(path);
    free(data);
    pin(0);
    const char *modes[] = {"sendfile", "splice via a pipe", "io_uring splice (linked pair)"};
    printf("| path | sender CPU µs per MiB | syscalls per MiB |\n|---|---:|---:|\n");
    for (int m = 0; m < 3; m++) {
        pid_t child;
        long long total = (long long)size * sends, calls = 0;
        int s = pair(total, &child), p[2];
        struct io_uring ring;
        if (pipe(p)) return 1;
        fcntl(p[1], F_SETPIPE_SZ, 1 << 20);
        int psz = fcntl(p[1], F_GETPIPE_SZ);
        if (m == 2 && io_uring_queue_init(8, &ring, 0)) { perror("io_uring"); return 1; }
        double c0 = cpu_now();
        for (long i = 0; i < sends; i++) {
            off_t off = 0;
            while ((size_t)off < size) {
                size_t want = size - off;
                if (m == 0) {
                    ssize_t n = sendfile(s, fd, &off, want);
                    calls++;
                    if (n <= 0) { perror("sendfile"); return 1; }
                } else if (m == 1) {
                    if (want > (size_t)psz) want = psz;
                    ssize_t n = splice(fd, &off, p[1], NULL, want, SPLICE_F_MOVE);
                    calls++;
                    for (ssize_t out = 0; out < n;) {
                        ssize_t k = splice(p[0], NULL, s, NULL, n - out, SPLICE_F_MOVE | SPLICE_F_MORE);
                        calls++;
                        if (k <= 0) { perror("splice"); return 1; }
                        out += k;
                    }
                } else {
                    if (want > (size_t)psz) want = psz;
                    struct io_uring_sqe *a = io_uring_get_sqe(&ring), *b;
                    io_uring_prep_splice(a, fd, off, p[1], -1, want, SPLICE_F_MOVE);
                    a->flags |= IOSQE_IO_LINK;
                    b = io_uring_get_sqe(&ring);
                    io_uring_prep_splice(b, p[0], -1, s, -1, want, SPLICE_F_MOVE);
                    io_uring_submit_and_wait(&ring, 2);
                    calls++;
                    struct io_uring_cqe *cqe;
                    int got[2] = {0, 0}, k = 0;
                    while (k < 2 && io_uring_peek_cqe(&ring, &cqe) == 0) {
                        got[k++] = cqe->res;
                        io_uring_cqe_seen(&ring, cqe);
                    }
                    if (k < 2 || got[0] <= 0 || got[1] != got[0]) {
                        /* A short splice to the socket: the rest of the pipe, synchronously. */
                        if (got[0] <= 0) { fprintf(stderr, "uring splice: %d %d\n", got[0], got[1]); return 1; }
                        for (int out = got[1] > 0 ? got[1] : 0; out < got[0];) {
                            ssize_t r = splice(p[0], NULL, s, NULL, got[0] - out, SPLICE_F_MOVE);
                            calls++;
                            if (r <= 0) return 1;
                            out += (int)r;
                        }
                    }
                    off += got[0];
                }
            }
        }
        double cpu = cpu_now() - c0;
        close(s);
        int st;
        waitpid(child, &st, 0);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) { fprintf(stderr, "reader failed\n"); return 1; }
        printf("| %s | %.1f | %.2f |\n", modes[m], cpu * 1e6 / (double)(mib * sends), (double)calls / (double)(mib * sends));
        if (m == 2) io_uring_queue_exit(&ring);
        close(p[0]);
        close(p[1]);
    }
    return 0;
}
