/*
 * What a socket write costs as send(2) and as writev(2), on loopback.
 *
 *   cc -O2 -o /tmp/send_writev benches/send_writev.c && /tmp/send_writev 20000 40
 *
 * A TCP ping-pong over 127.0.0.1 (TCP_NODELAY): this process on CPU 0
 * writes 300 bytes and waits for the peer's 100-byte answer; the peer runs
 * on CPU 1. Only the write call is timed. Each round times a block of N
 * writes of each kind (send, writev of one slice, writev of two), in an
 * order rotated from round to round, and the mean over R rounds is printed
 * in microseconds a call. Behind src/gather.rs (BENCHMARKS.md, "Update
 * (2026-12-05, midday)"). A measurement, not a test.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void pin(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    sched_setaffinity(0, sizeof set, &set);
}

static long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000L + t.tv_nsec;
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 20000, rounds = argc > 2 ? atoi(argv[2]) : 40, one = 1;
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof addr;
    int listener = socket(AF_INET, SOCK_STREAM, 0);
    if (bind(listener, (void *)&addr, sizeof addr) || listen(listener, 1) ||
        getsockname(listener, (void *)&addr, &len)) {
        perror("listen");
        return 1;
    }
    char msg[300], buf[4096];
    memset(msg, 'x', sizeof msg);
    if (fork() == 0) {
        pin(1);
        int c = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(c, (void *)&addr, sizeof addr)) _exit(1);
        setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        while (recv(c, buf, sizeof buf, 0) > 0) send(c, msg, 100, 0);
        _exit(0);
    }
    pin(0);
    int s = accept(listener, 0, 0);
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    double total[3] = {0};
    for (int r = 0; r < rounds; r++) {
        for (int i = 0; i < 3; i++) {
            int kind = (i + r) % 3;
            long spent = 0;
            for (int k = 0; k < n; k++) {
                struct iovec one_slice[1] = {{msg, sizeof msg}};
                struct iovec two_slices[2] = {{msg, 200}, {msg + 200, 100}};
                long t0 = now_ns();
                if (kind == 0) send(s, msg, sizeof msg, 0);
                else if (kind == 1) writev(s, one_slice, 1);
                else writev(s, two_slices, 2);
                spent += now_ns() - t0;
                recv(s, buf, sizeof buf, 0);
            }
            total[kind] += spent / (double)n / 1000;
        }
    }
    printf("us a call, mean of %d rounds: send %.3f  writev (1 slice) %.3f  writev (2 slices) %.3f\n",
           rounds, total[0] / rounds, total[1] / rounds, total[2] / rounds);
    shutdown(s, SHUT_RDWR);
    wait(0);
    return 0;
}
