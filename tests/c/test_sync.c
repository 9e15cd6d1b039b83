/* Events, channels, locks and semaphores through libtrio.h, on the mock
 * clock. Prints TAP-like "ok N - name" lines; exits 1 at the first failure. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "libtrio.h"

#include "check.h"

static double now(void) {
    double t = -1;
    if (trio_now(&t) != 0) return -1;
    return t;
}

/* ------------------------------------------------------------- events */

struct waiter {
    trio_handle_t h;
    int result;
    double woke_at;
};

static int event_waiter(void *arg) {
    struct waiter *w = (struct waiter *)arg;
    w->result = trio_event_wait(w->h);
    w->woke_at = now();
    return 0;
}

static int events(void) {
    trio_handle_t ev = 0, n = 0;
    struct waiter w[3];
    int i;
    CHECK(trio_event_new(&ev) == 0 && ev != 0, "event_new gives a handle");
    CHECK(trio_event_is_set(ev) == 0, "a new event is not set");
    CHECK(trio_nursery_open(&n) == 0, "open a nursery");
    for (i = 0; i < 3; i++) {
        w[i].h = ev;
        w[i].result = 99;
        w[i].woke_at = -1;
        CHECK(trio_nursery_spawn(n, event_waiter, &w[i]) == 0, "spawn a waiter");
    }
    CHECK(trio_sleep(1.0) == 0, "sleep while they wait");
    CHECK(w[0].result == 99 && w[1].result == 99 && w[2].result == 99,
          "no waiter woke before the event was set");
    CHECK(trio_event_set(ev) == 0, "event_set");
    CHECK(trio_event_set(ev) == 0, "event_set again is harmless");
    CHECK(trio_nursery_close(n) == 0, "the waiters finish");
    for (i = 0; i < 3; i++)
        CHECK(w[i].result == 0 && w[i].woke_at >= 1.0, "a waiter woke after the set");
    CHECK(trio_event_is_set(ev) == 1, "the event stays set");
    CHECK(trio_event_wait(ev) == 0, "waiting on a set event returns at once");
    CHECK(trio_event_close(ev) == 0, "event_close");
    CHECK(trio_event_close(ev) == TRIO_EBADHANDLE, "double close is a stale handle");
    CHECK(trio_event_is_set(ev) == TRIO_EBADHANDLE, "is_set on a closed event");
    return 0;
}

/* ------------------------------------------------------------ channels */

#define N_PRODUCERS 3
#define N_CONSUMERS 2
#define PER_PRODUCER 20

static int values[N_PRODUCERS * PER_PRODUCER];
static int seen[N_PRODUCERS * PER_PRODUCER];

struct producer {
    trio_handle_t tx;
    int first;
    int result;
};

static int producer_task(void *arg) {
    struct producer *p = (struct producer *)arg;
    int i, rc;
    for (i = 0; i < PER_PRODUCER; i++) {
        rc = trio_channel_send(p->tx, &values[p->first + i]);
        if (rc != 0) {
            p->result = rc;
            trio_channel_close_sender(p->tx);
            return rc;
        }
        if (i % 5 == 0) trio_sleep(0.01);
    }
    p->result = trio_channel_close_sender(p->tx);
    return p->result;
}

struct consumer {
    trio_handle_t rx;
    int count;
    int result; /* the code that ended the loop */
};

static int consumer_task(void *arg) {
    struct consumer *c = (struct consumer *)arg;
    void *v = NULL;
    int rc;
    while ((rc = trio_channel_receive(c->rx, &v)) == 0) {
        int *p = (int *)v;
        seen[p - values]++;
        c->count++;
    }
    c->result = rc;
    return 0;
}

static int producer_consumer(void) {
    trio_handle_t tx = 0, rx = 0, n = 0, rx2 = 0;
    struct producer p[N_PRODUCERS];
    struct consumer c[N_CONSUMERS];
    int i;
    for (i = 0; i < N_PRODUCERS * PER_PRODUCER; i++) {
        values[i] = i;
        seen[i] = 0;
    }
    CHECK(trio_channel_open(2, &tx, &rx) == 0 && tx != 0 && rx != 0, "channel_open(2)");
    CHECK(trio_nursery_open(&n) == 0, "open a nursery");
    for (i = 0; i < N_PRODUCERS; i++) {
        p[i].first = i * PER_PRODUCER;
        p[i].result = 99;
        CHECK(trio_channel_clone_sender(tx, &p[i].tx) == 0, "clone a sender per producer");
        CHECK(trio_nursery_spawn(n, producer_task, &p[i]) == 0, "spawn a producer");
    }
    CHECK(trio_channel_close_sender(tx) == 0, "close the original sender");
    CHECK(trio_channel_clone_receiver(rx, &rx2) == 0, "clone the receiver");
    c[0].rx = rx;
    c[1].rx = rx2;
    for (i = 0; i < N_CONSUMERS; i++) {
        c[i].count = 0;
        c[i].result = 99;
        CHECK(trio_nursery_spawn(n, consumer_task, &c[i]) == 0, "spawn a consumer");
    }
    CHECK(trio_nursery_close(n) == 0, "everyone finishes");
    for (i = 0; i < N_PRODUCERS; i++) CHECK(p[i].result == 0, "a producer sent everything");
    for (i = 0; i < N_CONSUMERS; i++)
        CHECK(c[i].result == TRIO_EENDOFCHANNEL, "a consumer saw the end of the channel");
    CHECK(c[0].count + c[1].count == N_PRODUCERS * PER_PRODUCER, "every value was received");
    CHECK(c[0].count > 0 && c[1].count > 0, "both consumers got values");
    for (i = 0; i < N_PRODUCERS * PER_PRODUCER; i++)
        if (seen[i] != 1) break;
    CHECK(i == N_PRODUCERS * PER_PRODUCER, "each value was received exactly once");
    CHECK(trio_channel_close_receiver(rx) == 0, "close a receiver");
    CHECK(trio_channel_close_receiver(rx2) == 0, "close the other receiver");
    CHECK(trio_channel_close_receiver(rx2) == TRIO_EBADHANDLE, "double close is a stale handle");
    return 0;
}

struct sender_arg {
    trio_handle_t tx;
    void *value;
    int result;
    double done_at;
};

static int send_one(void *arg) {
    struct sender_arg *s = (struct sender_arg *)arg;
    s->result = trio_channel_send(s->tx, s->value);
    s->done_at = now();
    return 0;
}

static int receive_one(void *arg) {
    struct consumer *c = (struct consumer *)arg;
    void *v = NULL;
    c->result = trio_channel_receive(c->rx, &v);
    return 0;
}

static int channel_semantics(void) {
    trio_handle_t tx = 0, rx = 0, n = 0;
    struct sender_arg s;
    struct consumer c;
    int x = 5;
    void *v = NULL;

    /* Capacity 0: a send waits for a receiver. */
    CHECK(trio_channel_open(0, &tx, &rx) == 0, "channel_open(0)");
    CHECK(trio_nursery_open(&n) == 0, "open");
    s.tx = tx;
    s.value = &x;
    s.result = 99;
    s.done_at = -1;
    CHECK(trio_nursery_spawn(n, send_one, &s) == 0, "spawn a sender");
    CHECK(trio_sleep(2.0) == 0, "sleep");
    CHECK(s.result == 99, "a rendezvous send waits for a receiver");
    CHECK(trio_channel_receive(rx, &v) == 0 && v == &x, "receive takes the value");
    CHECK(trio_nursery_close(n) == 0, "close");
    CHECK(s.result == 0 && s.done_at >= 2.0, "the send completed after the receive");

    /* NULL is a value like any other. */
    CHECK(trio_nursery_open(&n) == 0, "open");
    s.value = NULL;
    CHECK(trio_nursery_spawn(n, send_one, &s) == 0, "spawn a sender of NULL");
    v = &x;
    CHECK(trio_channel_receive(rx, &v) == 0 && v == NULL, "NULL goes through");
    CHECK(trio_nursery_close(n) == 0, "close");

    /* End of channel once every sender is closed and it is empty. */
    CHECK(trio_channel_close_sender(tx) == 0, "close the only sender");
    v = &x;
    CHECK(trio_channel_receive(rx, &v) == TRIO_EENDOFCHANNEL && v == &x,
          "receive reports the end, *out untouched");
    CHECK(trio_channel_close_receiver(rx) == 0, "close the receiver");

    /* The non-blocking variants. */
    CHECK(trio_channel_open(1, &tx, &rx) == 0, "channel_open(1)");
    CHECK(trio_channel_try_receive(rx, &v) == TRIO_EWOULDBLOCK, "try_receive on an empty channel");
    CHECK(trio_channel_try_send(tx, &x) == 0, "try_send into the buffer");
    CHECK(trio_channel_try_send(tx, &s) == TRIO_EWOULDBLOCK, "try_send on a full buffer");
    v = NULL;
    CHECK(trio_channel_try_receive(rx, &v) == 0 && v == &x, "try_receive takes it");
    CHECK(trio_channel_try_receive(rx, NULL) == TRIO_EINVAL, "try_receive(NULL out)");
    CHECK(trio_channel_try_receive(tx, &v) == TRIO_EBADHANDLE, "try_receive on a sender");
    CHECK(trio_channel_try_send(rx, &x) == TRIO_EBADHANDLE, "try_send on a receiver");
    CHECK(trio_channel_try_send(0, &x) == TRIO_EBADHANDLE, "try_send(0)");
    CHECK(trio_channel_close_sender(tx) == 0, "close the sender");
    CHECK(trio_channel_try_receive(rx, &v) == TRIO_EENDOFCHANNEL, "try_receive sees the end");
    CHECK(trio_channel_try_send(tx, &x) == TRIO_EBADHANDLE, "try_send(stale)");
    CHECK(trio_channel_close_receiver(rx) == 0, "close the receiver");
    CHECK(trio_channel_try_receive(rx, &v) == TRIO_EBADHANDLE, "try_receive(stale)");
    CHECK(trio_channel_open(1, &tx, &rx) == 0 && trio_channel_close_receiver(rx) == 0,
          "a channel without receivers");
    CHECK(trio_channel_try_send(tx, &x) == TRIO_EBROKEN, "try_send gets BROKEN");
    CHECK(trio_channel_close_sender(tx) == 0, "close");

    /* SIZE_MAX: no limit, sends never wait. */
    CHECK(trio_channel_open((size_t)-1, &tx, &rx) == 0, "channel_open(SIZE_MAX)");
    {
        int i, ok = 1;
        for (i = 0; i < 1000 && ok; i++) ok = trio_channel_try_send(tx, &values[i % 60]) == 0;
        CHECK(ok, "1000 sends without waiting");
        for (i = 0; i < 1000 && ok; i++)
            ok = trio_channel_try_receive(rx, &v) == 0 && v == &values[i % 60];
        CHECK(ok, "1000 values back in order");
    }
    CHECK(trio_channel_close_sender(tx) == 0 && trio_channel_close_receiver(rx) == 0, "close");

    /* Buffered values are delivered before the end. */
    CHECK(trio_channel_open(4, &tx, &rx) == 0, "channel_open(4)");
    CHECK(trio_channel_send(tx, &x) == 0 && trio_channel_send(tx, &x) == 0, "two buffered sends");
    CHECK(trio_channel_close_sender(tx) == 0, "close the sender");
    CHECK(trio_channel_receive(rx, &v) == 0 && trio_channel_receive(rx, &v) == 0,
          "both buffered values arrive");
    CHECK(trio_channel_receive(rx, &v) == TRIO_EENDOFCHANNEL, "then the end");

    /* A blocked receiver is woken by the end of the channel. */
    CHECK(trio_channel_close_receiver(rx) == 0, "close");
    CHECK(trio_channel_open(1, &tx, &rx) == 0, "channel_open(1)");
    CHECK(trio_nursery_open(&n) == 0, "open");
    c.rx = rx;
    c.result = 99;
    CHECK(trio_nursery_spawn(n, receive_one, &c) == 0, "spawn a receiver");
    CHECK(trio_sleep(1.0) == 0 && c.result == 99, "it blocks");
    CHECK(trio_channel_close_sender(tx) == 0, "close the last sender");
    CHECK(trio_nursery_close(n) == 0, "close");
    CHECK(c.result == TRIO_EENDOFCHANNEL, "the blocked receiver got the end of the channel");
    CHECK(trio_channel_close_receiver(rx) == 0, "close");

    /* Closed receivers: senders get BROKEN (also a blocked one). */
    CHECK(trio_channel_open(1, &tx, &rx) == 0, "channel_open(1)");
    CHECK(trio_channel_send(tx, &x) == 0, "fill the buffer");
    CHECK(trio_nursery_open(&n) == 0, "open");
    s.tx = tx;
    s.value = &x;
    s.result = 99;
    CHECK(trio_nursery_spawn(n, send_one, &s) == 0, "spawn a sender");
    CHECK(trio_sleep(1.0) == 0 && s.result == 99, "it blocks on the full buffer");
    CHECK(trio_channel_close_receiver(rx) == 0, "close the only receiver");
    CHECK(trio_nursery_close(n) == 0, "close");
    CHECK(s.result == TRIO_EBROKEN, "the blocked sender got BROKEN");
    CHECK(trio_channel_send(tx, &x) == TRIO_EBROKEN, "a new send gets BROKEN");
    CHECK(trio_channel_close_sender(tx) == 0, "close");

    /* Closing the very handle a task is blocked on. */
    CHECK(trio_channel_open(0, &tx, &rx) == 0, "channel_open(0)");
    CHECK(trio_nursery_open(&n) == 0, "open");
    s.tx = tx;
    s.result = 99;
    CHECK(trio_nursery_spawn(n, send_one, &s) == 0, "spawn a sender");
    CHECK(trio_sleep(1.0) == 0 && s.result == 99, "it blocks");
    CHECK(trio_channel_close_sender(tx) == 0, "close its sender handle");
    CHECK(trio_nursery_close(n) == 0, "close");
    CHECK(s.result == TRIO_ECLOSED, "the blocked send got CLOSED");
    CHECK(trio_channel_close_receiver(rx) == 0, "close");

    CHECK(trio_channel_open(0, &tx, &rx) == 0, "channel_open(0)");
    CHECK(trio_nursery_open(&n) == 0, "open");
    c.rx = rx;
    c.result = 99;
    CHECK(trio_nursery_spawn(n, receive_one, &c) == 0, "spawn a receiver");
    CHECK(trio_sleep(1.0) == 0 && c.result == 99, "it blocks");
    CHECK(trio_channel_close_receiver(rx) == 0, "close its receiver handle");
    CHECK(trio_nursery_close(n) == 0, "close");
    CHECK(c.result == TRIO_ECLOSED, "the blocked receive got CLOSED");
    CHECK(trio_channel_send(tx, &x) == TRIO_EBROKEN, "and senders see BROKEN");
    CHECK(trio_channel_close_sender(tx) == 0, "close");
    return 0;
}

/* --------------------------------------------------------------- locks */

static int in_critical = 0;
static int max_in_critical = 0;

struct locker {
    trio_handle_t h;
    int result;
};

static int lock_user(void *arg) {
    struct locker *l = (struct locker *)arg;
    int rc = trio_lock_acquire(l->h);
    if (rc != 0) {
        l->result = rc;
        return 0;
    }
    in_critical++;
    if (in_critical > max_in_critical) max_in_critical = in_critical;
    rc = trio_sleep(0.1);
    in_critical--;
    if (rc == 0) rc = trio_lock_release(l->h);
    l->result = rc;
    return 0;
}

static int lock_acquire_only(void *arg) {
    struct locker *l = (struct locker *)arg;
    l->result = trio_lock_acquire(l->h);
    if (l->result == 0) l->result = trio_lock_release(l->h);
    return 0;
}

static int lock_release_foreign(void *arg) {
    struct locker *l = (struct locker *)arg;
    l->result = trio_lock_release(l->h);
    return 0;
}

static int locks(void) {
    trio_handle_t lk = 0, n = 0;
    struct locker l[4];
    double t0;
    int i;
    CHECK(trio_lock_new(&lk) == 0 && lk != 0, "lock_new");
    CHECK(trio_lock_release(lk) == TRIO_EMISUSE, "release of an unheld lock is an error");
    CHECK(trio_lock_try_acquire(lk) == 0, "try_acquire a free lock");
    CHECK(trio_lock_try_acquire(lk) == TRIO_EMISUSE, "try_acquire again by the holder is misuse");
    CHECK(trio_lock_acquire(lk) == TRIO_EMISUSE, "acquire again by the holder is misuse");
    CHECK(trio_nursery_open(&n) == 0, "open");
    l[0].h = lk;
    l[0].result = 99;
    CHECK(trio_nursery_spawn(n, lock_release_foreign, &l[0]) == 0, "spawn a foreign releaser");
    CHECK(trio_nursery_close(n) == 0, "close");
    CHECK(l[0].result == TRIO_EMISUSE, "release by another task is an error");
    CHECK(trio_lock_release(lk) == 0, "release by the holder");

    in_critical = max_in_critical = 0;
    t0 = now();
    CHECK(trio_nursery_open(&n) == 0, "open");
    for (i = 0; i < 4; i++) {
        l[i].h = lk;
        l[i].result = 99;
        CHECK(trio_nursery_spawn(n, lock_user, &l[i]) == 0, "spawn a lock user");
    }
    CHECK(trio_sleep(0.05) == 0, "let one take it");
    CHECK(trio_lock_try_acquire(lk) == TRIO_EWOULDBLOCK, "try_acquire of a held lock would block");
    CHECK(trio_nursery_close(n) == 0, "close");
    for (i = 0; i < 4; i++) CHECK(l[i].result == 0, "a user acquired and released");
    CHECK(max_in_critical == 1, "never two holders across the sleeps");
    CHECK(now() - t0 >= 0.4 - 1e-9, "the critical sections ran one after the other");

    /* Closing a lock a task waits for. */
    CHECK(trio_lock_acquire(lk) == 0, "acquire");
    CHECK(trio_nursery_open(&n) == 0, "open");
    l[0].result = 99;
    CHECK(trio_nursery_spawn(n, lock_acquire_only, &l[0]) == 0, "spawn a waiter");
    CHECK(trio_sleep(1.0) == 0 && l[0].result == 99, "it waits");
    CHECK(trio_lock_close(lk) == 0, "close the held lock's handle");
    CHECK(trio_nursery_close(n) == 0, "close");
    CHECK(l[0].result == TRIO_ECLOSED, "the waiter got CLOSED");
    CHECK(trio_lock_release(lk) == TRIO_EBADHANDLE, "the handle is stale");
    return 0;
}

/* ---------------------------------------------------------- semaphores */

static int sem_user(void *arg) {
    struct locker *l = (struct locker *)arg;
    int rc = trio_semaphore_acquire(l->h);
    if (rc != 0) {
        l->result = rc;
        return 0;
    }
    in_critical++;
    if (in_critical > max_in_critical) max_in_critical = in_critical;
    rc = trio_sleep(0.1);
    in_critical--;
    if (rc == 0) rc = trio_semaphore_release(l->h);
    l->result = rc;
    return 0;
}

static int sem_acquire_only(void *arg) {
    struct locker *l = (struct locker *)arg;
    l->result = trio_semaphore_acquire(l->h);
    return 0;
}

static int semaphores(void) {
    trio_handle_t sem = 0, n = 0;
    struct locker l[5];
    size_t v = 99;
    double t0;
    int i;
    CHECK(trio_semaphore_new(2, &sem) == 0 && sem != 0, "semaphore_new(2)");
    CHECK(trio_semaphore_value(sem, &v) == 0 && v == 2, "value is 2");
    CHECK(trio_semaphore_try_acquire(sem) == 0, "try_acquire");
    CHECK(trio_semaphore_acquire(sem) == 0, "acquire");
    CHECK(trio_semaphore_value(sem, &v) == 0 && v == 0, "value is 0");
    CHECK(trio_semaphore_try_acquire(sem) == TRIO_EWOULDBLOCK, "try_acquire at 0 would block");
    CHECK(trio_semaphore_release(sem) == 0 && trio_semaphore_release(sem) == 0, "release both");
    CHECK(trio_semaphore_value(sem, &v) == 0 && v == 2, "value is 2 again");

    in_critical = max_in_critical = 0;
    t0 = now();
    CHECK(trio_nursery_open(&n) == 0, "open");
    for (i = 0; i < 5; i++) {
        l[i].h = sem;
        l[i].result = 99;
        CHECK(trio_nursery_spawn(n, sem_user, &l[i]) == 0, "spawn a semaphore user");
    }
    CHECK(trio_nursery_close(n) == 0, "close");
    for (i = 0; i < 5; i++) CHECK(l[i].result == 0, "a user acquired and released");
    CHECK(max_in_critical == 2, "at most two at a time, and two did overlap");
    CHECK(now() - t0 >= 0.3 - 1e-9, "five users in three rounds");

    /* Closing a semaphore a task waits on. */
    CHECK(trio_semaphore_acquire(sem) == 0 && trio_semaphore_acquire(sem) == 0, "drain it");
    CHECK(trio_nursery_open(&n) == 0, "open");
    l[0].result = 99;
    CHECK(trio_nursery_spawn(n, sem_acquire_only, &l[0]) == 0, "spawn a waiter");
    CHECK(trio_sleep(1.0) == 0 && l[0].result == 99, "it waits");
    CHECK(trio_semaphore_close(sem) == 0, "close the semaphore");
    CHECK(trio_nursery_close(n) == 0, "close");
    CHECK(l[0].result == TRIO_ECLOSED, "the waiter got CLOSED");
    CHECK(trio_semaphore_value(sem, &v) == TRIO_EBADHANDLE, "the handle is stale");
    return 0;
}

/* ----------------------------------------------- close while waiting */

static int closing_a_waited_event(void) {
    trio_handle_t ev = 0, n = 0;
    struct waiter w;
    CHECK(trio_event_new(&ev) == 0, "event_new");
    CHECK(trio_nursery_open(&n) == 0, "open");
    w.h = ev;
    w.result = 99;
    CHECK(trio_nursery_spawn(n, event_waiter, &w) == 0, "spawn a waiter");
    CHECK(trio_sleep(1.0) == 0 && w.result == 99, "it waits");
    CHECK(trio_event_close(ev) == 0, "close the event");
    CHECK(trio_nursery_close(n) == 0, "close");
    CHECK(w.result == TRIO_ECLOSED, "the waiter got CLOSED");
    return 0;
}

/* -------------------------------------------------------- cancellation */

static int cancellation(void) {
    trio_handle_t ev = 0, tx = 0, rx = 0, lk = 0, sem = 0, sc = 0, n = 0;
    struct locker holder;
    void *v = &ev;
    int x = 1;
    double t0;

    CHECK(trio_event_new(&ev) == 0, "event_new");
    t0 = now();
    CHECK(trio_cancel_scope_open(0.5, 0, &sc) == 0, "scope with a 0.5 s timeout");
    CHECK(trio_event_wait(ev) == TRIO_ECANCELED, "event_wait is cancelled");
    CHECK(trio_cancel_scope_close(sc) == 1, "the scope caught it");
    CHECK(now() - t0 >= 0.5 - 1e-9, "at the deadline");
    CHECK(trio_event_is_set(ev) == 0, "the event is unaffected");
    CHECK(trio_event_close(ev) == 0, "event_close");

    CHECK(trio_channel_open(1, &tx, &rx) == 0, "channel_open(1)");
    CHECK(trio_cancel_scope_open(0.5, 0, &sc) == 0, "scope");
    CHECK(trio_channel_receive(rx, &v) == TRIO_ECANCELED && v == &ev, "receive is cancelled");
    CHECK(trio_cancel_scope_close(sc) == 1, "the scope caught it");
    CHECK(trio_channel_send(tx, &x) == 0, "fill the buffer");
    CHECK(trio_cancel_scope_open(0.5, 0, &sc) == 0, "scope");
    CHECK(trio_channel_send(tx, &ev) == TRIO_ECANCELED, "send on a full channel is cancelled");
    CHECK(trio_cancel_scope_close(sc) == 1, "the scope caught it");
    CHECK(trio_channel_receive(rx, &v) == 0 && v == &x, "only the first value is there");
    CHECK(trio_channel_close_sender(tx) == 0, "close");
    CHECK(trio_channel_receive(rx, &v) == TRIO_EENDOFCHANNEL, "the cancelled send sent nothing");
    CHECK(trio_channel_close_receiver(rx) == 0, "close");

    CHECK(trio_lock_new(&lk) == 0, "lock_new");
    CHECK(trio_nursery_open(&n) == 0, "open");
    holder.h = lk;
    holder.result = 99;
    in_critical = max_in_critical = 0;
    CHECK(trio_nursery_spawn(n, lock_user, &holder) == 0, "spawn a holder (0.1 s)");
    CHECK(trio_sleep(0.01) == 0, "let it take the lock");
    CHECK(trio_cancel_scope_open(0.05, 0, &sc) == 0, "scope");
    CHECK(trio_lock_acquire(lk) == TRIO_ECANCELED, "lock_acquire is cancelled");
    CHECK(trio_cancel_scope_close(sc) == 1, "the scope caught it");
    CHECK(trio_nursery_close(n) == 0 && holder.result == 0, "the holder finishes");
    CHECK(trio_lock_try_acquire(lk) == 0, "the lock is free: the cancelled acquire took nothing");
    CHECK(trio_lock_release(lk) == 0, "release");
    CHECK(trio_lock_close(lk) == 0, "lock_close");

    CHECK(trio_semaphore_new(0, &sem) == 0, "semaphore_new(0)");
    CHECK(trio_cancel_scope_open(0.5, 0, &sc) == 0, "scope");
    CHECK(trio_semaphore_acquire(sem) == TRIO_ECANCELED, "semaphore_acquire is cancelled");
    CHECK(trio_cancel_scope_close(sc) == 1, "the scope caught it");
    CHECK(trio_semaphore_close(sem) == 0, "semaphore_close");
    return 0;
}

/* ----------------------------------------------------------- bad input */

static trio_handle_t leftover_event = 0, leftover_lock = 0, leftover_sem = 0;
static trio_handle_t leftover_tx = 0, leftover_rx = 0;

static int bad_input(void) {
    trio_handle_t ev = 0, lk = 0, sem = 0, tx = 0, rx = 0, h = 0, stale_ev = 0;
    trio_handle_t stale_lk = 0, stale_sem = 0, stale_tx = 0, stale_rx = 0;
    void *v = NULL;
    size_t sz = 0;

    /* NULL out-pointers. */
    CHECK(trio_event_new(NULL) == TRIO_EINVAL, "event_new(NULL)");
    CHECK(trio_lock_new(NULL) == TRIO_EINVAL, "lock_new(NULL)");
    CHECK(trio_semaphore_new(1, NULL) == TRIO_EINVAL, "semaphore_new(1, NULL)");
    CHECK(trio_channel_open(1, NULL, &rx) == TRIO_EINVAL && rx == 0, "channel_open(NULL send)");
    CHECK(trio_channel_open(1, &tx, NULL) == TRIO_EINVAL && tx == 0, "channel_open(NULL recv)");

    CHECK(trio_event_new(&ev) == 0 && trio_lock_new(&lk) == 0 && trio_semaphore_new(1, &sem) == 0 &&
              trio_channel_open(1, &tx, &rx) == 0,
          "make one of each");
    CHECK(trio_channel_receive(rx, NULL) == TRIO_EINVAL, "channel_receive(NULL out)");
    CHECK(trio_semaphore_value(sem, NULL) == TRIO_EINVAL, "semaphore_value(NULL out)");
    CHECK(trio_channel_clone_sender(tx, NULL) == TRIO_EINVAL, "clone_sender(NULL out)");
    CHECK(trio_channel_clone_receiver(rx, NULL) == TRIO_EINVAL, "clone_receiver(NULL out)");

    /* Handle 0. */
    CHECK(trio_event_set(0) == TRIO_EBADHANDLE, "event_set(0)");
    CHECK(trio_event_is_set(0) == TRIO_EBADHANDLE, "event_is_set(0)");
    CHECK(trio_event_wait(0) == TRIO_EBADHANDLE, "event_wait(0)");
    CHECK(trio_event_close(0) == TRIO_EBADHANDLE, "event_close(0)");
    CHECK(trio_channel_send(0, NULL) == TRIO_EBADHANDLE, "channel_send(0)");
    CHECK(trio_channel_receive(0, &v) == TRIO_EBADHANDLE, "channel_receive(0)");
    CHECK(trio_channel_close_sender(0) == TRIO_EBADHANDLE, "channel_close_sender(0)");
    CHECK(trio_channel_close_receiver(0) == TRIO_EBADHANDLE, "channel_close_receiver(0)");
    CHECK(trio_channel_clone_sender(0, &h) == TRIO_EBADHANDLE && h == 0, "clone_sender(0)");
    CHECK(trio_channel_clone_receiver(0, &h) == TRIO_EBADHANDLE && h == 0, "clone_receiver(0)");
    CHECK(trio_lock_acquire(0) == TRIO_EBADHANDLE, "lock_acquire(0)");
    CHECK(trio_lock_try_acquire(0) == TRIO_EBADHANDLE, "lock_try_acquire(0)");
    CHECK(trio_lock_release(0) == TRIO_EBADHANDLE, "lock_release(0)");
    CHECK(trio_lock_close(0) == TRIO_EBADHANDLE, "lock_close(0)");
    CHECK(trio_semaphore_acquire(0) == TRIO_EBADHANDLE, "semaphore_acquire(0)");
    CHECK(trio_semaphore_try_acquire(0) == TRIO_EBADHANDLE, "semaphore_try_acquire(0)");
    CHECK(trio_semaphore_release(0) == TRIO_EBADHANDLE, "semaphore_release(0)");
    CHECK(trio_semaphore_value(0, &sz) == TRIO_EBADHANDLE, "semaphore_value(0)");
    CHECK(trio_semaphore_close(0) == TRIO_EBADHANDLE, "semaphore_close(0)");

    /* Wrong kinds. */
    CHECK(trio_lock_acquire(ev) == TRIO_EBADHANDLE, "an event given to lock_acquire");
    CHECK(trio_lock_try_acquire(ev) == TRIO_EBADHANDLE, "an event given to lock_try_acquire");
    CHECK(trio_lock_release(ev) == TRIO_EBADHANDLE, "an event given to lock_release");
    CHECK(trio_lock_close(ev) == TRIO_EBADHANDLE, "an event given to lock_close");
    CHECK(trio_event_is_set(ev) == 0, "the event survived");
    CHECK(trio_event_wait(lk) == TRIO_EBADHANDLE, "a lock given to event_wait");
    CHECK(trio_event_set(sem) == TRIO_EBADHANDLE, "a semaphore given to event_set");
    CHECK(trio_event_close(tx) == TRIO_EBADHANDLE, "a sender given to event_close");
    CHECK(trio_semaphore_acquire(lk) == TRIO_EBADHANDLE, "a lock given to semaphore_acquire");
    CHECK(trio_semaphore_release(ev) == TRIO_EBADHANDLE, "an event given to semaphore_release");
    CHECK(trio_semaphore_value(lk, &sz) == TRIO_EBADHANDLE, "a lock given to semaphore_value");
    CHECK(trio_semaphore_close(rx) == TRIO_EBADHANDLE, "a receiver given to semaphore_close");
    CHECK(trio_channel_send(rx, NULL) == TRIO_EBADHANDLE, "a receiver given to channel_send");
    CHECK(trio_channel_receive(tx, &v) == TRIO_EBADHANDLE, "a sender given to channel_receive");
    CHECK(trio_channel_close_sender(rx) == TRIO_EBADHANDLE, "a receiver given to close_sender");
    CHECK(trio_channel_close_receiver(tx) == TRIO_EBADHANDLE, "a sender given to close_receiver");
    CHECK(trio_channel_clone_sender(rx, &h) == TRIO_EBADHANDLE, "a receiver given to clone_sender");
    CHECK(trio_channel_clone_receiver(ev, &h) == TRIO_EBADHANDLE, "an event given to clone_receiver");
    CHECK(trio_nursery_close(ev) == TRIO_EBADHANDLE, "an event given to nursery_close");

    /* Stale handles. */
    CHECK(trio_event_new(&stale_ev) == 0 && trio_event_close(stale_ev) == 0, "a closed event");
    CHECK(trio_lock_new(&stale_lk) == 0 && trio_lock_close(stale_lk) == 0, "a closed lock");
    CHECK(trio_semaphore_new(0, &stale_sem) == 0 && trio_semaphore_close(stale_sem) == 0,
          "a closed semaphore");
    CHECK(trio_channel_open(0, &stale_tx, &stale_rx) == 0 &&
              trio_channel_close_sender(stale_tx) == 0 && trio_channel_close_receiver(stale_rx) == 0,
          "a closed channel");
    CHECK(trio_event_set(stale_ev) == TRIO_EBADHANDLE, "event_set(stale)");
    CHECK(trio_event_wait(stale_ev) == TRIO_EBADHANDLE, "event_wait(stale)");
    CHECK(trio_lock_acquire(stale_lk) == TRIO_EBADHANDLE, "lock_acquire(stale)");
    CHECK(trio_lock_try_acquire(stale_lk) == TRIO_EBADHANDLE, "lock_try_acquire(stale)");
    CHECK(trio_lock_close(stale_lk) == TRIO_EBADHANDLE, "lock_close(stale)");
    CHECK(trio_semaphore_acquire(stale_sem) == TRIO_EBADHANDLE, "semaphore_acquire(stale)");
    CHECK(trio_semaphore_try_acquire(stale_sem) == TRIO_EBADHANDLE, "semaphore_try_acquire(stale)");
    CHECK(trio_semaphore_release(stale_sem) == TRIO_EBADHANDLE, "semaphore_release(stale)");
    CHECK(trio_channel_send(stale_tx, NULL) == TRIO_EBADHANDLE, "channel_send(stale)");
    CHECK(trio_channel_receive(stale_rx, &v) == TRIO_EBADHANDLE, "channel_receive(stale)");
    CHECK(trio_channel_clone_sender(stale_tx, &h) == TRIO_EBADHANDLE, "clone_sender(stale)");
    CHECK(trio_channel_close_sender(stale_tx) == TRIO_EBADHANDLE, "close_sender(stale)");
    CHECK(trio_channel_close_receiver(stale_rx) == TRIO_EBADHANDLE, "close_receiver(stale)");

    /* Kept open past the run, for the outside-the-run checks. */
    leftover_event = ev;
    leftover_lock = lk;
    leftover_sem = sem;
    leftover_tx = tx;
    leftover_rx = rx;
    return 0;
}

static int main_task(void *arg) {
    (void)arg;
    events();
    closing_a_waited_event();
    producer_consumer();
    channel_semantics();
    locks();
    semaphores();
    cancellation();
    bad_input();
    return 0;
}

/* A handle used after its run: ENORUN where it would wait, or BADHANDLE
 * if the run's teardown closed the handles. */
#define NORUN_OR_STALE(rc) ((rc) == TRIO_ENORUN || (rc) == TRIO_EBADHANDLE)

int main(void) {
    trio_handle_t h = 0, h2 = 0;
    void *v = NULL;
    int rc;

    CHECK(trio_event_new(&h) == TRIO_ENORUN && h == 0, "event_new outside trio_run");
    CHECK(trio_lock_new(&h) == TRIO_ENORUN && h == 0, "lock_new outside trio_run");
    CHECK(trio_semaphore_new(1, &h) == TRIO_ENORUN && h == 0, "semaphore_new outside trio_run");
    CHECK(trio_channel_open(1, &h, &h2) == TRIO_ENORUN && h == 0 && h2 == 0,
          "channel_open outside trio_run");
    CHECK(trio_event_wait(0) == TRIO_EBADHANDLE, "event_wait(0) outside trio_run");

    rc = trio_run_mock_clock(main_task, NULL);
    CHECK(rc == 0, "trio_run_mock_clock returns 0");

    CHECK(NORUN_OR_STALE(trio_event_wait(leftover_event)), "event_wait after the run");
    CHECK(NORUN_OR_STALE(trio_lock_acquire(leftover_lock)), "lock_acquire after the run");
    CHECK(NORUN_OR_STALE(trio_lock_try_acquire(leftover_lock)), "lock_try_acquire after the run");
    CHECK(NORUN_OR_STALE(trio_lock_release(leftover_lock)), "lock_release after the run");
    CHECK(NORUN_OR_STALE(trio_semaphore_acquire(leftover_sem)), "semaphore_acquire after the run");
    CHECK(NORUN_OR_STALE(trio_channel_send(leftover_tx, NULL)), "channel_send after the run");
    CHECK(NORUN_OR_STALE(trio_channel_receive(leftover_rx, &v)), "channel_receive after the run");
    rc = trio_event_close(leftover_event);
    CHECK(rc == 0 || rc == TRIO_EBADHANDLE, "event_close after the run");
    rc = trio_lock_close(leftover_lock);
    CHECK(rc == 0 || rc == TRIO_EBADHANDLE, "lock_close after the run");
    rc = trio_semaphore_close(leftover_sem);
    CHECK(rc == 0 || rc == TRIO_EBADHANDLE, "semaphore_close after the run");
    rc = trio_channel_close_sender(leftover_tx);
    CHECK(rc == 0 || rc == TRIO_EBADHANDLE, "close_sender after the run");
    rc = trio_channel_close_receiver(leftover_rx);
    CHECK(rc == 0 || rc == TRIO_EBADHANDLE, "close_receiver after the run");
    return 0;
}
