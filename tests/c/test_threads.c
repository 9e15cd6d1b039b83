/* Threads through libtrio.h: trio_to_thread, tokens, run_sync_soon and
 * trio_from_thread_run. Prints TAP-like "ok N - name" lines; exits 1 at the
 * first failure. Link with -lpthread. */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "libtrio.h"

#include "check.h"

static pthread_t loop_thread;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;

/* Waits on cv until *flag reaches want, for at most 10 s (a safety net
 * against a hang, never a timing assertion). Returns 0, or -1 on timeout. */
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

/* --- to_thread returns fn's value, on another thread --- */
struct where {
    pthread_t thread;
    int value;
};

static int record_thread(void *arg) {
    struct where *w = (struct where *)arg;
    w->thread = pthread_self();
    return w->value;
}

static int to_thread_basics(void) {
    struct where w;
    w.value = 42;
    CHECK(trio_to_thread(record_thread, &w, 0) == 42, "to_thread returns fn's value");
    CHECK(!pthread_equal(w.thread, pthread_self()), "fn ran on another thread");
    w.value = -77;
    CHECK(trio_to_thread(record_thread, &w, 0) == -77, "a negative value is returned as is");
    w.value = 0;
    CHECK(trio_to_thread(record_thread, &w, 1) == 0, "abandon_on_cancel without a cancel");
    CHECK(trio_to_thread(NULL, &w, 0) == TRIO_EINVAL, "to_thread(NULL fn) is EINVAL");
    return 0;
}

/* --- several to_thread calls at once, from the tasks of a nursery --- */
#define PARALLEL 4
static int arrived = 0;

static int meet_others(void *arg) {
    (void)arg;
    bump(&arrived);
    /* Returns only once all PARALLEL threads run at the same time. */
    return wait_for(&arrived, PARALLEL) == 0 ? 7 : -1;
}

static int parallel_results[PARALLEL];

static int parallel_child(void *arg) {
    int *slot = (int *)arg;
    *slot = trio_to_thread(meet_others, NULL, 0);
    return *slot < 0 ? *slot : 0;
}

static int to_thread_in_parallel(void) {
    trio_handle_t n = 0;
    int i;
    CHECK(trio_nursery_open(&n) == 0, "open a nursery");
    for (i = 0; i < PARALLEL; i++) parallel_results[i] = 99;
    for (i = 0; i < PARALLEL; i++)
        if (trio_nursery_spawn(n, parallel_child, &parallel_results[i]) != 0) return -1;
    CHECK(trio_nursery_close(n) == 0, "the nursery of to_thread callers closes");
    for (i = 0; i < PARALLEL; i++)
        CHECK(parallel_results[i] == 7, "every thread met the others and returned");
    return 0;
}

/* --- abandon_on_cancel under a cancel scope's deadline --- */
static int release = 0, worker_done = 0;

static int slow_worker(void *arg) {
    (void)arg;
    wait_for(&release, 1); /* blocks until the loop lets it go */
    bump(&worker_done);
    return 5;
}

static int join_worker(void *arg) {
    (void)arg;
    return wait_for(&worker_done, 1);
}

static int to_thread_abandoned(void) {
    trio_handle_t s = 0;
    int r;
    CHECK(trio_cancel_scope_open(0.5, 0, &s) == 0, "open a scope with a deadline");
    r = trio_to_thread(slow_worker, NULL, 1);
    CHECK(r == TRIO_ECANCELED, "an abandoned to_thread returns TRIO_ECANCELED");
    CHECK(worker_done == 0, "the thread still runs on its own");
    trio_cancel_scope_close(s);
    bump(&release);
    /* The thread's arg must outlive it: wait for it before going on. */
    CHECK(trio_to_thread(join_worker, NULL, 0) == 0, "the abandoned thread finished");
    return 0;
}

static int cancelled_before_start(void) {
    trio_handle_t s = 0;
    struct where w;
    w.value = 3;
    w.thread = pthread_self();
    CHECK(trio_cancel_scope_open(-1, 0, &s) == 0, "open a scope");
    trio_cancel_scope_cancel(s);
    CHECK(trio_to_thread(record_thread, &w, 0) == TRIO_ECANCELED,
          "to_thread in a cancelled scope is TRIO_ECANCELED");
    CHECK(pthread_equal(w.thread, pthread_self()), "and fn never ran");
    trio_cancel_scope_close(s);
    return 0;
}

/* --- from_thread_run from a to_thread worker --- */
struct callback {
    trio_token *token;
    pthread_t ran_on;
    double slept_until;
    int result; /* what trio_from_thread_run returned */
    int fails;  /* the task returns TRIO_EIO instead */
};

static int loop_task(void *arg) {
    struct callback *cb = (struct callback *)arg;
    cb->ran_on = pthread_self();
    if (trio_sleep(0.25) != 0) return -1; /* a C task: it can wait */
    if (trio_now(&cb->slept_until) != 0) return -1;
    return cb->fails ? TRIO_EIO : 11;
}

static int call_back_into_loop(void *arg) {
    struct callback *cb = (struct callback *)arg;
    cb->result = trio_from_thread_run(cb->token, loop_task, cb);
    return cb->result;
}

static int from_thread_in_worker(void) {
    struct callback cb;
    double start = 0;
    memset(&cb, 0, sizeof cb);
    CHECK(trio_token_get(&cb.token) == 0 && cb.token != NULL, "token_get");
    trio_now(&start);
    CHECK(trio_to_thread(call_back_into_loop, &cb, 0) == 11,
          "from_thread_run in a worker returns the task's value");
    CHECK(pthread_equal(cb.ran_on, loop_thread), "the task ran on the loop thread");
    CHECK(cb.slept_until >= start + 0.25, "the task slept in the loop");
    cb.fails = 1;
    CHECK(trio_to_thread(call_back_into_loop, &cb, 0) == TRIO_EIO,
          "a failing task's code comes back");
    CHECK(trio_from_thread_run(cb.token, loop_task, &cb) == TRIO_EMISUSE,
          "from_thread_run on the loop thread is TRIO_EMISUSE, not a deadlock");
    CHECK(trio_token_free(cb.token) == 0, "token_free");
    return 0;
}

/* A cancellation of the task that started the worker reaches the task
 * that the worker runs in the loop. */
static int sleep_long(void *arg) {
    int *slept = (int *)arg;
    *slept = trio_sleep(100);
    return *slept;
}

struct cancel_case {
    trio_token *token;
    int slept;
    int result;
};

static int call_sleeper(void *arg) {
    struct cancel_case *c = (struct cancel_case *)arg;
    c->result = trio_from_thread_run(c->token, sleep_long, &c->slept);
    return 0;
}

static int from_thread_cancelled_with_host(void) {
    struct cancel_case c;
    trio_handle_t s = 0;
    memset(&c, 0, sizeof c);
    c.slept = 99;
    CHECK(trio_token_get(&c.token) == 0, "token_get");
    CHECK(trio_cancel_scope_open(1.0, 0, &s) == 0, "open a scope with a deadline");
    CHECK(trio_to_thread(call_sleeper, &c, 0) == 0, "the worker returns after the deadline");
    CHECK(c.slept == TRIO_ECANCELED && c.result == TRIO_ECANCELED,
          "the host's deadline cancelled the task from_thread_run started");
    trio_cancel_scope_close(s);
    trio_token_free(c.token);
    return 0;
}

/* --- a plain pthread: run_sync_soon and from_thread_run --- */
struct outsider {
    trio_token *token;
    int soon_status;
    int run_status;
    int null_checks_ok;
    struct callback cb;
};

static int soon_ran = 0;
static pthread_t soon_ran_on;

static void soon_fn(void *arg) {
    (void)arg;
    soon_ran_on = pthread_self();
    soon_ran++;
}

static void *outsider_main(void *arg) {
    struct outsider *o = (struct outsider *)arg;
    o->soon_status = trio_token_run_sync_soon(o->token, soon_fn, NULL);
    o->cb.token = o->token;
    o->run_status = trio_from_thread_run(o->token, loop_task, &o->cb);
    o->null_checks_ok =
        trio_token_run_sync_soon(NULL, soon_fn, NULL) == TRIO_EINVAL &&
        trio_token_run_sync_soon(o->token, NULL, NULL) == TRIO_EINVAL &&
        trio_from_thread_run(NULL, loop_task, NULL) == TRIO_EINVAL &&
        trio_from_thread_run(o->token, NULL, NULL) == TRIO_EINVAL;
    return NULL;
}

static int join_thread(void *arg) {
    return pthread_join(*(pthread_t *)arg, NULL) == 0 ? 0 : -1;
}

static int from_plain_pthread(void) {
    struct outsider o;
    pthread_t t;
    int i;
    memset(&o, 0, sizeof o);
    soon_ran = 0;
    CHECK(trio_token_get(&o.token) == 0, "token_get");
    CHECK(pthread_create(&t, NULL, outsider_main, &o) == 0, "start a plain pthread");
    /* Joining blocks: do it on a worker so the loop serves the thread. */
    CHECK(trio_to_thread(join_thread, &t, 0) == 0, "join it");
    CHECK(o.soon_status == 0, "run_sync_soon from a pthread succeeds");
    CHECK(o.run_status == 11 && pthread_equal(o.cb.ran_on, loop_thread),
          "from_thread_run from a pthread ran the task in the loop");
    CHECK(o.null_checks_ok, "NULL token or fn from a pthread is EINVAL");
    for (i = 0; i < 100 && soon_ran == 0; i++) trio_checkpoint();
    CHECK(soon_ran == 1 && pthread_equal(soon_ran_on, loop_thread),
          "the run_sync_soon callback ran once, on the loop thread");
    /* From the loop thread itself it is queued too. */
    CHECK(trio_token_run_sync_soon(o.token, soon_fn, NULL) == 0, "run_sync_soon from the loop");
    for (i = 0; i < 100 && soon_ran == 1; i++) trio_checkpoint();
    CHECK(soon_ran == 2, "and it ran");
    trio_token_free(o.token);
    return 0;
}

/* --- the mains --- */
static trio_token *leftover = NULL;

static int main_task(void *arg) {
    (void)arg;
    loop_thread = pthread_self();
    if (to_thread_basics() != 0) return -1;
    if (to_thread_in_parallel() != 0) return -1;
    if (to_thread_abandoned() != 0) return -1;
    if (cancelled_before_start() != 0) return -1;
    if (from_thread_in_worker() != 0) return -1;
    if (from_thread_cancelled_with_host() != 0) return -1;
    if (from_plain_pthread() != 0) return -1;
    CHECK(trio_token_get(NULL) == TRIO_EINVAL, "token_get(NULL) is EINVAL");
    CHECK(trio_token_get(&leftover) == 0, "a token to use after the run");
    return 0;
}

static int never_runs(void *arg) {
    (void)arg;
    return 0;
}

int main(void) {
    trio_token *t = NULL;
    CHECK(trio_run_mock_clock(main_task, NULL) == 0, "the run succeeds");
    CHECK(trio_token_run_sync_soon(leftover, soon_fn, NULL) == TRIO_ENORUN,
          "run_sync_soon after the run ended is TRIO_ENORUN");
    CHECK(trio_from_thread_run(leftover, never_runs, NULL) == TRIO_ENORUN,
          "from_thread_run after the run ended is TRIO_ENORUN");
    CHECK(trio_token_free(leftover) == 0, "free it");
    CHECK(trio_token_free(NULL) == 0, "token_free(NULL) does nothing");
    CHECK(trio_to_thread(never_runs, NULL, 0) == TRIO_ENORUN, "to_thread outside a run");
    CHECK(trio_token_get(&t) == TRIO_ENORUN && t == NULL, "token_get outside a run");
    return 0;
}
