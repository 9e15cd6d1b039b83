/* Bad input for every function of libtrio.h: NULL pointers; zero, made-up,
 * stale (closed, or from an earlier run), double-closed, wrong-kind and
 * other-thread handles; calls outside a run, outside a C task (in a
 * trio_token_run_sync_soon callback) and from a worker thread; a few other
 * documented refusals (out-of-order close, lock misuse, bad durations and
 * addresses). Every refused call must return its documented code, leave its
 * outputs untouched (they are filled with sentinels first), do nothing else,
 * and leave a detail message of its own (trio_last_error, not the previous
 * failure's) with trio_last_error_code() equal to the code.
 *
 * Prints "ok N - ..." for a check (one line for a group of checks: one bad
 * handle given to every function) and "not ok N - ..." for each failure,
 * going on after it; ends with "# N checks, M failed" and exits 1 if any
 * failed. */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "libtrio.h"

/* Windows (mingw, run under Wine in CI) has no Unix-domain sockets in
 * libtrio (they return TRIO_EUNSUPPORTED), and its OS errors are Winsock's. */
#ifdef _WIN32
#include <winsock2.h>
#define HAVE_UNIX_SOCKETS 0
#define OS_ECONNREFUSED WSAECONNREFUSED
#define OS_EADDRINUSE WSAEADDRINUSE
#else
#define HAVE_UNIX_SOCKETS 1
#define OS_ECONNREFUSED ECONNREFUSED
#define OS_EADDRINUSE EADDRINUSE
#endif

/* ------------------------------------------------------------ reporting */

static int n_checks = 0, n_failed = 0;

/* The test harness reads a program's output only once it has exited, so
 * the output must stay well under a pipe's 64 KiB: the checks of a group
 * (one bad handle given to every function) print one line together, and
 * at most MAX_SHOWN failures are printed one by one. */
#define MAX_SHOWN 100
static int quiet = 0, shown = 0, group_checks = 0, group_failed = 0;

static void report(int ok, const char *what, int line, const char *why) {
    n_checks++;
    if (quiet) group_checks++;
    if (ok) {
        if (!quiet) printf("ok %d - %s\n", n_checks, what);
    } else {
        n_failed++;
        if (quiet) group_failed++;
        if (shown < MAX_SHOWN)
            printf("not ok %d - %s (line %d: %s)\n", n_checks, what, line, why);
        else if (shown == MAX_SHOWN)
            printf("# (further failures are counted, not shown)\n");
        shown++;
    }
    fflush(stdout);
}

static void group_begin(void) {
    quiet = 1;
    group_checks = group_failed = 0;
}

static void group_end(const char *what) {
    quiet = 0;
    if (group_failed == 0)
        printf("ok %d - %s (%d checks)\n", n_checks, what, group_checks);
    else
        printf("# %s: %d of %d checks failed\n", what, group_failed, group_checks);
    fflush(stdout);
}

#define CHECK(cond, what) report((cond) != 0, (what), __LINE__, "condition is false")

/* The detail of the failure made by prime(), to tell it from a new one. */
static char primer[160];

/* Makes a failure with a known detail, so a later check can tell that the
 * call under test recorded a detail of its own. */
static void prime(void) {
    trio_last_error(NULL, 1); /* TRIO_EINVAL: "... buf is NULL but len is 1" */
    trio_last_error(primer, sizeof primer);
}

/* Outputs, filled with sentinels before a call that must fail. */
#define SENT_H ((trio_handle_t)0xdeadbeefdeadbeefULL)
#define SENT_P ((void *)(uintptr_t)0xdeadbeefUL)
#define SENT_SZ ((size_t)0xdeadbeefUL)
#define SENT_PORT ((uint16_t)0xbeef)
#define SENT_D (-12345.25)

struct outs {
    trio_handle_t h, h2;
    void *p;
    size_t sz;
    uint16_t port;
    double d;
    trio_token *tok;
    char buf[24];
};

static void fill(struct outs *o) {
    o->h = o->h2 = SENT_H;
    o->p = SENT_P;
    o->sz = SENT_SZ;
    o->port = SENT_PORT;
    o->d = SENT_D;
    o->tok = (trio_token *)SENT_P;
    memset(o->buf, 'Z', sizeof o->buf);
}

/* Which output was written, or NULL. */
static const char *written(const struct outs *o) {
    size_t i;
    if (o->h != SENT_H || o->h2 != SENT_H) return "a handle output was written";
    if (o->p != SENT_P) return "a pointer output was written";
    if (o->sz != SENT_SZ) return "a size output was written";
    if (o->port != SENT_PORT) return "the port output was written";
    if (memcmp(&o->d, &(double){SENT_D}, sizeof o->d) != 0) return "the double output was written";
    if (o->tok != (trio_token *)SENT_P) return "the token output was written";
    for (i = 0; i < sizeof o->buf; i++)
        if (o->buf[i] != 'Z') return "the buffer was written";
    return NULL;
}

/* Checks a call's result: its code; on a failure also the last error code,
 * a detail of its own, and (if `o`) untouched outputs. */
static void expect_(int got, int want, const struct outs *o, const char *what, int line) {
    char detail[300], why[700];
    int ok = 1;
    trio_last_error(detail, sizeof detail);
    why[0] = '\0';
    if (got != want) {
        ok = 0;
        snprintf(why, sizeof why, "expected %d (%s), got %d (%s); detail: \"%.150s\"", want, trio_strerror(want), got,
                 trio_strerror(got), detail);
    } else if (want < 0) {
        int code = trio_last_error_code();
        const char *w = o ? written(o) : NULL;
        if (code != want) {
            ok = 0;
            snprintf(why, sizeof why, "returned %d but trio_last_error_code() is %d", got, code);
        } else if (detail[0] == '\0') {
            ok = 0;
            snprintf(why, sizeof why, "the detail (trio_last_error) is empty");
        } else if (strcmp(detail, primer) == 0) {
            ok = 0;
            snprintf(why, sizeof why, "no detail of its own: trio_last_error still has the previous failure's");
        } else if (w != NULL) {
            ok = 0;
            snprintf(why, sizeof why, "%s on failure", w);
        }
    }
    report(ok, what, line, why);
}

/* EXPECT(code, call): the call returns `code` (0 for setup steps). */
#define EXPECT(want, expr)                                                     \
    do {                                                                       \
        int rc_;                                                               \
        prime();                                                               \
        rc_ = (expr);                                                          \
        expect_(rc_, (want), NULL, #expr, __LINE__);                           \
    } while (0)

/* EXPECT_O(code, o, call): as EXPECT, and the outputs in `o` (filled with
 * sentinels first) are left untouched. */
#define EXPECT_O(want, o, expr)                                                \
    do {                                                                       \
        int rc_;                                                               \
        fill(&(o));                                                            \
        prime();                                                               \
        rc_ = (expr);                                                          \
        expect_(rc_, (want), &(o), #expr, __LINE__);                           \
    } while (0)

static int exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

/* ------------------------------------------ functions that must not run */

/* Counts calls of the functions given to refused calls: they must not run. */
static int stray_calls = 0;

static int must_not_run_task(void *arg) {
    (void)arg;
    stray_calls++;
    return 0;
}

static void must_not_run_sync(void *arg) {
    (void)arg;
    stray_calls++;
}

static int must_not_run_handler(trio_handle_t stream, void *arg) {
    (void)stream;
    (void)arg;
    stray_calls++;
    return 0;
}

static void must_not_run_started(uint16_t port, void *arg) {
    (void)port;
    (void)arg;
    stray_calls++;
}

/* ------------------------------------------------------- kinds of handle */

enum {
    K_NURSERY,
    K_SCOPE,
    K_EVENT,
    K_LOCK,
    K_SEM,
    K_SEND,
    K_RECV,
    K_TCP_STREAM,
    K_TCP_LISTENER,
    K_UNIX_STREAM,
    K_UNIX_LISTENER,
    NKINDS
};

static const char *const kind_names[NKINDS] = {
    "a nursery",          "a cancel scope", "an event",       "a lock",
    "a semaphore",        "a channel sender", "a channel receiver", "a TCP stream",
    "a TCP listener",     "a Unix stream",  "a Unix listener",
};

#define M(k) (1u << (k))
#define STREAMS (M(K_TCP_STREAM) | M(K_UNIX_STREAM))
#define LISTENERS (M(K_TCP_LISTENER) | M(K_UNIX_LISTENER))
#define SOCKETS (STREAMS | LISTENERS)

/* One object of each kind, plus the server ends of the two streams. */
struct objset {
    trio_handle_t h[NKINDS];
    trio_handle_t srv_tcp, srv_unix;
    uint16_t port;
    char path[108];
};

static void unix_path(char *buf, size_t len, const char *what) {
    snprintf(buf, len, "/tmp/trio_bad_input_%ld_%s.sock", (long)getpid(), what);
}

/* Makes the objects of every kind but nursery and cancel scope (those are
 * opened by the caller, who must close them in order). */
static void open_objects(struct objset *s, const char *name) {
    int k;
    for (k = K_EVENT; k < NKINDS; k++) s->h[k] = 0;
    s->srv_tcp = s->srv_unix = 0;
    s->port = 0;
    unix_path(s->path, sizeof s->path, name);
    unlink(s->path);
    EXPECT(0, trio_event_new(&s->h[K_EVENT]));
    EXPECT(0, trio_lock_new(&s->h[K_LOCK]));
    EXPECT(0, trio_semaphore_new(2, &s->h[K_SEM]));
    EXPECT(0, trio_channel_open(4, &s->h[K_SEND], &s->h[K_RECV]));
    EXPECT(0, trio_tcp_listen("127.0.0.1", 0, &s->h[K_TCP_LISTENER]));
    EXPECT(0, trio_listener_port(s->h[K_TCP_LISTENER], &s->port));
    EXPECT(0, trio_tcp_connect("127.0.0.1", s->port, &s->h[K_TCP_STREAM]));
    EXPECT(0, trio_accept(s->h[K_TCP_LISTENER], &s->srv_tcp));
    if (HAVE_UNIX_SOCKETS) {
        EXPECT(0, trio_unix_listen(s->path, &s->h[K_UNIX_LISTENER]));
        EXPECT(0, trio_unix_connect(s->path, &s->h[K_UNIX_STREAM]));
        EXPECT(0, trio_accept(s->h[K_UNIX_LISTENER], &s->srv_unix));
    } else {
        EXPECT(TRIO_EUNSUPPORTED, trio_unix_listen(s->path, &s->h[K_UNIX_LISTENER]));
        EXPECT(TRIO_EUNSUPPORTED, trio_unix_connect(s->path, &s->h[K_UNIX_STREAM]));
        CHECK(!exists(s->path), "no socket file where Unix sockets are unsupported");
    }
}

/* Closes what open_objects made; each close once. */
static void close_objects(struct objset *s) {
    EXPECT(0, trio_event_close(s->h[K_EVENT]));
    EXPECT(0, trio_lock_close(s->h[K_LOCK]));
    EXPECT(0, trio_semaphore_close(s->h[K_SEM]));
    EXPECT(0, trio_channel_close_sender(s->h[K_SEND]));
    EXPECT(0, trio_channel_close_receiver(s->h[K_RECV]));
    EXPECT(0, trio_close(s->h[K_TCP_STREAM]));
    EXPECT(0, trio_close(s->srv_tcp));
    EXPECT(0, trio_close(s->h[K_TCP_LISTENER]));
    if (HAVE_UNIX_SOCKETS) {
        EXPECT(0, trio_close(s->h[K_UNIX_STREAM]));
        EXPECT(0, trio_close(s->srv_unix));
        EXPECT(0, trio_close(s->h[K_UNIX_LISTENER]));
    }
}

/* ------------------------------------------- every function of a handle */

typedef int (*hop_fn)(trio_handle_t h, struct outs *o);

struct hop {
    const char *name;
    hop_fn fn;
    unsigned kinds; /* the kinds it accepts */
};

static int h_nursery_spawn(trio_handle_t h, struct outs *o) {
    (void)o;
    return trio_nursery_spawn(h, must_not_run_task, NULL);
}
static int h_nursery_start(trio_handle_t h, struct outs *o) { return trio_nursery_start(h, must_not_run_task, NULL, &o->p); }
static int h_nursery_cancel(trio_handle_t h, struct outs *o) {
    (void)o;
    return trio_nursery_cancel(h);
}
static int h_nursery_close(trio_handle_t h, struct outs *o) {
    (void)o;
    return trio_nursery_close(h);
}
static int h_scope_cancel(trio_handle_t h, struct outs *o) {
    (void)o;
    return trio_cancel_scope_cancel(h);
}
static int h_scope_close(trio_handle_t h, struct outs *o) {
    (void)o;
    return trio_cancel_scope_close(h);
}
static int h_listener_port(trio_handle_t h, struct outs *o) { return trio_listener_port(h, &o->port); }
static int h_local_address(trio_handle_t h, struct outs *o) { return trio_local_address(h, o->buf, sizeof o->buf); }
static int h_peer_address(trio_handle_t h, struct outs *o) { return trio_peer_address(h, o->buf, sizeof o->buf); }
static int h_accept(trio_handle_t h, struct outs *o) { return trio_accept(h, &o->h); }
static int h_send_all(trio_handle_t h, struct outs *o) {
    (void)o;
    return trio_send_all(h, "x", 1);
}
static int h_receive_some(trio_handle_t h, struct outs *o) { return trio_receive_some(h, o->buf, sizeof o->buf); }
static int h_send_eof(trio_handle_t h, struct outs *o) {
    (void)o;
    return trio_send_eof(h);
}
static int h_close(trio_handle_t h, struct outs *o) {
    (void)o;
    return trio_close(h);
}
static int h_serve_listener(trio_handle_t h, struct outs *o) {
    (void)o;
    return trio_serve_listener(h, must_not_run_handler, NULL);
}
static int h_event_set(trio_handle_t h, struct outs *o) {
    (void)o;
    return trio_event_set(h);
}
static int h_event_is_set(trio_handle_t h, struct outs *o) {
    (void)o;
    return trio_event_is_set(h);
}
static int h_event_wait(trio_handle_t h, struct outs *o) {
    (void)o;
    return trio_event_wait(h);
}
static int h_event_close(trio_handle_t h, struct outs *o) {
    (void)o;
    return trio_event_close(h);
}
static int h_clone_sender(trio_handle_t h, struct outs *o) { return trio_channel_clone_sender(h, &o->h); }
static int h_clone_receiver(trio_handle_t h, struct outs *o) { return trio_channel_clone_receiver(h, &o->h); }
static int h_channel_send(trio_handle_t h, struct outs *o) {
    (void)o;
    return trio_channel_send(h, &stray_calls);
}
static int h_channel_receive(trio_handle_t h, struct outs *o) { return trio_channel_receive(h, &o->p); }
static int h_channel_try_send(trio_handle_t h, struct outs *o) {
    (void)o;
    return trio_channel_try_send(h, &stray_calls);
}
static int h_channel_try_receive(trio_handle_t h, struct outs *o) { return trio_channel_try_receive(h, &o->p); }
static int h_close_sender(trio_handle_t h, struct outs *o) {
    (void)o;
    return trio_channel_close_sender(h);
}
static int h_close_receiver(trio_handle_t h, struct outs *o) {
    (void)o;
    return trio_channel_close_receiver(h);
}
static int h_lock_acquire(trio_handle_t h, struct outs *o) {
    (void)o;
    return trio_lock_acquire(h);
}
static int h_lock_try_acquire(trio_handle_t h, struct outs *o) {
    (void)o;
    return trio_lock_try_acquire(h);
}
static int h_lock_release(trio_handle_t h, struct outs *o) {
    (void)o;
    return trio_lock_release(h);
}
static int h_lock_close(trio_handle_t h, struct outs *o) {
    (void)o;
    return trio_lock_close(h);
}
static int h_sem_acquire(trio_handle_t h, struct outs *o) {
    (void)o;
    return trio_semaphore_acquire(h);
}
static int h_sem_try_acquire(trio_handle_t h, struct outs *o) {
    (void)o;
    return trio_semaphore_try_acquire(h);
}
static int h_sem_release(trio_handle_t h, struct outs *o) {
    (void)o;
    return trio_semaphore_release(h);
}
static int h_sem_value(trio_handle_t h, struct outs *o) { return trio_semaphore_value(h, &o->sz); }
static int h_sem_close(trio_handle_t h, struct outs *o) {
    (void)o;
    return trio_semaphore_close(h);
}

static const struct hop hops[] = {
    {"trio_nursery_spawn", h_nursery_spawn, M(K_NURSERY)},
    {"trio_nursery_start", h_nursery_start, M(K_NURSERY)},
    {"trio_nursery_cancel", h_nursery_cancel, M(K_NURSERY)},
    {"trio_nursery_close", h_nursery_close, M(K_NURSERY)},
    {"trio_cancel_scope_cancel", h_scope_cancel, M(K_SCOPE)},
    {"trio_cancel_scope_close", h_scope_close, M(K_SCOPE)},
    {"trio_listener_port", h_listener_port, M(K_TCP_LISTENER)},
    {"trio_local_address", h_local_address, SOCKETS},
    {"trio_peer_address", h_peer_address, STREAMS},
    {"trio_accept", h_accept, LISTENERS},
    {"trio_send_all", h_send_all, STREAMS},
    {"trio_receive_some", h_receive_some, STREAMS},
    {"trio_send_eof", h_send_eof, STREAMS},
    {"trio_close", h_close, SOCKETS},
    {"trio_serve_listener", h_serve_listener, LISTENERS},
    {"trio_event_set", h_event_set, M(K_EVENT)},
    {"trio_event_is_set", h_event_is_set, M(K_EVENT)},
    {"trio_event_wait", h_event_wait, M(K_EVENT)},
    {"trio_event_close", h_event_close, M(K_EVENT)},
    {"trio_channel_clone_sender", h_clone_sender, M(K_SEND)},
    {"trio_channel_clone_receiver", h_clone_receiver, M(K_RECV)},
    {"trio_channel_send", h_channel_send, M(K_SEND)},
    {"trio_channel_receive", h_channel_receive, M(K_RECV)},
    {"trio_channel_try_send", h_channel_try_send, M(K_SEND)},
    {"trio_channel_try_receive", h_channel_try_receive, M(K_RECV)},
    {"trio_channel_close_sender", h_close_sender, M(K_SEND)},
    {"trio_channel_close_receiver", h_close_receiver, M(K_RECV)},
    {"trio_lock_acquire", h_lock_acquire, M(K_LOCK)},
    {"trio_lock_try_acquire", h_lock_try_acquire, M(K_LOCK)},
    {"trio_lock_release", h_lock_release, M(K_LOCK)},
    {"trio_lock_close", h_lock_close, M(K_LOCK)},
    {"trio_semaphore_acquire", h_sem_acquire, M(K_SEM)},
    {"trio_semaphore_try_acquire", h_sem_try_acquire, M(K_SEM)},
    {"trio_semaphore_release", h_sem_release, M(K_SEM)},
    {"trio_semaphore_value", h_sem_value, M(K_SEM)},
    {"trio_semaphore_close", h_sem_close, M(K_SEM)},
};
#define NHOPS (sizeof hops / sizeof hops[0])

/* Calls every handle function with `h` (described by `what`, of kind `kind`
 * or -1): every one if `all`, else those that do not accept `kind`. Each
 * must return TRIO_EBADHANDLE and write nothing. */
static void bad_handle(const char *where, trio_handle_t h, const char *what, int kind, int all) {
    size_t i;
    char summary[300];
    group_begin();
    for (i = 0; i < NHOPS; i++) {
        struct outs o;
        char label[300];
        int rc;
        if (!all && kind >= 0 && (hops[i].kinds & M(kind))) continue;
        snprintf(label, sizeof label, "%s: %s(%s) is TRIO_EBADHANDLE", where, hops[i].name, what);
        fill(&o);
        prime();
        rc = hops[i].fn(h, &o);
        expect_(rc, TRIO_EBADHANDLE, &o, label, __LINE__);
    }
    snprintf(summary, sizeof summary, "%s: every %sfunction of a handle refuses %s with TRIO_EBADHANDLE", where,
             all ? "" : "other-kind ", what);
    group_end(summary);
}

/* Handles that never named anything. */
static void made_up_handles(const char *where) {
    bad_handle(where, 0, "0", -1, 1);
    bad_handle(where, 0x12345, "0x12345", -1, 1);
    bad_handle(where, ~(trio_handle_t)0, "~0", -1, 1);
}

/* Every handle of `s` (of a run that ended, or closed): every function. */
static void stale_handles(const char *where, const struct objset *s, const char *how) {
    int k;
    char what[120];
    for (k = 0; k < NKINDS; k++) {
        snprintf(what, sizeof what, "%s %s", kind_names[k], how);
        bad_handle(where, s->h[k], what, k, 1);
    }
    bad_handle(where, s->srv_tcp, "an accepted TCP stream, stale", K_TCP_STREAM, 1);
    bad_handle(where, s->srv_unix, "an accepted Unix stream, stale", K_UNIX_STREAM, 1);
}

/* ------------------------------------------------ outside any trio_run */

static void before_any_run(void) {
    struct outs o;
    int i;
    char path[108];
    static const int codes[] = {
        TRIO_EINVAL,      TRIO_EBADHANDLE,    TRIO_ENORUN,       TRIO_ECANCELED, TRIO_ETIMEDOUT, TRIO_ECLOSED,
        TRIO_EBROKEN,     TRIO_EBUSY,         TRIO_EWOULDBLOCK,  TRIO_EENDOFCHANNEL, TRIO_EINTERRUPTED,
        TRIO_EIO,         TRIO_ENOMEM,        TRIO_EPANIC,       TRIO_EUNSUPPORTED, TRIO_EGROUP, TRIO_EUSER,
        TRIO_EMISUSE,
    };
    const char *unknown = trio_strerror(-1);

    /* The error functions, before anything failed on this thread. */
    CHECK(trio_last_error(NULL, 0) == 0, "before any failure: trio_last_error(NULL, 0) is 0");
    memset(o.buf, 'Z', sizeof o.buf);
    CHECK(trio_last_error(o.buf, sizeof o.buf) == 0 && o.buf[0] == '\0',
          "before any failure: trio_last_error gives an empty string");
    CHECK(trio_last_error_code() == 0, "before any failure: trio_last_error_code() is 0");
    CHECK(trio_last_os_error() == 0, "before any failure: trio_last_os_error() is 0");

    /* trio_strerror: any int, anywhere. */
    CHECK(unknown != NULL && strcmp(unknown, "unknown trio error code") == 0, "trio_strerror(-1) is unknown");
    CHECK(trio_strerror(INT32_MIN) != NULL && strcmp(trio_strerror(INT32_MIN), unknown) == 0 &&
              trio_strerror(INT32_MAX) != NULL && strcmp(trio_strerror(INT32_MAX), unknown) == 0 &&
              trio_strerror(-1000) != NULL && strcmp(trio_strerror(-1000), unknown) == 0 &&
              trio_strerror(-1019) != NULL && strcmp(trio_strerror(-1019), unknown) == 0,
          "trio_strerror of INT_MIN, INT_MAX and the codes next to the range is unknown");
    for (i = 0; i < (int)(sizeof codes / sizeof codes[0]); i++) {
        const char *s = trio_strerror(codes[i]);
        char label[80];
        snprintf(label, sizeof label, "trio_strerror(%d) names the code", codes[i]);
        CHECK(s != NULL && s[0] != '\0' && strcmp(s, unknown) != 0, label);
    }
    CHECK(trio_last_error_code() == 0, "trio_strerror records no failure");

    /* trio_last_error with a NULL buffer and a length. */
    EXPECT(TRIO_EINVAL, trio_last_error(NULL, 5));
    EXPECT(TRIO_EINVAL, trio_last_error(NULL, (size_t)-1));
    CHECK(trio_last_os_error() == 0, "trio_last_os_error() is 0 after a failure that is not TRIO_EIO");

    /* Functions that work anywhere. */
    EXPECT(TRIO_EINVAL, trio_set_stack_size(0));
    EXPECT(TRIO_EINVAL, trio_set_stack_size(16 * 1024 - 1));
    EXPECT(0, trio_token_free(NULL));

    /* trio_run with no function. */
    EXPECT(TRIO_EINVAL, trio_run(NULL, NULL));
    EXPECT(TRIO_EINVAL, trio_run_mock_clock(NULL, NULL));

    /* Every function that needs a run, with otherwise good arguments. */
    EXPECT(TRIO_ENORUN, trio_sleep(0.0));
    EXPECT(TRIO_ENORUN, trio_sleep(0.5));
    EXPECT(TRIO_ENORUN, trio_checkpoint());
    EXPECT_O(TRIO_ENORUN, o, trio_now(&o.d));
    EXPECT_O(TRIO_ENORUN, o, trio_nursery_open(&o.h));
    EXPECT_O(TRIO_ENORUN, o, trio_cancel_scope_open(1.0, 0, &o.h));
    EXPECT_O(TRIO_ENORUN, o, trio_cancel_scope_open(-1.0, 1, &o.h));
    EXPECT_O(TRIO_ENORUN, o, trio_tcp_connect("127.0.0.1", 9, &o.h));
    EXPECT_O(TRIO_ENORUN, o, trio_tcp_listen("127.0.0.1", 0, &o.h));
    EXPECT_O(TRIO_ENORUN, o, trio_tcp_listen(NULL, 0, &o.h));
    unix_path(path, sizeof path, "outside");
    unlink(path);
    EXPECT_O(TRIO_ENORUN, o, trio_unix_connect(path, &o.h));
    EXPECT_O(TRIO_ENORUN, o, trio_unix_listen(path, &o.h));
    CHECK(!exists(path), "trio_unix_listen outside a run made no socket file");
    EXPECT(TRIO_ENORUN, trio_serve_tcp(0, "127.0.0.1", must_not_run_handler, NULL, must_not_run_started));
    EXPECT(TRIO_ENORUN, trio_serve_tcp(0, NULL, must_not_run_handler, NULL, must_not_run_started));
    EXPECT_O(TRIO_ENORUN, o, trio_event_new(&o.h));
    EXPECT_O(TRIO_ENORUN, o, trio_channel_open(0, &o.h, &o.h2));
    EXPECT_O(TRIO_ENORUN, o, trio_channel_open((size_t)-1, &o.h, &o.h2));
    EXPECT_O(TRIO_ENORUN, o, trio_lock_new(&o.h));
    EXPECT_O(TRIO_ENORUN, o, trio_semaphore_new(1, &o.h));
    EXPECT(TRIO_ENORUN, trio_to_thread(must_not_run_task, NULL, 0));
    EXPECT(TRIO_ENORUN, trio_to_thread(must_not_run_task, NULL, 1));
    EXPECT_O(TRIO_ENORUN, o, trio_token_get(&o.tok));
    EXPECT(TRIO_ENORUN, trio_task_started(NULL));
    EXPECT(TRIO_ENORUN, trio_task_started(&o));

    /* No handle is valid outside a run. */
    made_up_handles("outside a run");
    CHECK(trio_last_error_code() == TRIO_EBADHANDLE, "trio_last_error_code() follows the last failure");
}

/* ------------------------------------------------------------ the first run */

static struct objset run1; /* left open: stale once the run has ended */
static trio_token *run1_token = NULL;

static int run1_main(void *arg) {
    (void)arg;
    open_objects(&run1, "run1");
    EXPECT(0, trio_nursery_open(&run1.h[K_NURSERY]));
    EXPECT(0, trio_nursery_close(run1.h[K_NURSERY]));
    EXPECT(0, trio_cancel_scope_open(-1.0, 0, &run1.h[K_SCOPE]));
    EXPECT(0, trio_cancel_scope_close(run1.h[K_SCOPE]));
    EXPECT(0, trio_token_get(&run1_token));
    return 0;
}

static void after_first_run(void) {
    stale_handles("after a run, outside it", &run1, "from a run that ended");
    /* Its token reports that the run has ended. */
    EXPECT(TRIO_ENORUN, trio_token_run_sync_soon(run1_token, must_not_run_sync, NULL));
    EXPECT(TRIO_ENORUN, trio_from_thread_run(run1_token, must_not_run_task, NULL));
    EXPECT(TRIO_EINVAL, trio_token_run_sync_soon(run1_token, NULL, NULL));
    EXPECT(TRIO_EINVAL, trio_from_thread_run(run1_token, NULL, NULL));
    EXPECT(0, trio_token_free(run1_token));
    run1_token = NULL;
}

/* ----------------------------------------------------------- the second run */

static struct objset live;   /* open until the end of the second run */
static struct objset closed; /* every object made and closed in the second run */
static trio_token *token = NULL;
static trio_handle_t done_event = 0;

/* NULL for every pointer argument, and other refused values, with live
 * objects otherwise. */
static void null_and_bad_values(void) {
    struct outs o;
    char path[108];
    int marker = 0;
    void *p = NULL;

    EXPECT(TRIO_EINVAL, trio_now(NULL));
    EXPECT(TRIO_EINVAL, trio_nursery_open(NULL));
    EXPECT(TRIO_EINVAL, trio_nursery_spawn(live.h[K_NURSERY], NULL, NULL));
    EXPECT_O(TRIO_EINVAL, o, trio_nursery_start(live.h[K_NURSERY], NULL, NULL, &o.p));
    EXPECT(TRIO_EINVAL, trio_nursery_start(live.h[K_NURSERY], NULL, NULL, NULL));
    EXPECT(TRIO_EINVAL, trio_cancel_scope_open(1.0, 0, NULL));
    EXPECT_O(TRIO_EINVAL, o, trio_cancel_scope_open(NAN, 0, &o.h));
    EXPECT_O(TRIO_EINVAL, o, trio_cancel_scope_open(-NAN, 1, &o.h));

    EXPECT_O(TRIO_EINVAL, o, trio_tcp_connect(NULL, live.port, &o.h));
    EXPECT(TRIO_EINVAL, trio_tcp_connect("127.0.0.1", live.port, NULL));
    EXPECT_O(TRIO_EINVAL, o, trio_tcp_connect("\xff\xfe", live.port, &o.h));
    EXPECT(TRIO_EINVAL, trio_tcp_listen("127.0.0.1", 0, NULL));
    EXPECT(TRIO_EINVAL, trio_tcp_listen(NULL, 0, NULL));
    EXPECT_O(TRIO_EINVAL, o, trio_tcp_listen("\xff", 0, &o.h));
    EXPECT(TRIO_EINVAL, trio_listener_port(live.h[K_TCP_LISTENER], NULL));
    EXPECT(TRIO_EINVAL, trio_local_address(live.h[K_TCP_LISTENER], NULL, 16));
    EXPECT(TRIO_EINVAL, trio_local_address(live.h[K_UNIX_STREAM], NULL, 1));
    EXPECT(TRIO_EINVAL, trio_peer_address(live.h[K_TCP_STREAM], NULL, 16));
    CHECK(trio_local_address(live.h[K_TCP_LISTENER], NULL, 0) > 0, "trio_local_address(l, NULL, 0) gives the length");
    CHECK(trio_peer_address(live.h[K_TCP_STREAM], NULL, 0) > 0, "trio_peer_address(s, NULL, 0) gives the length");
    EXPECT(TRIO_EINVAL, trio_accept(live.h[K_TCP_LISTENER], NULL));
    EXPECT(TRIO_EINVAL, trio_accept(live.h[K_UNIX_LISTENER], NULL));

    unix_path(path, sizeof path, "nullcheck");
    unlink(path);
    EXPECT_O(TRIO_EINVAL, o, trio_unix_connect(NULL, &o.h));
    EXPECT(TRIO_EINVAL, trio_unix_connect(live.path, NULL));
    EXPECT_O(TRIO_EINVAL, o, trio_unix_connect("", &o.h));
    EXPECT_O(TRIO_EINVAL, o, trio_unix_listen(NULL, &o.h));
    EXPECT(TRIO_EINVAL, trio_unix_listen(path, NULL));
    CHECK(!exists(path), "trio_unix_listen(path, NULL) made no socket file");
    EXPECT_O(TRIO_EINVAL, o, trio_unix_listen("", &o.h));

    EXPECT(TRIO_EINVAL, trio_send_all(live.h[K_TCP_STREAM], NULL, 5));
    EXPECT(TRIO_EINVAL, trio_send_all(live.h[K_UNIX_STREAM], NULL, (size_t)-1));
    EXPECT_O(TRIO_EINVAL, o, trio_receive_some(live.h[K_TCP_STREAM], NULL, 16));
    EXPECT_O(TRIO_EINVAL, o, trio_receive_some(live.h[K_TCP_STREAM], o.buf, 0));
    EXPECT_O(TRIO_EINVAL, o, trio_receive_some(live.h[K_UNIX_STREAM], NULL, 0));

    EXPECT(TRIO_EINVAL, trio_serve_tcp(0, "127.0.0.1", NULL, NULL, must_not_run_started));
    EXPECT(TRIO_EINVAL, trio_serve_tcp(0, NULL, NULL, NULL, NULL));
    EXPECT(TRIO_EINVAL, trio_serve_tcp(0, "\xff", must_not_run_handler, NULL, must_not_run_started));
    EXPECT(TRIO_EINVAL, trio_serve_listener(live.h[K_TCP_LISTENER], NULL, NULL));
    EXPECT(TRIO_EINVAL, trio_serve_listener(live.h[K_UNIX_LISTENER], NULL, NULL));
    {
        uint16_t port = 0;
        EXPECT(0, trio_listener_port(live.h[K_TCP_LISTENER], &port));
        CHECK(port == live.port, "the listener given to a refused trio_serve_listener still listens");
    }

    EXPECT(TRIO_EINVAL, trio_event_new(NULL));
    EXPECT_O(TRIO_EINVAL, o, trio_channel_open(0, NULL, &o.h));
    EXPECT_O(TRIO_EINVAL, o, trio_channel_open(0, &o.h, NULL));
    EXPECT(TRIO_EINVAL, trio_channel_open(0, NULL, NULL));
    EXPECT(TRIO_EINVAL, trio_channel_clone_sender(live.h[K_SEND], NULL));
    EXPECT(TRIO_EINVAL, trio_channel_clone_receiver(live.h[K_RECV], NULL));
    /* A value waits in the channel: a refused receive must not take it. */
    EXPECT(0, trio_channel_try_send(live.h[K_SEND], &marker));
    EXPECT(TRIO_EINVAL, trio_channel_try_receive(live.h[K_RECV], NULL));
    EXPECT(TRIO_EINVAL, trio_channel_receive(live.h[K_RECV], NULL));
    EXPECT(0, trio_channel_try_receive(live.h[K_RECV], &p));
    CHECK(p == &marker, "the value is still there after the refused receives");
    EXPECT_O(TRIO_EWOULDBLOCK, o, trio_channel_try_receive(live.h[K_RECV], &o.p));

    EXPECT(TRIO_EINVAL, trio_lock_new(NULL));
    EXPECT(TRIO_EINVAL, trio_semaphore_new(1, NULL));
    EXPECT(TRIO_EINVAL, trio_semaphore_value(live.h[K_SEM], NULL));

    EXPECT(TRIO_EINVAL, trio_to_thread(NULL, NULL, 0));
    EXPECT(TRIO_EINVAL, trio_to_thread(NULL, &marker, 1));
    EXPECT(TRIO_EINVAL, trio_token_get(NULL));
    EXPECT(TRIO_EINVAL, trio_token_run_sync_soon(NULL, must_not_run_sync, NULL));
    EXPECT(TRIO_EINVAL, trio_token_run_sync_soon(token, NULL, NULL));
    EXPECT(0, trio_token_free(NULL));
    EXPECT(TRIO_EINVAL, trio_last_error(NULL, 5));

    /* Durations. */
    EXPECT(TRIO_EINVAL, trio_sleep(-1.0));
    EXPECT(TRIO_EINVAL, trio_sleep(-1e-9));
    EXPECT(TRIO_EINVAL, trio_sleep(-INFINITY));
    EXPECT(TRIO_EINVAL, trio_sleep(NAN));
    EXPECT(TRIO_EINVAL, trio_set_stack_size(0));
    EXPECT(TRIO_EINVAL, trio_set_stack_size(16 * 1024 - 1));
}

/* Documented refusals of good handles used the wrong way. */
static int closer_child(void *arg) {
    (void)arg;
    /* Not this task's nursery or scope. */
    EXPECT(TRIO_EINVAL, trio_nursery_close(live.h[K_NURSERY]));
    EXPECT(TRIO_EINVAL, trio_cancel_scope_close(live.h[K_SCOPE]));
    /* The main task holds the lock. */
    EXPECT(TRIO_EMISUSE, trio_lock_release(live.h[K_LOCK]));
    EXPECT(TRIO_EWOULDBLOCK, trio_lock_try_acquire(live.h[K_LOCK]));
    /* Spawned, not started. */
    EXPECT(TRIO_EMISUSE, trio_task_started(NULL));
    EXPECT(0, trio_event_set(done_event));
    return 0;
}

/* Tasks for trio_nursery_start. */
static int started_value;

static int returns_without_started(void *arg) {
    (void)arg;
    return 0;
}

static int fails_before_started(void *arg) { return *(const int *)arg; }

static int started_twice(void *arg) {
    (void)arg;
    EXPECT(0, trio_task_started(&started_value));
    EXPECT(TRIO_EMISUSE, trio_task_started(NULL));
    return 0;
}

static void misuse(trio_handle_t guard) {
    trio_handle_t scope = 0;
    struct outs o;
    void *value = NULL;
    int code, rc;

    /* trio_task_started from a task not started by trio_nursery_start, and
     * trio_nursery_start's refusals. */
    EXPECT(TRIO_EMISUSE, trio_task_started(NULL));
    EXPECT_O(TRIO_EMISUSE, o, trio_nursery_start(live.h[K_NURSERY], returns_without_started, NULL, &o.p));
    code = TRIO_EBROKEN;
    EXPECT_O(TRIO_EBROKEN, o, trio_nursery_start(live.h[K_NURSERY], fails_before_started, &code, &o.p));
    code = -5;
    fill(&o);
    rc = trio_nursery_start(live.h[K_NURSERY], fails_before_started, &code, &o.p);
    {
        char why[120];
        snprintf(why, sizeof why, "expected -5, got %d (%s)%s", rc, trio_strerror(rc),
                 written(&o) ? "; an output was written" : "");
        report(rc == -5 && written(&o) == NULL,
               "trio_nursery_start returns the task's own negative value -5 (failed before started)", __LINE__, why);
    }
    EXPECT(0, trio_nursery_start(live.h[K_NURSERY], started_twice, NULL, &value));
    CHECK(value == &started_value, "trio_nursery_start gives the started value");
    EXPECT(0, trio_nursery_start(live.h[K_NURSERY], started_twice, NULL, NULL));

    /* Out of order: the live scope is the innermost. */
    EXPECT(TRIO_EINVAL, trio_nursery_close(live.h[K_NURSERY]));
    EXPECT(TRIO_EINVAL, trio_cancel_scope_close(guard));

    /* Locks. */
    EXPECT(TRIO_EMISUSE, trio_lock_release(live.h[K_LOCK]));
    EXPECT(0, trio_lock_acquire(live.h[K_LOCK]));
    EXPECT(TRIO_EMISUSE, trio_lock_acquire(live.h[K_LOCK]));
    EXPECT(TRIO_EMISUSE, trio_lock_try_acquire(live.h[K_LOCK]));
    EXPECT(0, trio_event_new(&done_event));
    EXPECT(0, trio_nursery_spawn(live.h[K_NURSERY], closer_child, NULL));
    EXPECT(0, trio_event_wait(done_event));
    EXPECT(0, trio_event_close(done_event));
    EXPECT(0, trio_lock_release(live.h[K_LOCK]));
    EXPECT(TRIO_EMISUSE, trio_lock_release(live.h[K_LOCK]));

    /* No trio_from_thread_run on the run's own thread. (Nested trio_run:
     * see run3_main.) */
    EXPECT(TRIO_EMISUSE, trio_from_thread_run(token, must_not_run_task, NULL));

    /* "Sleeps for `seconds` (0 or more)": the header refuses only negative
     * and NaN durations, so an infinite (or huge) sleep sleeps until
     * cancelled. */
    EXPECT(0, trio_cancel_scope_open(0.05, 0, &scope));
    EXPECT(TRIO_ECANCELED, trio_sleep(INFINITY));
    CHECK(trio_cancel_scope_close(scope) >= 0, "close the scope around trio_sleep(INFINITY)");
    EXPECT(0, trio_cancel_scope_open(0.05, 0, &scope));
    EXPECT(TRIO_ECANCELED, trio_sleep(1e300));
    CHECK(trio_cancel_scope_close(scope) >= 0, "close the scope around trio_sleep(1e300)");
}

/* OS errors for addresses nobody can use. */
static void bad_addresses(void) {
    struct outs o;
    trio_handle_t l = 0;
    uint16_t port = 0;
    char path[108], longpath[300];
    FILE *f;

    /* A port nobody listens on (just closed). */
    EXPECT(0, trio_tcp_listen("127.0.0.1", 0, &l));
    EXPECT(0, trio_listener_port(l, &port));
    EXPECT(0, trio_close(l));
    EXPECT_O(TRIO_EIO, o, trio_tcp_connect("127.0.0.1", port, &o.h));
    CHECK(trio_last_os_error() == OS_ECONNREFUSED, "trio_last_os_error() is ECONNREFUSED after a refused connect");
    /* A port in use. */
    EXPECT_O(TRIO_EIO, o, trio_tcp_listen("127.0.0.1", live.port, &o.h));
    CHECK(trio_last_os_error() == OS_EADDRINUSE, "trio_last_os_error() is EADDRINUSE for a port in use");

    /* Unix paths: missing, too long, in a missing directory, a plain file. */
    if (HAVE_UNIX_SOCKETS) {
    unix_path(path, sizeof path, "missing");
    unlink(path);
    EXPECT_O(TRIO_EIO, o, trio_unix_connect(path, &o.h));
    CHECK(trio_last_os_error() == ENOENT, "trio_last_os_error() is ENOENT for a missing socket file");
    memset(longpath, 'a', sizeof longpath - 1);
    memcpy(longpath, "/tmp/", 5);
    longpath[sizeof longpath - 1] = '\0';
    EXPECT_O(TRIO_EIO, o, trio_unix_connect(longpath, &o.h));
    EXPECT_O(TRIO_EIO, o, trio_unix_listen(longpath, &o.h));
    CHECK(!exists(longpath), "no file for the too-long path");
    EXPECT_O(TRIO_EIO, o, trio_unix_listen("/nonexistent-trio-dir/x.sock", &o.h));
    unix_path(path, sizeof path, "plainfile");
    f = fopen(path, "w");
    CHECK(f != NULL && fputs("keep me\n", f) >= 0 && fclose(f) == 0, "make a plain file");
    EXPECT_O(TRIO_EIO, o, trio_unix_listen(path, &o.h));
    {
        char line[32] = "";
        f = fopen(path, "r");
        CHECK(f != NULL && fgets(line, sizeof line, f) != NULL && strcmp(line, "keep me\n") == 0,
              "trio_unix_listen on a plain file left the file alone");
        if (f) fclose(f);
    }
    unlink(path);
    }
}

/* Outside a C task, inside the run: a trio_token_run_sync_soon callback. */
static void callback_checks(void *arg) {
    struct outs o;
    char path[108];
    trio_token *t = NULL;
    double now = -1;
    (void)arg;

    EXPECT(TRIO_ENORUN, trio_sleep(0.0));
    EXPECT(TRIO_ENORUN, trio_checkpoint());
    EXPECT_O(TRIO_ENORUN, o, trio_nursery_open(&o.h));
    EXPECT_O(TRIO_ENORUN, o, trio_cancel_scope_open(1.0, 0, &o.h));
    EXPECT_O(TRIO_ENORUN, o, trio_event_new(&o.h));
    EXPECT_O(TRIO_ENORUN, o, trio_channel_open(1, &o.h, &o.h2));
    EXPECT_O(TRIO_ENORUN, o, trio_lock_new(&o.h));
    EXPECT_O(TRIO_ENORUN, o, trio_semaphore_new(1, &o.h));
    EXPECT(TRIO_ENORUN, trio_to_thread(must_not_run_task, NULL, 0));
    EXPECT_O(TRIO_ENORUN, o, trio_tcp_connect("127.0.0.1", live.port, &o.h));
    EXPECT_O(TRIO_ENORUN, o, trio_tcp_listen("127.0.0.1", 0, &o.h));
    EXPECT_O(TRIO_ENORUN, o, trio_tcp_listen(NULL, 0, &o.h));
    EXPECT_O(TRIO_ENORUN, o, trio_unix_connect(live.path, &o.h));
    unix_path(path, sizeof path, "callback");
    unlink(path);
    EXPECT_O(TRIO_ENORUN, o, trio_unix_listen(path, &o.h));
    CHECK(!exists(path), "trio_unix_listen outside a C task made no socket file");
    EXPECT(TRIO_ENORUN, trio_serve_tcp(0, "127.0.0.1", must_not_run_handler, NULL, must_not_run_started));
    EXPECT(TRIO_ENORUN, trio_serve_listener(live.h[K_TCP_LISTENER], must_not_run_handler, NULL));
    EXPECT_O(TRIO_ENORUN, o, trio_accept(live.h[K_TCP_LISTENER], &o.h));
    if (HAVE_UNIX_SOCKETS) EXPECT_O(TRIO_ENORUN, o, trio_accept(live.h[K_UNIX_LISTENER], &o.h));
    EXPECT(TRIO_ENORUN, trio_send_all(live.h[K_TCP_STREAM], "x", 1));
    EXPECT_O(TRIO_ENORUN, o, trio_receive_some(live.srv_tcp, o.buf, sizeof o.buf));
    if (HAVE_UNIX_SOCKETS) EXPECT(TRIO_ENORUN, trio_send_eof(live.h[K_UNIX_STREAM]));
    EXPECT(TRIO_ENORUN, trio_event_wait(live.h[K_EVENT]));
    EXPECT(TRIO_ENORUN, trio_channel_send(live.h[K_SEND], &stray_calls));
    EXPECT_O(TRIO_ENORUN, o, trio_channel_receive(live.h[K_RECV], &o.p));
    EXPECT(TRIO_ENORUN, trio_lock_acquire(live.h[K_LOCK]));
    EXPECT(TRIO_ENORUN, trio_lock_try_acquire(live.h[K_LOCK]));
    EXPECT(TRIO_ENORUN, trio_lock_release(live.h[K_LOCK]));
    EXPECT(TRIO_ENORUN, trio_semaphore_acquire(live.h[K_SEM]));
    EXPECT_O(TRIO_ENORUN, o, trio_nursery_start(live.h[K_NURSERY], must_not_run_task, NULL, &o.p));
    EXPECT(TRIO_ENORUN, trio_task_started(NULL));
    /* Closing needs the task that opened it (undocumented code: ENORUN). */
    EXPECT(TRIO_ENORUN, trio_nursery_close(live.h[K_NURSERY]));
    EXPECT(TRIO_ENORUN, trio_cancel_scope_close(live.h[K_SCOPE]));
    EXPECT(TRIO_EMISUSE, trio_from_thread_run(token, must_not_run_task, NULL));
    /* These work in a callback. */
    EXPECT(0, trio_now(&now));
    EXPECT(0, trio_token_get(&t));
    EXPECT(0, trio_token_free(t));
    EXPECT(0, trio_event_set(done_event));
}

/* On a worker thread of trio_to_thread. */
static int worker_checks(void *arg) {
    struct outs o;
    char path[108];
    int k;
    (void)arg;

    EXPECT(TRIO_ENORUN, trio_sleep(0.0));
    EXPECT(TRIO_ENORUN, trio_checkpoint());
    EXPECT_O(TRIO_ENORUN, o, trio_now(&o.d));
    EXPECT_O(TRIO_ENORUN, o, trio_nursery_open(&o.h));
    EXPECT_O(TRIO_ENORUN, o, trio_cancel_scope_open(1.0, 0, &o.h));
    EXPECT_O(TRIO_ENORUN, o, trio_event_new(&o.h));
    EXPECT_O(TRIO_ENORUN, o, trio_channel_open(1, &o.h, &o.h2));
    EXPECT_O(TRIO_ENORUN, o, trio_lock_new(&o.h));
    EXPECT_O(TRIO_ENORUN, o, trio_semaphore_new(1, &o.h));
    EXPECT(TRIO_ENORUN, trio_to_thread(must_not_run_task, NULL, 0));
    EXPECT_O(TRIO_ENORUN, o, trio_token_get(&o.tok));
    EXPECT(TRIO_ENORUN, trio_task_started(NULL));
    EXPECT_O(TRIO_ENORUN, o, trio_tcp_connect("127.0.0.1", live.port, &o.h));
    EXPECT_O(TRIO_ENORUN, o, trio_tcp_listen("127.0.0.1", 0, &o.h));
    unix_path(path, sizeof path, "worker");
    unlink(path);
    EXPECT_O(TRIO_ENORUN, o, trio_unix_listen(path, &o.h));
    CHECK(!exists(path), "trio_unix_listen on a worker thread made no socket file");
    EXPECT(TRIO_ENORUN, trio_serve_tcp(0, "127.0.0.1", must_not_run_handler, NULL, must_not_run_started));

    /* The run's handles are not valid on this thread: every function. */
    for (k = 0; k < NKINDS; k++) {
        size_t i;
        char summary[200];
        group_begin();
        for (i = 0; i < NHOPS; i++) {
            char label[300];
            int rc;
            if (!(hops[i].kinds & M(k))) continue;
            snprintf(label, sizeof label, "on a worker thread: %s(%s of the run's thread) is TRIO_EBADHANDLE",
                     hops[i].name, kind_names[k]);
            fill(&o);
            prime();
            rc = hops[i].fn(live.h[k], &o);
            expect_(rc, TRIO_EBADHANDLE, &o, label, __LINE__);
        }
        snprintf(summary, sizeof summary,
                 "on a worker thread: every function of %s refuses the run thread's handle with TRIO_EBADHANDLE",
                 kind_names[k]);
        group_end(summary);
    }

    EXPECT(TRIO_EINVAL, trio_from_thread_run(NULL, must_not_run_task, NULL));
    EXPECT(TRIO_EINVAL, trio_from_thread_run(token, NULL, NULL));
    EXPECT(TRIO_EINVAL, trio_token_run_sync_soon(NULL, must_not_run_sync, NULL));
    EXPECT(TRIO_EINVAL, trio_token_run_sync_soon(token, NULL, NULL));
    EXPECT(TRIO_EINVAL, trio_to_thread(NULL, NULL, 0));
    EXPECT(TRIO_EINVAL, trio_last_error(NULL, 3));
    CHECK(trio_strerror(TRIO_EBUSY) != NULL && strcmp(trio_strerror(TRIO_EBUSY), trio_strerror(-1)) != 0,
          "trio_strerror works on a worker thread");
    return 0;
}

/* The live objects were not touched by the refused calls. */
static void live_objects_unharmed(void) {
    struct outs o;
    size_t value = 0;
    uint16_t port = 0;
    char buf[16];
    int i;

    EXPECT(0, trio_sleep(0.0)); /* neither the scope nor the nursery was cancelled */
    EXPECT(0, trio_event_is_set(live.h[K_EVENT]));
    EXPECT(0, trio_lock_try_acquire(live.h[K_LOCK]));
    EXPECT(0, trio_lock_release(live.h[K_LOCK]));
    EXPECT(0, trio_semaphore_value(live.h[K_SEM], &value));
    CHECK(value == 2, "the semaphore still holds its 2 permits");
    EXPECT_O(TRIO_EWOULDBLOCK, o, trio_channel_try_receive(live.h[K_RECV], &o.p));
    EXPECT(0, trio_listener_port(live.h[K_TCP_LISTENER], &port));
    CHECK(port == live.port, "the TCP listener still has its port");
    if (HAVE_UNIX_SOCKETS) {
        int n = trio_local_address(live.h[K_UNIX_LISTENER], buf, sizeof buf);
        CHECK(n == (int)strlen(live.path), "the Unix listener still has its path");
    }
    for (i = 0; i < (HAVE_UNIX_SOCKETS ? 2 : 1); i++) {
        trio_handle_t c = i == 0 ? live.h[K_TCP_STREAM] : live.h[K_UNIX_STREAM];
        trio_handle_t s = i == 0 ? live.srv_tcp : live.srv_unix;
        memset(buf, 0, sizeof buf);
        EXPECT(0, trio_send_all(c, "ping", 4));
        EXPECT(4, trio_receive_some(s, buf, sizeof buf));
        CHECK(memcmp(buf, "ping", 4) == 0, "a stream still carries data (and got no stray bytes)");
        EXPECT(0, trio_send_all(s, "pong", 4));
        EXPECT(4, trio_receive_some(c, buf, sizeof buf));
        CHECK(memcmp(buf, "pong", 4) == 0, "and back");
    }
}

static int run2_main(void *arg) {
    trio_handle_t guard = 0;
    char what[120];
    int k;
    (void)arg;

    /* A safety net: a call that wrongly blocks is cancelled after 60 s. */
    EXPECT(0, trio_cancel_scope_open(60.0, 0, &guard));
    EXPECT(0, trio_token_get(&token));

    /* Objects of every kind, made and closed; their handles are stale. */
    EXPECT(0, trio_nursery_open(&closed.h[K_NURSERY]));
    EXPECT(0, trio_nursery_close(closed.h[K_NURSERY]));
    EXPECT(0, trio_cancel_scope_open(1.0, 1, &closed.h[K_SCOPE]));
    EXPECT(0, trio_cancel_scope_close(closed.h[K_SCOPE]));
    open_objects(&closed, "closed");
    close_objects(&closed);
    unlink(closed.path);

    /* Live objects of every kind (their slots reuse the first run's). */
    open_objects(&live, "live");
    EXPECT(0, trio_nursery_open(&live.h[K_NURSERY]));
    EXPECT(0, trio_cancel_scope_open(-1.0, 0, &live.h[K_SCOPE]));

    /* Double close. */
    EXPECT(TRIO_EBADHANDLE, trio_nursery_close(closed.h[K_NURSERY]));
    EXPECT(TRIO_EBADHANDLE, trio_cancel_scope_close(closed.h[K_SCOPE]));
    EXPECT(TRIO_EBADHANDLE, trio_event_close(closed.h[K_EVENT]));
    EXPECT(TRIO_EBADHANDLE, trio_lock_close(closed.h[K_LOCK]));
    EXPECT(TRIO_EBADHANDLE, trio_semaphore_close(closed.h[K_SEM]));
    EXPECT(TRIO_EBADHANDLE, trio_channel_close_sender(closed.h[K_SEND]));
    EXPECT(TRIO_EBADHANDLE, trio_channel_close_receiver(closed.h[K_RECV]));
    EXPECT(TRIO_EBADHANDLE, trio_close(closed.h[K_TCP_STREAM]));
    EXPECT(TRIO_EBADHANDLE, trio_close(closed.srv_tcp));
    EXPECT(TRIO_EBADHANDLE, trio_close(closed.h[K_TCP_LISTENER]));
    EXPECT(TRIO_EBADHANDLE, trio_close(closed.h[K_UNIX_STREAM]));
    EXPECT(TRIO_EBADHANDLE, trio_close(closed.h[K_UNIX_LISTENER]));

    /* Every handle function with zero, made-up, stale, closed, forged and
     * wrong-kind handles. */
    made_up_handles("in a run");
    stale_handles("in a later run", &run1, "from a run that ended");
    stale_handles("in a run", &closed, "closed");
    for (k = 0; k < NKINDS; k++) {
        /* A live handle with another generation: never given out. */
        snprintf(what, sizeof what, "%s with a changed generation", kind_names[k]);
        bad_handle("in a run", live.h[k] ^ ((trio_handle_t)1 << 40), what, k, 1);
        snprintf(what, sizeof what, "%s, live", kind_names[k]);
        bad_handle("in a run, wrong kind", live.h[k], what, k, 0);
    }
    bad_handle("in a run, wrong kind", live.srv_tcp, "an accepted TCP stream, live", K_TCP_STREAM, 0);
    bad_handle("in a run, wrong kind", guard, "an outer cancel scope, live", K_SCOPE, 0);

    null_and_bad_values();
    misuse(guard);
    bad_addresses();

    /* Outside a C task: a callback on the run's thread. */
    EXPECT(0, trio_event_new(&done_event));
    EXPECT(0, trio_token_run_sync_soon(token, callback_checks, NULL));
    EXPECT(0, trio_event_wait(done_event));
    EXPECT(0, trio_event_close(done_event));

    /* On a worker thread. */
    EXPECT(0, trio_to_thread(worker_checks, NULL, 0));

    live_objects_unharmed();

    EXPECT(0, trio_cancel_scope_close(live.h[K_SCOPE]));
    EXPECT(0, trio_nursery_close(live.h[K_NURSERY]));
    close_objects(&live);
    unlink(live.path);
    EXPECT(0, trio_token_free(token));
    token = NULL;
    EXPECT(0, trio_cancel_scope_close(guard));
    return 0;
}

/* ------------------------------------------------------------ the third run */

/* A refused nested trio_run, in a C task and in a callback: it must leave
 * the active run alone (its own run; a failure here does not spoil the
 * checks of the second run). */
static int nested_done = 0;

static void nested_run_callback(void *arg) {
    (void)arg;
    EXPECT(TRIO_ENORUN, trio_run(must_not_run_task, NULL));
    EXPECT(TRIO_ENORUN, trio_run_mock_clock(must_not_run_task, NULL));
    nested_done = 1;
}

static int run3_main(void *arg) {
    trio_handle_t ev = 0, l = 0;
    trio_token *t = NULL;
    uint16_t port = 0;
    int i;
    (void)arg;

    EXPECT(0, trio_event_new(&ev));
    EXPECT(0, trio_tcp_listen("127.0.0.1", 0, &l));
    EXPECT(TRIO_ENORUN, trio_run(must_not_run_task, NULL));
    CHECK(trio_event_is_set(ev) == 0, "after a refused nested trio_run, the run's event handle still works");
    CHECK(trio_listener_port(l, &port) == 0, "after a refused nested trio_run, the run's listener is still open");
    trio_event_close(ev); /* if still open */
    trio_close(l);

    EXPECT(0, trio_event_new(&ev));
    EXPECT(TRIO_ENORUN, trio_run_mock_clock(must_not_run_task, NULL));
    CHECK(trio_event_is_set(ev) == 0, "after a refused nested trio_run_mock_clock, the run's handles still work");
    trio_event_close(ev);

    EXPECT(0, trio_event_new(&ev));
    EXPECT(0, trio_token_get(&t));
    EXPECT(0, trio_token_run_sync_soon(t, nested_run_callback, NULL));
    for (i = 0; i < 500 && !nested_done; i++) trio_sleep(0.001);
    CHECK(nested_done, "the callback ran");
    CHECK(trio_event_is_set(ev) == 0, "after a refused nested trio_run in a callback, the run's handles still work");
    trio_event_close(ev);
    EXPECT(0, trio_token_free(t));
    return 0;
}

int main(void) {
    before_any_run();

    EXPECT(0, trio_run(run1_main, NULL));
    unlink(run1.path);
    after_first_run();

    EXPECT(0, trio_run(run2_main, NULL));
    /* The second run's handles are stale too. */
    bad_handle("after the second run", live.h[K_EVENT], "an event of a run that ended", K_EVENT, 1);
    bad_handle("after the second run", live.h[K_TCP_STREAM], "a TCP stream of a run that ended", K_TCP_STREAM, 1);

    EXPECT(0, trio_run(run3_main, NULL));

    CHECK(stray_calls == 0, "no function given to a refused call ran");
    printf("# %d checks, %d failed\n", n_checks, n_failed);
    return n_failed == 0 ? 0 : 1;
}
