/* A TCP echo server in C on libtrio: the C twin of
 * core/examples/echo_server.rs, with the same protocol and command line.
 * Every connection gets its own C task (trio_serve_tcp runs the handler as
 * one) and has what it sends echoed back (16 KiB buffer). Serves until
 * Ctrl-C, then cancels every connection task, prints a summary and exits
 * with status 130 (the shell's code for "ended by SIGINT"; 1 on any other
 * error).
 *
 *   cc -std=c99 -D_POSIX_C_SOURCE=200809L -Iinclude examples/c/echo_server.c \
 *      $(pkg-config --cflags --libs --static trio) -o echo_server
 *   ./echo_server [IP:PORT]     (default 127.0.0.1:9000; port 0 lets the OS
 *                               choose)
 *
 * Try it with `cargo run -p trio --example echo_client -- ADDR`, or `nc`.
 *
 * A failing connection only ends its own task (its error is printed); the
 * server keeps going, also when the process runs out of descriptors
 * (trio_serve_tcp retries accepting 100 ms later).
 *
 * Ctrl-C: libtrio has no C API for signals yet, so the SIGINT handler
 * writes a byte into a pipe (the self-pipe trick), and a small task waits
 * for that byte on a worker thread (trio_to_thread); then it cancels the
 * nursery around the server. (The Rust example gets Ctrl-C from the run
 * itself.) The task does not poll: a pending timer would make every sleep
 * of the run in epoll_wait arm a kernel timer, which costs a little on
 * every round trip of a lightly loaded server. A second Ctrl-C ends the
 * process at once. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h> /* pipe, read, write (POSIX) */

#include "libtrio.h"

#define BUF_SIZE (16 * 1024)

/* Totals, shared by the connection tasks (all on one thread). */
struct server {
    const char *host;
    unsigned port;
    trio_handle_t nursery;
    int interrupted;
    unsigned long long accepted, open, bytes;
};

/* The self-pipe: on_sigint writes, the watcher's thread reads. */
static int sigint_pipe[2] = {-1, -1};

static void on_sigint(int sig) {
    int saved = errno;
    char byte = 1;
    if (write(sigint_pipe[1], &byte, 1) < 0) {
        /* The pipe is full: a byte is waiting already. */
    }
    errno = saved;
    /* The next Ctrl-C ends the process, as the shell expects. */
    signal(sig, SIG_DFL);
}

/* Echoes until the peer closes its sending side. */
static int echo(trio_handle_t stream, void *arg) {
    struct server *s = (struct server *)arg;
    unsigned long long total = 0;
    char peer[128];
    unsigned char *buf;
    int n;
    if (trio_peer_address(stream, peer, sizeof peer) < 0) strcpy(peer, "?");
    s->accepted++;
    s->open++;
    printf("%s: connected\n", peer);
    buf = (unsigned char *)malloc(BUF_SIZE);
    if (buf == NULL) {
        fprintf(stderr, "%s: out of memory\n", peer);
        s->open--;
        return 0;
    }
    for (;;) {
        int sent;
        n = trio_receive_some(stream, buf, BUF_SIZE);
        if (n <= 0) break;
        if ((sent = trio_send_all(stream, buf, (size_t)n)) != 0) {
            n = sent;
            break;
        }
        total += (unsigned)n;
        s->bytes += (unsigned)n;
    }
    free(buf);
    if (n == TRIO_ECANCELED) {
        /* Ctrl-C: the server is shutting down (this one stays counted as
         * open at the shutdown). */
        return TRIO_ECANCELED;
    }
    if (n == 0) {
        printf("%s: closed after echoing %llu bytes\n", peer, total);
    } else {
        /* Only this connection failed: report it, keep serving. */
        char detail[256];
        trio_last_error(detail, sizeof detail);
        fprintf(stderr, "%s: %s\n", peer, detail);
    }
    s->open--;
    return 0;
}

static void on_started(uint16_t port, void *arg) {
    struct server *s = (struct server *)arg;
    int v6 = strchr(s->host, ':') != NULL;
    printf("echo server listening on %s%s%s:%u (Ctrl-C to stop)\n", v6 ? "[" : "", s->host, v6 ? "]" : "",
           (unsigned)port);
}

/* On a worker thread: blocks until on_sigint has written its byte. */
static int wait_for_sigint(void *arg) {
    char byte;
    (void)arg;
    for (;;) {
        ssize_t n = read(sigint_pipe[0], &byte, 1);
        if (n == 1) return 0;
        if (n < 0 && errno == EINTR) continue;
        return TRIO_EIO;
    }
}

/* Cancels the server's nursery once Ctrl-C was pressed. */
static int watch_sigint(void *arg) {
    struct server *s = (struct server *)arg;
    /* Abandoned when cancelled (the server stopped by itself): the thread
     * stays blocked in read() until the process exits, and uses only the
     * static pipe. */
    int rc = trio_to_thread(wait_for_sigint, NULL, 1);
    if (rc != 0) return rc;
    s->interrupted = 1;
    return trio_nursery_cancel(s->nursery);
}

/* Error detail of a failed serve, printed after the run. */
static char failure[512];

static int serve(void *arg) {
    struct server *s = (struct server *)arg;
    int rc, closed;
    if ((rc = trio_nursery_open(&s->nursery)) != 0) return rc;
    if ((rc = trio_nursery_spawn(s->nursery, watch_sigint, s)) != 0) return rc;
    rc = trio_serve_tcp((uint16_t)s->port, s->host, echo, s, on_started);
    if (rc != TRIO_ECANCELED) {
        /* The server failed (address in use, ...): stop the watcher. */
        trio_last_error(failure, sizeof failure);
        trio_nursery_cancel(s->nursery);
    }
    closed = trio_nursery_close(s->nursery);
    if (s->interrupted) return 130;
    if (rc == TRIO_ECANCELED && closed != 0) rc = closed;
    if (failure[0] == 0) trio_last_error(failure, sizeof failure);
    return rc < 0 ? rc : 1;
}

/* Splits "IP:PORT" (or "[IPv6]:PORT") into host and port. */
static int parse_addr(char *arg, const char **host, unsigned *port, const char **why) {
    char *colon = strrchr(arg, ':'), *end = NULL;
    unsigned long p;
    if (colon == NULL || colon == arg) {
        *why = "expected IP:PORT";
        return -1;
    }
    *colon = 0;
    p = strtoul(colon + 1, &end, 10);
    if (colon[1] == 0 || *end != 0 || p > 65535) {
        *why = "invalid port";
        return -1;
    }
    if (arg[0] == '[') {
        size_t len = strlen(arg);
        if (len < 3 || arg[len - 1] != ']') {
            *why = "unbalanced brackets";
            return -1;
        }
        arg[len - 1] = 0;
        arg++;
    } else if (strchr(arg, ':') != NULL) {
        *why = "an IPv6 address needs brackets: [::1]:9000";
        return -1;
    }
    *host = arg;
    *port = (unsigned)p;
    return 0;
}

int main(int argc, char **argv) {
    static char addr[256];
    struct server s;
    const char *why = NULL;
    int rc;
    memset(&s, 0, sizeof s);
    strncpy(addr, argc > 1 ? argv[1] : "127.0.0.1:9000", sizeof addr - 1);
    if (parse_addr(addr, &s.host, &s.port, &why) != 0) {
        fprintf(stderr, "usage: echo_server [IP:PORT]  (\"%s\": %s)\n", argc > 1 ? argv[1] : "", why);
        return 2;
    }
    /* Line-buffered like Rust's stdout, also into a pipe. */
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (pipe(sigint_pipe) != 0) {
        perror("echo server: pipe");
        return 1;
    }
    signal(SIGINT, on_sigint);
    rc = trio_run(serve, &s);
    if (rc == 130) {
        printf("\ninterrupted: every connection task was cancelled; connections: %llu served, %llu still open at "
               "the end; %llu bytes echoed\n",
               s.accepted, s.open, s.bytes);
        return 130;
    }
    fprintf(stderr, "echo server failed: %s; connections: %llu served, %llu still open at the end; %llu bytes echoed\n",
            failure[0] ? failure : trio_strerror(rc), s.accepted, s.open, s.bytes);
    return 1;
}
