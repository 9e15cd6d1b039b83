/* Abuse that test_bad_input.c does not cover (issue 17):
 *  - handles traded between two live runs on two threads, and handles of a
 *    run that has ended: TRIO_EBADHANDLE, never the other run's object;
 *  - a semaphore released at SIZE_MAX: refused, never wrapped to 0;
 *  - every pointer + length argument given a length above PTRDIFF_MAX, a
 *    NULL buffer with a nonzero length, and a buffer that would run past
 *    the end of the address space: TRIO_EINVAL before a byte is touched,
 *    with a detail naming the function and the argument.
 * Prints "ok N - name" lines (or "not ok N - ..." and goes on); exits 1 if
 * any check failed. Link with -lpthread. */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "libtrio.h"

static int test_no = 0, failed = 0;

static void check(int ok, const char *name, int line) {
    test_no++;
    if (ok) {
        printf("ok %d - %s\n", test_no, name);
    } else {
        char detail[256];
        trio_last_error(detail, sizeof detail);
        printf("not ok %d - %s (line %d; last error: %s)\n", test_no, name, line, detail);
        failed++;
    }
    fflush(stdout);
}

#define CHECK(cond, name) check((cond) != 0, (name), __LINE__)

/* Whether this thread's last error detail contains `needle`. */
static int detail_has(const char *needle) {
    char detail[256];
    trio_last_error(detail, sizeof detail);
    return strstr(detail, needle) != NULL;
}

/* A refusal: the code, and a detail containing both words. */
static int refused(int r, int code, const char *a, const char *b) {
    return r == code && trio_last_error_code() == code && detail_has(a) && detail_has(b);
}

/* ------------------------------------------- two runs trading handles */

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int made = 0, tried = 0, b_done = 0;

/* Waits until *flag reaches want, for at most 10 s (a safety net against a
 * hang on a broken library, never a timing assertion). 0, or -1. */
static int wait_for(const int *flag, int want) {
    struct timespec until;
    int r = 0;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 10;
    pthread_mutex_lock(&mu);
    while (*flag < want && r == 0) r = pthread_cond_timedwait(&cv, &mu, &until);
    r = *flag >= want ? 0 : -1;
    pthread_mutex_unlock(&mu);
    return r;
}

static void bump(int *flag) {
    pthread_mutex_lock(&mu);
    (*flag)++;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
}

/* What each run made and saw; checked by the main thread afterwards (the
 * two runs go on at once, so they print nothing themselves). */
struct side {
    int me;
    trio_handle_t event, lock, sem;
    int made_ok, synced;
    int set_other, is_set_other, lock_other, sem_other, close_other; /* refused? */
    int own_untouched;         /* the other run's attempts did not reach ours */
    int ended_refused;         /* (side 0) B's handles after B's run ended */
    int own_alive_after;       /* (side 0) ours still work after that */
};
static struct side sides[2];

static int side_main(void *arg) {
    struct side *me = arg;
    struct side *other = &sides[1 - me->me];
    me->made_ok = trio_event_new(&me->event) == 0 && trio_lock_new(&me->lock) == 0 &&
                  trio_semaphore_new(1, &me->sem) == 0;
    bump(&made);
    me->synced = wait_for(&made, 2) == 0;
    if (!me->synced) return 0;

    me->set_other = refused(trio_event_set(other->event), TRIO_EBADHANDLE, "belongs to another run", "an event");
    me->is_set_other = refused(trio_event_is_set(other->event), TRIO_EBADHANDLE, "another run", "");
    me->lock_other = refused(trio_lock_try_acquire(other->lock), TRIO_EBADHANDLE, "another run", "a lock");
    me->sem_other = refused(trio_semaphore_try_acquire(other->sem), TRIO_EBADHANDLE, "another run", "");
    me->close_other = refused(trio_event_close(other->event), TRIO_EBADHANDLE, "another run", "");
    bump(&tried);
    me->synced = wait_for(&tried, 2) == 0;
    if (!me->synced) return 0;

    /* Had a call above reached our own objects (same handle values), our
     * event would be set, our lock held, our permit gone, or our event
     * closed. */
    size_t v = 0;
    me->own_untouched = trio_event_is_set(me->event) == 0 && trio_lock_try_acquire(me->lock) == 0 &&
                        trio_lock_release(me->lock) == 0 && trio_semaphore_value(me->sem, &v) == 0 && v == 1;

    if (me->me == 0) {
        /* B's run ends (leaving its handles open: the end closes them). */
        me->synced = wait_for(&b_done, 1) == 0;
        if (!me->synced) return 0;
        me->ended_refused =
            refused(trio_event_set(other->event), TRIO_EBADHANDLE, "belongs to a run that has ended", "") &&
            refused(trio_lock_close(other->lock), TRIO_EBADHANDLE, "has ended", "a lock");
        me->own_alive_after = trio_event_set(me->event) == 0 && trio_event_is_set(me->event) == 1 &&
                              trio_event_close(me->event) == 0 && trio_lock_close(me->lock) == 0 &&
                              trio_semaphore_close(me->sem) == 0;
    }
    return 0;
}

static void *side_thread(void *arg) {
    struct side *s = arg;
    intptr_t r = trio_run(side_main, s);
    if (s->me == 1) bump(&b_done);
    return (void *)r;
}

static trio_handle_t earlier_event;
static int later_refused;

static int make_event(void *arg) {
    (void)arg;
    return trio_event_new(&earlier_event);
}

static int use_earlier_event(void *arg) {
    (void)arg;
    later_refused = refused(trio_event_set(earlier_event), TRIO_EBADHANDLE, "has ended", "an event");
    return 0;
}

static void test_runs_trading_handles(void) {
    pthread_t t[2];
    void *rv[2];
    int i;
    for (i = 0; i < 2; i++) {
        sides[i].me = i;
        pthread_create(&t[i], NULL, side_thread, &sides[i]);
    }
    for (i = 0; i < 2; i++) pthread_join(t[i], &rv[i]);
    CHECK(rv[0] == NULL && rv[1] == NULL, "two runs on two threads at once both succeed");
    CHECK(sides[0].made_ok && sides[1].made_ok && sides[0].synced && sides[1].synced,
          "each run makes an event, a lock and a semaphore");
    printf("# first event handles: %#llx and %#llx\n", (unsigned long long)sides[0].event,
           (unsigned long long)sides[1].event);
    CHECK(sides[0].event != sides[1].event, "the two runs' first handles differ");
    for (i = 0; i < 2; i++) {
        CHECK(sides[i].set_other, "trio_event_set with the other run's event: TRIO_EBADHANDLE, another run");
        CHECK(sides[i].is_set_other, "trio_event_is_set with the other run's event: TRIO_EBADHANDLE");
        CHECK(sides[i].lock_other, "trio_lock_try_acquire with the other run's lock: TRIO_EBADHANDLE");
        CHECK(sides[i].sem_other, "trio_semaphore_try_acquire with the other run's semaphore: TRIO_EBADHANDLE");
        CHECK(sides[i].close_other, "trio_event_close with the other run's event: TRIO_EBADHANDLE");
        CHECK(sides[i].own_untouched, "the other run's attempts left this run's objects alone");
    }
    CHECK(sides[0].ended_refused, "handles of a run that has ended: TRIO_EBADHANDLE, the run has ended");
    CHECK(sides[0].own_alive_after, "a run's own handles still work after the other run ended");

    /* Outside any run, and in a later run on the same thread. */
    CHECK(trio_run(make_event, NULL) == 0, "a run makes an event");
    CHECK(refused(trio_event_set(earlier_event), TRIO_EBADHANDLE, "has ended", "an event"),
          "its handle outside any run: TRIO_EBADHANDLE, the run has ended");
    CHECK(trio_run(use_earlier_event, NULL) == 0 && later_refused,
          "its handle in a later run on the same thread: TRIO_EBADHANDLE, the run has ended");
}

/* ------------------------------------------------ semaphore at SIZE_MAX */

static int semaphore_main(void *arg) {
    (void)arg;
    trio_handle_t s = 0;
    size_t v = 0;
    CHECK(trio_semaphore_new(SIZE_MAX, &s) == 0, "a semaphore holding SIZE_MAX permits");
    CHECK(refused(trio_semaphore_release(s), TRIO_EINVAL, "sem", "SIZE_MAX"),
          "releasing it again: TRIO_EINVAL naming sem, no wrap around");
    CHECK(trio_semaphore_value(s, &v) == 0 && v == SIZE_MAX, "its value is still SIZE_MAX");
    CHECK(trio_semaphore_try_acquire(s) == 0 && trio_semaphore_value(s, &v) == 0 && v == SIZE_MAX - 1,
          "a permit can still be taken");
    CHECK(trio_semaphore_release(s) == 0 && trio_semaphore_value(s, &v) == 0 && v == SIZE_MAX,
          "and given back up to SIZE_MAX");
    CHECK(trio_semaphore_release(s) == TRIO_EINVAL && trio_semaphore_value(s, &v) == 0 && v == SIZE_MAX,
          "but not past it");
    CHECK(trio_semaphore_close(s) == 0, "the semaphore closes");
    return 0;
}

/* ------------------------------------------ pointer + length arguments */

#define HUGE1 SIZE_MAX
#define HUGE2 ((size_t)PTRDIFF_MAX + 1)
/* A buffer whose end would be past the end of the address space (never
 * dereferenced: it must be refused first). */
#define WRAPPING ((void *)(uintptr_t)(UINTPTR_MAX - 15))

static int lengths_main(void *arg) {
    (void)arg;
    trio_handle_t l = 0, c = 0, s = 0;
    uint16_t port = 0;
    char buf[16] = "hello", rbuf[16];
    char abuf[64];
    int r;

    CHECK(trio_tcp_listen("127.0.0.1", 0, &l) == 0 && trio_listener_port(l, &port) == 0 &&
              trio_tcp_connect("127.0.0.1", port, &c) == 0 && trio_accept(l, &s) == 0,
          "a TCP connection over loopback");

    CHECK(refused(trio_send_all(c, buf, HUGE1), TRIO_EINVAL, "trio_send_all: len is", "PTRDIFF_MAX"),
          "trio_send_all(len = SIZE_MAX): TRIO_EINVAL naming len");
    CHECK(refused(trio_send_all(c, buf, HUGE2), TRIO_EINVAL, "trio_send_all: len is", "PTRDIFF_MAX"),
          "trio_send_all(len = PTRDIFF_MAX + 1): TRIO_EINVAL naming len");
    CHECK(refused(trio_send_all(c, NULL, 5), TRIO_EINVAL, "trio_send_all: buf is NULL", "len is 5"),
          "trio_send_all(NULL, 5): TRIO_EINVAL naming buf");
    CHECK(refused(trio_send_all(c, WRAPPING, 64), TRIO_EINVAL, "trio_send_all: buf", "address space"),
          "trio_send_all with buf + len past the address space: TRIO_EINVAL");
    CHECK(trio_send_all(c, NULL, 0) == 0, "trio_send_all(NULL, 0) is fine");

    CHECK(trio_send_all(c, "xy", 2) == 0 && trio_send_eof(c) == 0, "then a real send and EOF");
    CHECK(refused(trio_receive_some(s, rbuf, HUGE1), TRIO_EINVAL, "trio_receive_some: len is", "PTRDIFF_MAX"),
          "trio_receive_some(len = SIZE_MAX): TRIO_EINVAL naming len");
    CHECK(refused(trio_receive_some(s, rbuf, HUGE2), TRIO_EINVAL, "trio_receive_some: len is", "PTRDIFF_MAX"),
          "trio_receive_some(len = PTRDIFF_MAX + 1): TRIO_EINVAL naming len");
    CHECK(refused(trio_receive_some(s, NULL, 5), TRIO_EINVAL, "trio_receive_some: buf is NULL", ""),
          "trio_receive_some(NULL, 5): TRIO_EINVAL naming buf");
    CHECK(refused(trio_receive_some(s, WRAPPING, 64), TRIO_EINVAL, "trio_receive_some: buf", "address space"),
          "trio_receive_some with buf + len past the address space: TRIO_EINVAL");
    r = trio_receive_some(s, rbuf, sizeof rbuf);
    CHECK(r == 2 && memcmp(rbuf, "xy", 2) == 0,
          "the peer got exactly the real bytes: the refused calls sent and took nothing");
    CHECK(trio_receive_some(s, rbuf, sizeof rbuf) == 0, "then the end of the stream");

    CHECK(refused(trio_local_address(c, abuf, HUGE1), TRIO_EINVAL, "trio_local_address: len is", "PTRDIFF_MAX"),
          "trio_local_address(len = SIZE_MAX): TRIO_EINVAL naming len");
    CHECK(refused(trio_local_address(c, NULL, 3), TRIO_EINVAL, "trio_local_address: buf is NULL", ""),
          "trio_local_address(NULL, 3): TRIO_EINVAL naming buf");
    CHECK(refused(trio_peer_address(c, abuf, HUGE2), TRIO_EINVAL, "trio_peer_address: len is", "PTRDIFF_MAX"),
          "trio_peer_address(len = PTRDIFF_MAX + 1): TRIO_EINVAL naming len");
    CHECK(refused(trio_peer_address(c, WRAPPING, 64), TRIO_EINVAL, "trio_peer_address: buf", "address space"),
          "trio_peer_address with buf + len past the address space: TRIO_EINVAL");
    CHECK(trio_local_address(c, NULL, 0) > 0 && trio_peer_address(c, abuf, sizeof abuf) > 0,
          "the addresses are still there with real buffers");

    CHECK(trio_close(c) == 0 && trio_close(s) == 0 && trio_close(l) == 0, "the sockets close");
    return 0;
}

static void test_last_error_lengths(const char *where) {
    char ebuf[128], name[160];
    int r = trio_last_error(ebuf, HUGE1);
    snprintf(name, sizeof name, "trio_last_error(len = SIZE_MAX) %s: TRIO_EINVAL naming len", where);
    CHECK(r == TRIO_EINVAL && refused(TRIO_EINVAL, TRIO_EINVAL, "trio_last_error: len is", "PTRDIFF_MAX"), name);
    r = trio_last_error(ebuf, HUGE2);
    snprintf(name, sizeof name, "trio_last_error(len = PTRDIFF_MAX + 1) %s: TRIO_EINVAL", where);
    CHECK(r == TRIO_EINVAL, name);
    r = trio_last_error(NULL, 7);
    snprintf(name, sizeof name, "trio_last_error(NULL, 7) %s: TRIO_EINVAL naming buf", where);
    CHECK(r == TRIO_EINVAL && detail_has("trio_last_error: buf is NULL but len is 7"), name);
    r = trio_last_error(WRAPPING, 64);
    snprintf(name, sizeof name, "trio_last_error with buf + len past the address space %s: TRIO_EINVAL", where);
    CHECK(r == TRIO_EINVAL && detail_has("address space"), name);
    snprintf(name, sizeof name, "trio_last_error(NULL, 0) %s gives the length", where);
    CHECK(trio_last_error(NULL, 0) > 0, name);
}

static int last_error_main(void *arg) {
    (void)arg;
    test_last_error_lengths("in a task");
    return 0;
}

int main(void) {
    test_runs_trading_handles();
    CHECK(trio_run(semaphore_main, NULL) == 0, "the semaphore run");
    CHECK(trio_run(lengths_main, NULL) == 0, "the lengths run");
    test_last_error_lengths("outside a run");
    CHECK(trio_run(last_error_main, NULL) == 0, "the trio_last_error run");
    printf("# %d checks, %d failed\n", test_no, failed);
    return failed ? 1 : 0;
}
