/* Sockets through libtrio.h, over loopback: TCP and Unix streams and
 * listeners, serve_tcp with a C handler, cancellation, errors, bad input,
 * and no descriptor leaks. Prints TAP-like "ok N - name" lines; exits 1 at
 * the first failure. */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include <stdint.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
/* Windows (mingw, run under Wine in CI): no Unix-domain sockets in libtrio,
 * Winsock's error codes, and handles instead of descriptors. */
#ifdef _WIN32
#include <winsock2.h>
#include <windows.h>
#define OS_ECONNREFUSED WSAECONNREFUSED
#else
#include <dirent.h>
#define OS_ECONNREFUSED ECONNREFUSED
#endif

#include "libtrio.h"

#include "check.h"

/* Does this thread's last error detail contain `s`? */
static int detail_has(const char *s) {
    char d[512];
    trio_last_error(d, sizeof d);
    return strstr(d, s) != NULL;
}

/* Open descriptors of this process (on Windows: its handles), or
 * FDS_UNKNOWN where the system cannot say (Wine 8.0's GetProcessHandleCount
 * reports 0): then the leak check is left out. */
#define FDS_UNKNOWN (-2)
#ifdef _WIN32
static int count_fds(void) {
    DWORD n = 0;
    if (!GetProcessHandleCount(GetCurrentProcess(), &n) || n == 0) return FDS_UNKNOWN;
    return (int)n;
}
#else
static int count_fds(void) {
    int n = 0;
    struct dirent *e;
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL) return -1;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.') n++;
    closedir(d);
    return n;
}
#endif

/* Receives until EOF into buf (at most cap bytes); the count, or an error. */
static long receive_to_eof(trio_handle_t s, char *buf, size_t cap) {
    size_t got = 0;
    for (;;) {
        int n;
        if (got == cap) return -1;
        n = trio_receive_some(s, buf + got, cap - got);
        if (n < 0) return n;
        if (n == 0) return (long)got;
        got += (size_t)n;
    }
}

/* A connected TCP pair over loopback, made in one task: the kernel
 * completes the connect from the listen queue before the accept. */
static void tcp_pair(trio_handle_t *client, trio_handle_t *server) {
    trio_handle_t l = 0;
    uint16_t port = 0;
    CHECK(trio_tcp_listen("127.0.0.1", 0, &l) == 0 && l != 0, "pair: listen");
    CHECK(trio_listener_port(l, &port) == 0 && port != 0, "pair: port");
    CHECK(trio_tcp_connect("127.0.0.1", port, client) == 0, "pair: connect");
    CHECK(trio_accept(l, server) == 0, "pair: accept");
    CHECK(trio_close(l) == 0, "pair: close the listener");
}

/* --- 1. connect/accept/echo as two tasks --- */
struct echo_ctx {
    trio_handle_t listener;
    uint16_t port;
    const char *host;
    int server_rc, client_rc;
    char got[64];
    long got_len;
};

static int echo_server_task(void *arg) {
    struct echo_ctx *c = (struct echo_ctx *)arg;
    trio_handle_t s = 0;
    char buf[16];
    int n;
    c->server_rc = trio_accept(c->listener, &s);
    if (c->server_rc != 0) return c->server_rc;
    while ((n = trio_receive_some(s, buf, sizeof buf)) > 0) {
        c->server_rc = trio_send_all(s, buf, (size_t)n);
        if (c->server_rc != 0) break;
    }
    if (n < 0) c->server_rc = n;
    trio_close(s);
    return c->server_rc;
}

static int echo_client_task(void *arg) {
    struct echo_ctx *c = (struct echo_ctx *)arg;
    static const char msg[] = "hello, trio, from C";
    trio_handle_t s = 0;
    c->client_rc = trio_tcp_connect(c->host, c->port, &s);
    if (c->client_rc != 0) return c->client_rc;
    if ((c->client_rc = trio_send_all(s, msg, sizeof msg - 1)) != 0) return c->client_rc;
    if ((c->client_rc = trio_send_eof(s)) != 0) return c->client_rc;
    c->got_len = receive_to_eof(s, c->got, sizeof c->got);
    c->client_rc = trio_close(s);
    return c->got_len < 0 ? (int)c->got_len : c->client_rc;
}

static void echo_between_two_tasks(const char *host) {
    struct echo_ctx c;
    trio_handle_t n = 0;
    char addr[64];
    memset(&c, 0, sizeof c);
    c.host = host;
    CHECK(trio_tcp_listen("127.0.0.1", 0, &c.listener) == 0, "echo: listen on 127.0.0.1:0");
    CHECK(trio_listener_port(c.listener, &c.port) == 0 && c.port != 0, "echo: the OS chose a port");
    CHECK(trio_local_address(c.listener, addr, sizeof addr) > 0 && strncmp(addr, "127.0.0.1:", 10) == 0,
          "echo: the listener's local address is 127.0.0.1:PORT");
    CHECK(trio_nursery_open(&n) == 0, "echo: nursery");
    CHECK(trio_nursery_spawn(n, echo_server_task, &c) == 0, "echo: spawn the server");
    CHECK(trio_nursery_spawn(n, echo_client_task, &c) == 0, "echo: spawn the client");
    CHECK(trio_nursery_close(n) == 0, "echo: both tasks succeed");
    CHECK(c.got_len == 19 && memcmp(c.got, "hello, trio, from C", 19) == 0, "echo: the client got its bytes back");
    CHECK(trio_close(c.listener) == 0, "echo: close the listener");
}

/* --- 2. 1 MiB in separate send and receive tasks --- */
#define BIG (1024 * 1024)
struct big_ctx {
    trio_handle_t tx, rx;
    long received;
    int pattern_ok;
    int send_rc;
};

static int big_sender(void *arg) {
    struct big_ctx *c = (struct big_ctx *)arg;
    unsigned char *data = malloc(BIG);
    size_t i;
    if (data == NULL) return -1;
    for (i = 0; i < BIG; i++) data[i] = (unsigned char)(i * 7 + i / 4096);
    c->send_rc = trio_send_all(c->tx, data, BIG);
    free(data);
    if (c->send_rc != 0) return c->send_rc;
    return trio_send_eof(c->tx);
}

static int big_receiver(void *arg) {
    struct big_ctx *c = (struct big_ctx *)arg;
    unsigned char buf[16 * 1024];
    size_t at = 0;
    c->pattern_ok = 1;
    for (;;) {
        int i, n = trio_receive_some(c->rx, buf, sizeof buf);
        if (n < 0) return n;
        if (n == 0) break;
        for (i = 0; i < n; i++, at++)
            if (buf[i] != (unsigned char)(at * 7 + at / 4096)) c->pattern_ok = 0;
    }
    c->received = (long)at;
    return 0;
}

static void one_mebibyte(void) {
    struct big_ctx c;
    trio_handle_t n = 0;
    memset(&c, 0, sizeof c);
    tcp_pair(&c.tx, &c.rx);
    CHECK(trio_nursery_open(&n) == 0, "1 MiB: nursery");
    CHECK(trio_nursery_spawn(n, big_receiver, &c) == 0, "1 MiB: spawn the receiver");
    CHECK(trio_nursery_spawn(n, big_sender, &c) == 0, "1 MiB: spawn the sender");
    CHECK(trio_nursery_close(n) == 0, "1 MiB: both finish");
    CHECK(c.send_rc == 0, "1 MiB: send_all sent it all");
    CHECK(c.received == BIG && c.pattern_ok, "1 MiB: every byte arrived, in order");
    CHECK(trio_close(c.tx) == 0 && trio_close(c.rx) == 0, "1 MiB: close both");
}

/* --- 3. send_eof: the peer reads 0, this side still receives --- */
static void half_close(void) {
    trio_handle_t a = 0, b = 0;
    char buf[8];
    tcp_pair(&a, &b);
    CHECK(trio_send_all(a, "x", 1) == 0, "eof: send a byte");
    CHECK(trio_send_eof(a) == 0, "eof: send_eof");
    CHECK(trio_send_eof(a) == 0, "eof: send_eof again does nothing");
    CHECK(trio_receive_some(b, buf, sizeof buf) == 1 && buf[0] == 'x', "eof: the peer gets the byte");
    CHECK(trio_receive_some(b, buf, sizeof buf) == 0, "eof: then 0, the end of the stream");
    CHECK(trio_receive_some(b, buf, sizeof buf) == 0, "eof: and 0 again");
    CHECK(trio_send_all(a, "y", 1) == TRIO_ECLOSED, "eof: sending after send_eof is TRIO_ECLOSED");
    CHECK(trio_send_all(b, "back", 4) == 0, "eof: the peer can still send");
    CHECK(trio_receive_some(a, buf, sizeof buf) == 4 && memcmp(buf, "back", 4) == 0,
          "eof: and the half-closed side receives it");
    CHECK(trio_send_all(a, NULL, 0) == TRIO_ECLOSED, "eof: an empty send after send_eof is TRIO_ECLOSED too");
    CHECK(trio_close(a) == 0 && trio_close(b) == 0, "eof: close both");
}

/* --- 4. Unix sockets in a temporary directory --- */
#ifndef _WIN32
static void unix_sockets(void) {
    char dir[] = "/tmp/trio-test-net-XXXXXX";
    char path[128], missing[160], addr[160];
    trio_handle_t l = 0, c = 0, s = 0, l2 = 0;
    uint16_t port = 0;
    char buf[16];
    CHECK(mkdtemp(dir) != NULL, "unix: a temporary directory");
    snprintf(path, sizeof path, "%s/sock", dir);
    snprintf(missing, sizeof missing, "%s/nobody-here", dir);
    CHECK(trio_unix_listen(path, &l) == 0 && l != 0, "unix: listen");
    CHECK(trio_local_address(l, addr, sizeof addr) == (int)strlen(path) && strcmp(addr, path) == 0,
          "unix: the listener's local address is its path");
    CHECK(trio_listener_port(l, &port) == TRIO_EBADHANDLE && port == 0,
          "unix: tcp_listener_port refuses a Unix listener");
    CHECK(trio_unix_connect(path, &c) == 0, "unix: connect");
    CHECK(trio_accept(l, &s) == 0, "unix: accept");
    CHECK(trio_peer_address(c, addr, sizeof addr) >= 0 && strcmp(addr, path) == 0,
          "unix: the client's peer is the path");
    CHECK(trio_local_address(c, addr, sizeof addr) == 0 && addr[0] == 0, "unix: the client is unnamed");
    CHECK(trio_send_all(c, "ping", 4) == 0, "unix: send");
    CHECK(trio_receive_some(s, buf, sizeof buf) == 4 && memcmp(buf, "ping", 4) == 0, "unix: receive");
    CHECK(trio_send_all(s, "pong", 4) == 0 && trio_send_eof(s) == 0, "unix: send back and EOF");
    CHECK(receive_to_eof(c, buf, sizeof buf) == 4 && memcmp(buf, "pong", 4) == 0, "unix: receive to EOF");
    CHECK(trio_close(c) == 0 && trio_close(s) == 0 && trio_close(l) == 0, "unix: close all three");
    CHECK(trio_unix_listen(path, &l2) == 0, "unix: listening again replaces the stale socket file");
    CHECK(trio_close(l2) == 0, "unix: close it");
    c = 0;
    CHECK(trio_unix_connect(missing, &c) == TRIO_EIO && c == 0, "unix: connecting to no socket is TRIO_EIO");
    CHECK(detail_has("No such file"), "unix: with the OS message");
    CHECK(unlink(path) == 0 && rmdir(dir) == 0, "unix: clean up the directory");
}
#endif

/* --- 5. serve_tcp with a C handler --- */
struct serve_ctx {
    trio_handle_t started; /* an event, set by on_started */
    uint16_t port;
    int serve_rc;
    int handled;
    int self_closed;
};

/* Reads a line, answers "hi LINE"; a line starting with "c" closes the
 * stream itself, one starting with "f" fails with -55. */
static int greeter(trio_handle_t stream, void *arg) {
    struct serve_ctx *c = (struct serve_ctx *)arg;
    char line[16], out[32];
    size_t got = 0;
    int n;
    while (got < sizeof line && (got == 0 || line[got - 1] != '\n')) {
        n = trio_receive_some(stream, line + got, sizeof line - got);
        if (n <= 0) return n;
        got += (size_t)n;
    }
    if (c != NULL) c->handled++;
    if (line[0] == 'f') return -55;
    memcpy(out, "hi ", 3);
    memcpy(out + 3, line, got);
    if ((n = trio_send_all(stream, out, got + 3)) != 0) return n;
    if (line[0] == 'c' && c != NULL) {
        c->self_closed = trio_close(stream) == 0 && trio_close(stream) == TRIO_EBADHANDLE;
    }
    return 0;
}

/* Connects, sends `line`, receives the reply up to EOF. */
static long ask(uint16_t port, const char *line, char *reply, size_t cap) {
    trio_handle_t s = 0;
    long n;
    int rc = trio_tcp_connect("127.0.0.1", port, &s);
    if (rc != 0) return rc;
    if ((rc = trio_send_all(s, line, strlen(line))) != 0) return rc;
    n = receive_to_eof(s, reply, cap);
    trio_close(s);
    return n;
}

/* Runs in the serving task, before it serves. */
static void on_started(uint16_t port, void *arg) {
    struct serve_ctx *c = (struct serve_ctx *)arg;
    c->port = port;
    trio_event_set(c->started);
}

static int server_task(void *arg) {
    struct serve_ctx *c = (struct serve_ctx *)arg;
    c->serve_rc = trio_serve_tcp(0, "127.0.0.1", greeter, c, on_started);
    /* Cancelled is how a server normally ends; anything else is kept in
     * serve_rc for the test to look at. */
    return c->serve_rc == TRIO_ECANCELED ? TRIO_ECANCELED : 0;
}

/* on_started runs in the serving task: it may spawn, here the client,
 * into the nursery the parent is already closing. */
struct spawning_ctx {
    struct serve_ctx base; /* first: the handler sees a serve_ctx */
    trio_handle_t nursery;
    uint16_t port;
    int serve_rc;
    long reply_len;
    char reply[32];
};

static int spawned_client(void *arg) {
    struct spawning_ctx *c = (struct spawning_ctx *)arg;
    c->reply_len = ask(c->port, "spawned\n", c->reply, sizeof c->reply);
    return trio_nursery_cancel(c->nursery);
}

static void on_started_spawn(uint16_t port, void *arg) {
    struct spawning_ctx *c = (struct spawning_ctx *)arg;
    c->port = port;
    if (trio_nursery_spawn(c->nursery, spawned_client, c) != 0) c->port = 0;
}

static int spawning_server(void *arg) {
    struct spawning_ctx *c = (struct spawning_ctx *)arg;
    c->serve_rc = trio_serve_tcp(0, "127.0.0.1", greeter, c, on_started_spawn);
    return c->serve_rc == TRIO_ECANCELED ? TRIO_ECANCELED : 0;
}

static void serve_tcp_with_a_handler(void) {
    struct serve_ctx c;
    trio_handle_t n = 0;
    char reply[32];
    memset(&c, 0, sizeof c);
    CHECK(trio_event_new(&c.started) == 0, "serve: an event for on_started");
    CHECK(trio_nursery_open(&n) == 0, "serve: nursery");
    CHECK(trio_nursery_spawn(n, server_task, &c) == 0, "serve: spawn the server");
    CHECK(trio_event_wait(c.started) == 0 && c.port != 0, "serve: on_started gave the port");
    /* The reply, then EOF: the stream is closed after the handler returns. */
    CHECK(ask(c.port, "abc\n", reply, sizeof reply) == 7 && memcmp(reply, "hi abc\n", 7) == 0,
          "serve: the handler answers, then the stream is closed");
    CHECK(ask(c.port, "close\n", reply, sizeof reply) == 9 && memcmp(reply, "hi close\n", 9) == 0,
          "serve: a second connection");
    CHECK(c.self_closed, "serve: a handler may close its stream itself");
    CHECK(c.handled == 2, "serve: two connections handled");
    CHECK(trio_nursery_cancel(n) == 0, "serve: cancel the server");
    CHECK(trio_nursery_close(n) == 0, "serve: it stops");
    CHECK(c.serve_rc == TRIO_ECANCELED, "serve: trio_serve_tcp returns TRIO_ECANCELED when cancelled");
    CHECK(trio_event_close(c.started) == 0, "serve: close the event");

    memset(&c, 0, sizeof c);
    CHECK(trio_event_new(&c.started) == 0, "serve: another event");
    CHECK(trio_nursery_open(&n) == 0, "serve: another nursery");
    CHECK(trio_nursery_spawn(n, server_task, &c) == 0, "serve: another server");
    CHECK(trio_event_wait(c.started) == 0, "serve: started");
    {
        long r = ask(c.port, "fail\n", reply, sizeof reply);
        CHECK(r == 0 || r == TRIO_EBROKEN, "serve: a failing handler's connection ends");
    }
    CHECK(trio_nursery_close(n) == 0, "serve: the server stops by itself");
    CHECK(c.serve_rc == -55, "serve: a handler's failure stops the server with its code");
    CHECK(trio_event_close(c.started) == 0, "serve: close the event");

    {
        struct spawning_ctx sc;
        memset(&sc, 0, sizeof sc);
        CHECK(trio_nursery_open(&sc.nursery) == 0, "serve: a third nursery");
        CHECK(trio_nursery_spawn(sc.nursery, spawning_server, &sc) == 0, "serve: a server whose on_started spawns");
        CHECK(trio_nursery_close(sc.nursery) == 0, "serve: the spawned client cancels the nursery");
        CHECK(sc.port != 0 && sc.reply_len == 11 && memcmp(sc.reply, "hi spawned\n", 11) == 0,
              "serve: on_started spawned a client that was answered");
        CHECK(sc.base.handled == 1, "serve: one connection handled");
        CHECK(sc.serve_rc == TRIO_ECANCELED, "serve: and the server was cancelled");
    }
}

/* --- 5b. serve_listener on a Unix listener --- */
struct userve_ctx {
    trio_handle_t listener;
    int serve_rc;
};

static int userve_server(void *arg) {
    struct userve_ctx *c = (struct userve_ctx *)arg;
    c->serve_rc = trio_serve_listener(c->listener, greeter, NULL);
    return c->serve_rc == TRIO_ECANCELED ? TRIO_ECANCELED : 0;
}

#ifndef _WIN32
static void serve_a_unix_listener(void) {
    char dir[] = "/tmp/trio-test-net-XXXXXX";
    char path[128], reply[32];
    struct userve_ctx c;
    trio_handle_t n = 0, s = 0;
    memset(&c, 0, sizeof c);
    CHECK(mkdtemp(dir) != NULL, "serve unix: a temporary directory");
    snprintf(path, sizeof path, "%s/sock", dir);
    CHECK(trio_unix_listen(path, &c.listener) == 0, "serve unix: listen");
    CHECK(trio_nursery_open(&n) == 0, "serve unix: nursery");
    CHECK(trio_nursery_spawn(n, userve_server, &c) == 0, "serve unix: spawn the server");
    /* The listener queues connections before the server accepts them. */
    CHECK(trio_unix_connect(path, &s) == 0, "serve unix: connect");
    CHECK(trio_send_all(s, "unix\n", 5) == 0, "serve unix: send");
    CHECK(receive_to_eof(s, reply, sizeof reply) == 8 && memcmp(reply, "hi unix\n", 8) == 0,
          "serve unix: the handler answered");
    CHECK(trio_close(s) == 0, "serve unix: close the client");
    CHECK(trio_nursery_cancel(n) == 0 && trio_nursery_close(n) == 0, "serve unix: cancel the server");
    CHECK(c.serve_rc == TRIO_ECANCELED, "serve unix: cancelled");
    CHECK(trio_local_address(c.listener, path, 0) == TRIO_ECLOSED,
          "serve unix: the server closed the listener; its handle says TRIO_ECLOSED");
    CHECK(trio_close(c.listener) == 0, "serve unix: closing the handle frees it");
    snprintf(path, sizeof path, "%s/sock", dir);
    CHECK(unlink(path) == 0 && rmdir(dir) == 0, "serve unix: clean up");
}
#endif

/* A second server on a listener that one task serves already is refused
 * with TRIO_EBUSY, and the first goes on serving (found by the fuzzer: the
 * refusal used to end in the listener being closed under the first). */
static void second_server_is_busy(void) {
    struct userve_ctx c;
    trio_handle_t n = 0;
    uint16_t port = 0;
    char reply[32];
    memset(&c, 0, sizeof c);
    CHECK(trio_tcp_listen("127.0.0.1", 0, &c.listener) == 0, "busy serve: listen");
    CHECK(trio_listener_port(c.listener, &port) == 0, "busy serve: port");
    CHECK(trio_nursery_open(&n) == 0, "busy serve: nursery");
    CHECK(trio_nursery_spawn(n, userve_server, &c) == 0, "busy serve: spawn the first server");
    CHECK(trio_checkpoint() == 0, "busy serve: let it start");
    CHECK(trio_serve_listener(c.listener, greeter, NULL) == TRIO_EBUSY, "busy serve: a second server is TRIO_EBUSY");
    CHECK(detail_has("serving it already"), "busy serve: the detail says why");
    CHECK(trio_listener_port(c.listener, &port) == 0, "busy serve: the listener is still open");
    CHECK(ask(port, "again\n", reply, sizeof reply) == 9 && memcmp(reply, "hi again\n", 9) == 0,
          "busy serve: the first server still answers");
    CHECK(trio_nursery_cancel(n) == 0 && trio_nursery_close(n) == 0, "busy serve: cancel the first server");
    CHECK(c.serve_rc == TRIO_ECANCELED, "busy serve: it was cancelled, not closed under");
    CHECK(trio_close(c.listener) == 0, "busy serve: close the handle");
}

/* A server started on a listener another task is accepting on stops with
 * TRIO_EBUSY and leaves the listener to that task (found by the fuzzer:
 * the failed server used to close it under the accepting task). */
struct accept_ctx {
    trio_handle_t listener, got;
    int rc;
};

static int accepting_task(void *arg) {
    struct accept_ctx *c = (struct accept_ctx *)arg;
    c->rc = trio_accept(c->listener, &c->got);
    return 0;
}

static int busy_server_task(void *arg) {
    struct accept_ctx *c = (struct accept_ctx *)arg;
    return trio_serve_listener(c->listener, greeter, NULL) == TRIO_EBUSY ? 0 : -77;
}

static void server_beside_an_accepting_task(void) {
    struct accept_ctx c;
    trio_handle_t n = 0, s = 0;
    uint16_t port = 0;
    memset(&c, 0, sizeof c);
    c.rc = 1;
    CHECK(trio_tcp_listen("127.0.0.1", 0, &c.listener) == 0, "accepting: listen");
    CHECK(trio_listener_port(c.listener, &port) == 0, "accepting: port");
    CHECK(trio_nursery_open(&n) == 0, "accepting: nursery");
    CHECK(trio_nursery_spawn(n, accepting_task, &c) == 0, "accepting: a task accepts");
    CHECK(trio_checkpoint() == 0, "accepting: it waits in trio_accept");
    CHECK(trio_nursery_spawn(n, busy_server_task, &c) == 0, "accepting: a server on the same listener");
    CHECK(trio_checkpoint() == 0 && trio_checkpoint() == 0, "accepting: let the server try");
    CHECK(trio_tcp_connect("127.0.0.1", port, &s) == 0, "accepting: connect");
    CHECK(trio_nursery_close(n) == 0, "accepting: the server stopped with TRIO_EBUSY, the accept finished");
    CHECK(c.rc == 0 && c.got != 0, "accepting: the accepting task got the connection (the listener stayed open)");
    CHECK(trio_close(c.got) == 0 && trio_close(s) == 0 && trio_close(c.listener) == 0, "accepting: close all");
}

/* --- 6. cancelling a blocked receive with a deadline --- */
static void cancel_a_receive(void) {
    trio_handle_t a = 0, b = 0, scope = 0;
    double t0 = 0, t1 = 0;
    char buf[8];
    tcp_pair(&a, &b);
    CHECK(trio_now(&t0) == 0, "cancel: now");
    CHECK(trio_cancel_scope_open(5.0, 0, &scope) == 0, "cancel: a scope with a 5 s deadline");
    CHECK(trio_receive_some(a, buf, sizeof buf) == TRIO_ECANCELED, "cancel: the receive is cancelled");
    CHECK(trio_cancel_scope_close(scope) == 1, "cancel: the scope caught it");
    CHECK(trio_now(&t1) == 0 && t1 - t0 >= 5.0, "cancel: at the deadline");
    CHECK(trio_send_all(b, "z", 1) == 0, "cancel: the peer sends");
    CHECK(trio_receive_some(a, buf, sizeof buf) == 1 && buf[0] == 'z', "cancel: the stream still works");
    CHECK(trio_close(a) == 0 && trio_close(b) == 0, "cancel: close both");
}

/* --- 7. a cancelled partial send breaks the stream --- */
static void cancel_a_send(void) {
    trio_handle_t a = 0, b = 0, scope = 0;
    size_t len = 64u * 1024 * 1024;
    char *big = calloc(len, 1);
    char buf[8];
    CHECK(big != NULL, "broken: 64 MiB");
    tcp_pair(&a, &b);
    CHECK(trio_cancel_scope_open(1.0, 0, &scope) == 0, "broken: a scope with a deadline");
    CHECK(trio_send_all(a, big, len) == TRIO_ECANCELED, "broken: a send nobody reads is cancelled midway");
    CHECK(trio_cancel_scope_close(scope) == 1, "broken: the scope caught it");
    CHECK(trio_send_all(a, "x", 1) == TRIO_EBROKEN, "broken: the next send is TRIO_EBROKEN");
    CHECK(trio_receive_some(b, buf, sizeof buf) > 0, "broken: the peer got part of it");
    CHECK(trio_close(a) == 0 && trio_close(b) == 0, "broken: close both");
    free(big);
}

/* --- 8. closing under a blocked task; busy; double close --- */
struct blocked_ctx {
    trio_handle_t s;
    int rc;
};

static int blocked_receiver(void *arg) {
    struct blocked_ctx *c = (struct blocked_ctx *)arg;
    char buf[8];
    c->rc = trio_receive_some(c->s, buf, sizeof buf);
    return 0;
}

static void close_busy_and_twice(void) {
    trio_handle_t a = 0, b = 0, n = 0;
    struct blocked_ctx c;
    char buf[8];
    tcp_pair(&a, &b);
    c.s = a;
    c.rc = 99;
    CHECK(trio_nursery_open(&n) == 0, "close: nursery");
    CHECK(trio_nursery_spawn(n, blocked_receiver, &c) == 0, "close: a task receives");
    CHECK(trio_sleep(0.1) == 0 && c.rc == 99, "close: it is blocked");
    CHECK(trio_receive_some(a, buf, sizeof buf) == TRIO_EBUSY, "busy: a second receiver gets TRIO_EBUSY");
    CHECK(trio_close(a) == 0, "close: close the stream under it");
    CHECK(trio_nursery_close(n) == 0, "close: the blocked task finished");
    CHECK(c.rc == TRIO_ECLOSED, "close: its receive returned TRIO_ECLOSED");
    CHECK(trio_close(a) == TRIO_EBADHANDLE, "close: closing twice is TRIO_EBADHANDLE");
    CHECK(detail_has("stale"), "close: the detail says the handle is stale");
    CHECK(trio_receive_some(b, buf, sizeof buf) == 0, "close: the peer sees the end of the stream");
    CHECK(trio_close(b) == 0, "close: close the peer");
}

/* --- 9. connection refused --- */
static void connect_refused(void) {
    trio_handle_t l = 0, s = 12345;
    uint16_t port = 0;
    CHECK(trio_tcp_listen("127.0.0.1", 0, &l) == 0 && trio_listener_port(l, &port) == 0,
          "refused: find a free port");
    CHECK(trio_close(l) == 0, "refused: close it");
    CHECK(trio_tcp_connect("127.0.0.1", port, &s) == TRIO_EIO, "refused: connecting is TRIO_EIO");
    CHECK(s == 12345, "refused: out is left alone");
    CHECK(detail_has("refused") && detail_has("127.0.0.1"), "refused: the detail has the OS message and address");
    CHECK(trio_last_os_error() == OS_ECONNREFUSED, "refused: trio_last_os_error is ECONNREFUSED");
}

/* --- 10. bad input inside a run --- */
static void bad_input(void) {
    trio_handle_t l = 0, a = 0, b = 0, stale = 0, n = 0, out = 777;
    uint16_t port = 0;
    char buf[64];
    tcp_pair(&a, &b);
    CHECK(trio_tcp_listen("127.0.0.1", 0, &l) == 0, "bad: a listener");
    CHECK(trio_tcp_listen("127.0.0.1", 0, &stale) == 0 && trio_close(stale) == 0, "bad: a stale handle");
    CHECK(trio_nursery_open(&n) == 0, "bad: a nursery handle");

    /* NULL pointers and sizes */
    CHECK(trio_tcp_connect(NULL, 1, &out) == TRIO_EINVAL && out == 777, "bad: connect to a NULL host");
    CHECK(trio_tcp_connect("127.0.0.1", 1, NULL) == TRIO_EINVAL, "bad: connect with NULL out");
    CHECK(trio_tcp_connect("\xff", 1, &out) == TRIO_EINVAL && out == 777, "bad: a host that is not UTF-8");
    CHECK(trio_tcp_listen(NULL, 0, NULL) == TRIO_EINVAL, "bad: listen with NULL out");
    CHECK(trio_listener_port(l, NULL) == TRIO_EINVAL, "bad: listener_port with NULL");
    CHECK(trio_accept(l, NULL) == TRIO_EINVAL, "bad: accept with NULL out");
    CHECK(trio_unix_connect(NULL, &out) == TRIO_EINVAL, "bad: unix_connect to NULL");
    CHECK(trio_unix_connect("/nowhere", NULL) == TRIO_EINVAL, "bad: unix_connect with NULL out");
    CHECK(trio_unix_listen(NULL, &out) == TRIO_EINVAL, "bad: unix_listen at NULL");
    CHECK(trio_unix_listen("", &out) == TRIO_EINVAL && out == 777, "bad: unix_listen at an empty path");
    CHECK(trio_send_all(a, NULL, 5) == TRIO_EINVAL, "bad: send_all from NULL");
    CHECK(trio_send_all(a, NULL, 0) == 0, "bad: an empty send from NULL is fine");
    CHECK(trio_receive_some(a, NULL, 5) == TRIO_EINVAL, "bad: receive into NULL");
    CHECK(trio_receive_some(a, buf, 0) == TRIO_EINVAL, "bad: receive into 0 bytes");
    CHECK(trio_local_address(l, NULL, 5) == TRIO_EINVAL, "bad: local_address into NULL");
    CHECK(trio_local_address(l, NULL, 0) > 10, "bad: local_address with NULL, 0 gives the length");
    CHECK(trio_local_address(l, buf, 4) > 10 && strlen(buf) == 3, "bad: local_address truncates");
    CHECK(trio_peer_address(a, buf, sizeof buf) > 10 && strncmp(buf, "127.0.0.1:", 10) == 0, "peer address");
    CHECK(trio_serve_tcp(0, "127.0.0.1", NULL, NULL, NULL) == TRIO_EINVAL, "bad: serve_tcp without a handler");
    CHECK(trio_serve_listener(l, NULL, NULL) == TRIO_EINVAL, "bad: serve_listener without a handler");

    /* handle 0 */
    CHECK(trio_receive_some(0, buf, sizeof buf) == TRIO_EBADHANDLE, "bad: receive on handle 0");
    CHECK(detail_has("handle is 0, expected a stream (TCP or Unix)"), "bad: the detail names both stream kinds");
    CHECK(trio_send_all(0, "x", 1) == TRIO_EBADHANDLE, "bad: send on handle 0");
    CHECK(trio_send_eof(0) == TRIO_EBADHANDLE, "bad: send_eof on handle 0");
    CHECK(trio_accept(0, &out) == TRIO_EBADHANDLE && out == 777, "bad: accept on handle 0");
    CHECK(trio_listener_port(0, &port) == TRIO_EBADHANDLE, "bad: listener_port of handle 0");
    CHECK(trio_local_address(0, buf, sizeof buf) == TRIO_EBADHANDLE, "bad: local_address of handle 0");
    CHECK(trio_peer_address(0, buf, sizeof buf) == TRIO_EBADHANDLE, "bad: peer_address of handle 0");
    CHECK(trio_close(0) == TRIO_EBADHANDLE, "bad: close handle 0");
    CHECK(trio_serve_listener(0, greeter, NULL) == TRIO_EBADHANDLE, "bad: serve_listener on handle 0");

    /* a stale handle */
    CHECK(trio_accept(stale, &out) == TRIO_EBADHANDLE && out == 777, "bad: accept on a closed listener");
    CHECK(detail_has("stale"), "bad: the detail says stale");
    CHECK(trio_listener_port(stale, &port) == TRIO_EBADHANDLE, "bad: listener_port of a closed listener");
    CHECK(trio_local_address(stale, buf, sizeof buf) == TRIO_EBADHANDLE, "bad: local_address of a closed one");
    CHECK(trio_serve_listener(stale, greeter, NULL) == TRIO_EBADHANDLE, "bad: serve a closed listener");
    CHECK(trio_close(stale) == TRIO_EBADHANDLE, "bad: close a closed listener");

    /* the wrong kind */
    CHECK(trio_receive_some(l, buf, sizeof buf) == TRIO_EBADHANDLE, "bad: receive on a listener");
    CHECK(detail_has("is a TCP listener, expected a stream (TCP or Unix)"), "bad: the detail says what it is");
    CHECK(trio_send_all(l, "x", 1) == TRIO_EBADHANDLE, "bad: send on a listener");
    CHECK(trio_send_eof(l) == TRIO_EBADHANDLE, "bad: send_eof on a listener");
    CHECK(trio_peer_address(l, buf, sizeof buf) == TRIO_EBADHANDLE, "bad: peer_address of a listener");
    CHECK(trio_accept(a, &out) == TRIO_EBADHANDLE && out == 777, "bad: accept on a stream");
    CHECK(detail_has("is a TCP stream, expected a listener (TCP or Unix)"), "bad: the detail says so");
    CHECK(trio_listener_port(a, &port) == TRIO_EBADHANDLE, "bad: listener_port of a stream");
    CHECK(trio_serve_listener(a, greeter, NULL) == TRIO_EBADHANDLE, "bad: serve a stream");
    CHECK(trio_close(n) == TRIO_EBADHANDLE, "bad: trio_close of a nursery");
    CHECK(trio_receive_some(n, buf, sizeof buf) == TRIO_EBADHANDLE, "bad: receive on a nursery");
    CHECK(trio_nursery_close(a) == TRIO_EBADHANDLE, "bad: a stream is not a nursery");
    CHECK(trio_receive_some((trio_handle_t)0xff00000000000001ull, buf, sizeof buf) == TRIO_EBADHANDLE,
          "bad: a made-up handle");
    CHECK(port == 0, "bad: port was never written");

    CHECK(trio_nursery_close(n) == 0, "bad: close the nursery");
    CHECK(trio_close(l) == 0 && trio_close(a) == 0 && trio_close(b) == 0, "bad: close the sockets");
}

static int main_task(void *arg) {
    (void)arg;
    echo_between_two_tasks("127.0.0.1");
    one_mebibyte();
    half_close();
#ifndef _WIN32
    unix_sockets();
#endif
    serve_tcp_with_a_handler();
#ifndef _WIN32
    serve_a_unix_listener();
#endif
    second_server_is_busy();
    server_beside_an_accepting_task();
    cancel_a_receive();
    cancel_a_send();
    close_busy_and_twice();
    connect_refused();
    bad_input();
    return 0;
}

/* A real-clock run. (IP literals only: a name lookup runs getaddrinfo on
 * a worker thread, whose glibc resolver state valgrind reports as lost
 * while the idle worker lives on, 10 s.) */
static int real_clock_task(void *arg) {
    (void)arg;
    echo_between_two_tasks("127.0.0.1");
    return 0;
}

/* Handles left open at the end of a run, used after it. */
static trio_handle_t left_listener, left_a, left_b;

static int leave_open(void *arg) {
    (void)arg;
    CHECK(trio_tcp_listen("127.0.0.1", 0, &left_listener) == 0, "after: a listener left open");
    tcp_pair(&left_a, &left_b);
    return 0;
}

/* --- the I/O driver: trio_set_driver, trio_current_driver --- */
static int driver_seen = 0;
static char driver_why[128];

static int driver_echo_task(void *arg) {
    (void)arg;
    driver_seen = trio_current_driver(driver_why, sizeof driver_why);
    echo_between_two_tasks("127.0.0.1");
    return 0;
}

static void drivers(void) {
    int rc;
    CHECK(trio_set_driver(7) == TRIO_EINVAL && trio_set_driver(-1) == TRIO_EINVAL, "driver: unknown values are refused");
    CHECK(trio_current_driver(NULL, 0) == TRIO_ENORUN, "driver: there is none outside a run");
    CHECK(trio_set_driver(TRIO_DRIVER_URING) == 0, "driver: ask for io_uring");
    rc = trio_run(driver_echo_task, NULL);
    CHECK((rc == 0 && driver_seen == TRIO_DRIVER_URING && driver_why[0] == 0) || ((rc == TRIO_EIO || rc == TRIO_EUNSUPPORTED) && detail_has("io_uring")),
          "driver: an echo on io_uring, or the reason it cannot be used");
    CHECK(trio_set_driver(TRIO_DRIVER_AUTO) == 0, "driver: auto");
    rc = trio_run(driver_echo_task, NULL);
    CHECK(rc == 0 && ((driver_seen == TRIO_DRIVER_URING && driver_why[0] == 0) ||
                      (driver_seen == TRIO_DRIVER_EPOLL && strstr(driver_why, "io_uring") != NULL)),
          "driver: auto runs on io_uring, or on epoll saying why");
    CHECK(trio_set_driver(TRIO_DRIVER_EPOLL) == 0, "driver: epoll");
    rc = trio_run(driver_echo_task, NULL);
    CHECK(rc == 0 && driver_seen == TRIO_DRIVER_EPOLL && driver_why[0] == 0, "driver: epoll runs on epoll");
    CHECK(trio_set_driver(TRIO_DRIVER_DEFAULT) == 0, "driver: back to the default");
}

int main(void) {
    int fds_before = count_fds();
    trio_handle_t h = 555;
    char buf[64];
    CHECK(fds_before > 0 || fds_before == FDS_UNKNOWN, "count descriptors");

    /* outside trio_run */
    CHECK(trio_tcp_connect("127.0.0.1", 1, &h) == TRIO_ENORUN && h == 555, "outside: connect");
    CHECK(trio_tcp_listen("127.0.0.1", 0, &h) == TRIO_ENORUN && h == 555, "outside: listen");
    CHECK(trio_unix_connect("/tmp/x", &h) == TRIO_ENORUN, "outside: unix_connect");
    CHECK(trio_unix_listen("/tmp/x", &h) == TRIO_ENORUN && h == 555, "outside: unix_listen");
    CHECK(trio_serve_tcp(0, "127.0.0.1", greeter, NULL, NULL) == TRIO_ENORUN, "outside: serve_tcp");
    CHECK(trio_receive_some(0, buf, sizeof buf) == TRIO_EBADHANDLE, "outside: receive on handle 0");
    CHECK(trio_close(0) == TRIO_EBADHANDLE, "outside: close handle 0");

    CHECK(trio_run_mock_clock(main_task, NULL) == 0, "everything on the mock clock");
    CHECK(trio_run(real_clock_task, NULL) == 0, "echo on the real clock");
    drivers();

    CHECK(trio_run(leave_open, NULL) == 0, "a run that leaves sockets open");
    /* trio_run closed them: their handles are stale, their descriptors
     * gone (the count below). */
    CHECK(trio_receive_some(left_a, buf, sizeof buf) == TRIO_EBADHANDLE, "after: receive on a handle left open");
    CHECK(detail_has("stale"), "after: it is stale");
    CHECK(trio_send_all(left_b, "x", 1) == TRIO_EBADHANDLE, "after: send on a handle left open");
    CHECK(trio_send_eof(left_a) == TRIO_EBADHANDLE, "after: send_eof on a handle left open");
    CHECK(trio_accept(left_listener, &h) == TRIO_EBADHANDLE && h == 555, "after: accept on a listener left open");
    CHECK(trio_serve_listener(left_listener, greeter, NULL) == TRIO_EBADHANDLE, "after: serve_listener");
    CHECK(trio_local_address(left_a, buf, sizeof buf) == TRIO_EBADHANDLE, "after: local_address");
    CHECK(trio_close(left_a) == TRIO_EBADHANDLE && trio_close(left_listener) == TRIO_EBADHANDLE,
          "after: closing them again is TRIO_EBADHANDLE");
    if (fds_before != FDS_UNKNOWN) CHECK(count_fds() == fds_before, "no descriptor leaked");
    printf("1..%d\n", test_no);
    return 0;
}
