/*
 * test_systemd.c — socket activation and sd_notify from C, on real sockets: the
 * environment of a socket-activated process is made by hand (a listening socket moved to
 * fd 3, LISTEN_PID = our pid), a datagram socket plays the service manager. Checks
 * myriad_listen_fds, myriad_server_listen_inherited (malformed variables, a served
 * request, the variables unset, a second take), myriad_notify, myriad_watchdog_usec and
 * myriad_watchdog_start's pings. Prints "N passed, M failed".
 */
#define _POSIX_C_SOURCE 200809L
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"

static void handler(myriad_req_t *req, void *ud) {
    (void)ud;
    myriad_req_send(req, 200, S("text/plain"), (const uint8_t *)"activated", 9);
}

static int port_of(int fd) {
    struct sockaddr_in a;
    socklen_t l = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &l);
    return ntohs(a.sin_port);
}

static void setenv_int(const char *k, long v) {
    char b[32];
    snprintf(b, sizeof b, "%ld", v);
    setenv(k, b, 1);
}

/* One GET over a blocking socket while the loop runs in small steps. */
static int get(myriad_loop_t *lp, int port, char *out, size_t cap) {
    int c = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(c, (struct sockaddr *)&a, sizeof a) != 0) return -1;
    const char *rq = "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    if (write(c, rq, strlen(rq)) < 0) return -1;
    struct timeval tv = {0, 10000};
    setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    size_t got = 0;
    for (int i = 0; i < 1000 && got + 1 < cap; i++) {
        myriad_loop_run_once(lp, 1);
        ssize_t n = read(c, out + got, cap - 1 - got);
        if (n == 0) break;
        if (n > 0) got += (size_t)n;
    }
    out[got] = 0;
    close(c);
    return (int)got;
}

int main(void) {
    /* A listening socket at fd 3, as a manager passes it (made first: fd 3 is free). */
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK(bind(l, (struct sockaddr *)&a, sizeof a) == 0 && listen(l, 16) == 0);
    if (l != 3) {
        CHECK(dup2(l, 3) == 3);
        close(l);
    }
    int port = port_of(3);

    /* The manager's notification socket, named before the library first reads it. */
    char path[108];
    snprintf(path, sizeof path, "/tmp/myriad-test-notify-%d.sock", (int)getpid());
    unlink(path);
    int rx = socket(AF_UNIX, SOCK_DGRAM, 0);
    struct sockaddr_un un = {0};
    un.sun_family = AF_UNIX;
    strcpy(un.sun_path, path);
    CHECK(bind(rx, (struct sockaddr *)&un, sizeof un) == 0);
    struct timeval tv = {2, 0};
    setsockopt(rx, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setenv("NOTIFY_SOCKET", path, 1);
    setenv("WATCHDOG_USEC", "100000", 1);
    setenv_int("WATCHDOG_PID", (long)getpid());

    /* Not for us: no LISTEN_PID, or another process's. */
    CHECK(myriad_listen_fds() == 0);
    setenv("LISTEN_FDS", "1", 1);
    setenv("LISTEN_PID", "1", 1);
    CHECK(myriad_listen_fds() == 0);
    /* Malformed: errors, nothing taken. */
    setenv_int("LISTEN_PID", (long)getpid());
    setenv("LISTEN_FDS", "one", 1);
    CHECK(myriad_listen_fds() == MYRIAD_EINVAL);
    myriad_server_t *srv;
    CHECK(myriad_server_new(&srv) == MYRIAD_OK);
    CHECK(myriad_server_listen_inherited(srv, 0) == MYRIAD_EINVAL);
    setenv("LISTEN_FDS", "1", 1);
    setenv("LISTEN_FDNAMES", "http:fcgi", 1);
    CHECK(myriad_server_listen_inherited(srv, 0) == MYRIAD_EINVAL);
    CHECK(myriad_server_listen_inherited(NULL, 0) == MYRIAD_EINVAL);
    /* Right: one fd named http. */
    setenv("LISTEN_FDNAMES", "http", 1);
    CHECK(myriad_listen_fds() == 1);
    CHECK(myriad_server_listen_inherited(srv, 1) == 1);
    CHECK(getenv("LISTEN_PID") == NULL && getenv("LISTEN_FDS") == NULL && getenv("LISTEN_FDNAMES") == NULL);
    CHECK(myriad_listen_fds() == 0);
    CHECK(myriad_server_listen_inherited(srv, 1) == 0); /* nothing left to take */

    myriad_loop_t *lp;
    CHECK(myriad_loop_new(&lp) == MYRIAD_OK);
    myriad_server_set_handler(srv, handler, NULL, NULL);
    CHECK(myriad_server_start(srv, lp) == MYRIAD_OK);
    CHECK(myriad_server_listen_inherited(srv, 0) == MYRIAD_ESTATE);
    char addr[64];
    int proto = 0;
    CHECK(myriad_server_listener_count(srv) == 1);
    CHECK(myriad_server_listener_addr(srv, 0, &proto, addr, sizeof addr) > 0);
    CHECK(strcmp(addr, "fd:3") == 0 && proto == MYRIAD_HTTP);
    char resp[512];
    CHECK(get(lp, port, resp, sizeof resp) > 0);
    CHECK(strncmp(resp, "HTTP/1.1 200", 12) == 0 && strstr(resp, "\r\n\r\nactivated") != NULL);

    /* sd_notify: each call one datagram. */
    char m[256];
    ssize_t n;
    CHECK(myriad_notify(S("READY=1\nSTATUS=serving fd:3")) == 1);
    n = recv(rx, m, sizeof m - 1, 0);
    CHECK(n == 27 && memcmp(m, "READY=1\nSTATUS=serving fd:3", 27) == 0);
    /* A forked child (a supervisor's worker) is not the main process: it sends nothing. */
    pid_t child = fork();
    if (child == 0) _exit(myriad_notify(S("FROM_CHILD=1")) == 0 ? 0 : 1);
    int wst = -1;
    CHECK(child > 0 && waitpid(child, &wst, 0) == child && WIFEXITED(wst) && WEXITSTATUS(wst) == 0);
    CHECK(myriad_notify(S("STATUS=parent")) == 1);
    n = recv(rx, m, sizeof m - 1, 0);
    CHECK(n == 13 && memcmp(m, "STATUS=parent", 13) == 0);
    CHECK(myriad_notify(NULL, 3) == MYRIAD_EINVAL);
    CHECK(myriad_notify("\xff\xfe", 2) == MYRIAD_EINVAL);
    uint64_t usec = 0;
    CHECK(myriad_watchdog_usec(&usec) == 1 && usec == 100000);
    CHECK(myriad_watchdog_usec(NULL) == 1);
    /* Pings every 50 ms from the loop's timer: the first at once, then about 4 in 200 ms. */
    uint64_t timer = 0;
    CHECK(myriad_watchdog_start(lp, &timer) == 1);
    int pings = 0;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        myriad_loop_run_once(lp, 1);
        struct timeval z = {0, 5000};
        setsockopt(rx, SOL_SOCKET, SO_RCVTIMEO, &z, sizeof z);
        while ((n = recv(rx, m, sizeof m - 1, 0)) > 0)
            if (n == 10 && memcmp(m, "WATCHDOG=1", 10) == 0) pings++;
        clock_gettime(CLOCK_MONOTONIC, &t1);
        if ((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000 >= 230) break;
    }
    CHECK(pings >= 3 && pings <= 8);
    CHECK(myriad_timer_cancel(lp, timer) == MYRIAD_OK);
    /* Another process's watchdog: not ours. */
    setenv("WATCHDOG_PID", "1", 1);
    CHECK(myriad_watchdog_usec(&usec) == 0);
    CHECK(myriad_watchdog_start(lp, NULL) == 0);
    setenv("WATCHDOG_USEC", "soon", 1);
    unsetenv("WATCHDOG_PID");
    CHECK(myriad_watchdog_usec(&usec) == MYRIAD_EINVAL);
    CHECK(myriad_watchdog_start(lp, NULL) == MYRIAD_EINVAL);
    /* The manager gone: an error, not a hang. */
    close(rx);
    unlink(path);
    int rc = myriad_notify(S("STOPPING=1"));
    CHECK(rc < 0 && rc <= MYRIAD_EOS_BASE);

    myriad_server_free(srv);
    myriad_loop_free(lp);
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
