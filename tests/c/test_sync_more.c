/* Semaphores with a maximum, condition variables and capacity limiters
 * through libtrio.h. Runs on the mock clock (sleeps take no real time).
 * Prints TAP-like "ok N - name" lines; exits 1 at the first failure. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "libtrio.h"

#include "check.h"

static char detail[512];

static const char *last(void) {
    trio_last_error(detail, sizeof detail);
    return detail;
}

/* ------------------------------------------------------------ semaphores */

static int sem_acquirer(void *arg) {
    return trio_semaphore_acquire(*(trio_handle_t *)arg);
}

static int bounded_semaphores(void) {
    trio_handle_t s = 0, u = 0, n = 0;
    trio_semaphore_stats st;
    size_t v = 99;

    CHECK(trio_semaphore_new_bounded(3, 2, &s) == TRIO_EINVAL && strstr(last(), "initial") != NULL,
          "initial above max is refused, naming initial");
    CHECK(trio_semaphore_new_bounded(0, 1, NULL) == TRIO_EINVAL && strstr(last(), "out") != NULL,
          "a NULL out is refused");
    CHECK(trio_semaphore_new_bounded(1, 2, &s) == 0 && s != 0, "new_bounded(1, 2)");
    CHECK(trio_semaphore_release(s) == 0, "release up to the maximum");
    CHECK(trio_semaphore_release(s) == TRIO_EMISUSE, "releasing past the maximum is TRIO_EMISUSE");
    CHECK(strstr(last(), "too many") != NULL, "with a detail");
    CHECK(trio_semaphore_value(s, &v) == 0 && v == 2, "the value stayed at the maximum");
    memset(&st, 0xff, sizeof st);
    CHECK(trio_semaphore_statistics(s, &st) == 0 && st.value == 2 && st.has_max == 1 && st.max_value == 2 &&
              st.tasks_waiting == 0,
          "statistics of a bounded semaphore");
    CHECK(trio_semaphore_statistics(s, NULL) == TRIO_EINVAL, "statistics with a NULL out");

    /* A waiter gets the permit directly: releasing to it is fine at max. */
    CHECK(trio_semaphore_acquire(s) == 0 && trio_semaphore_acquire(s) == 0, "take both permits");
    CHECK(trio_nursery_open(&n) == 0, "open");
    CHECK(trio_nursery_spawn(n, sem_acquirer, &s) == 0, "spawn a waiter");
    CHECK(trio_sleep(1) == 0, "let it block");
    CHECK(trio_semaphore_statistics(s, &st) == 0 && st.tasks_waiting == 1 && st.value == 0, "one task waits");
    CHECK(trio_semaphore_release(s) == 0, "release hands the permit over");
    CHECK(trio_nursery_close(n) == 0, "the waiter got it");
    CHECK(trio_semaphore_release(s) == 0 && trio_semaphore_release(s) == 0, "both permits back");
    CHECK(trio_semaphore_release(s) == TRIO_EMISUSE, "and no more");
    CHECK(trio_semaphore_close(s) == 0, "close");

    CHECK(trio_semaphore_new(0, &u) == 0, "an unbounded one");
    CHECK(trio_semaphore_statistics(u, &st) == 0 && st.has_max == 0 && st.max_value == 0, "has no maximum");
    CHECK(trio_semaphore_close(u) == 0, "close");
    CHECK(trio_semaphore_statistics(u, &st) == TRIO_EBADHANDLE, "statistics of a closed one");
    return 0;
}

/* ------------------------------------------------------------ conditions */

struct cond_state {
    trio_handle_t cond;
    int ready;   /* protected by the condition's lock */
    int woken;   /* how many waiters got through */
    int results[4];
};

static int cond_waiter(void *arg) {
    struct cond_state *cs = (struct cond_state *)arg;
    int rc = trio_condition_acquire(cs->cond);
    if (rc != 0) return rc;
    while (cs->ready == 0) {
        rc = trio_condition_wait(cs->cond);
        if (rc != 0) {
            trio_condition_release(cs->cond);
            return rc;
        }
    }
    cs->woken++;
    return trio_condition_release(cs->cond);
}

/* Waits in a scope with a deadline: cancelled, it holds the lock again. */
static int cancelled_waiter(void *arg) {
    struct cond_state *cs = (struct cond_state *)arg;
    trio_handle_t scope = 0;
    trio_condition_stats st;
    int rc;
    if (trio_condition_acquire(cs->cond) != 0) return -100;
    if (trio_cancel_scope_open(5.0, 0, &scope) != 0) return -101;
    rc = trio_condition_wait(cs->cond);
    cs->results[0] = rc;
    cs->results[1] = trio_cancel_scope_close(scope);
    cs->results[2] = trio_condition_statistics(cs->cond, &st) == 0 ? st.lock_locked : -1;
    cs->results[3] = trio_condition_release(cs->cond);
    return 0;
}

static int conditions(void) {
    struct cond_state cs;
    trio_handle_t n = 0, lock = 0;
    trio_condition_stats st;
    int i;

    memset(&cs, 0, sizeof cs);
    CHECK(trio_condition_new(NULL) == TRIO_EINVAL, "new with a NULL out");
    CHECK(trio_condition_new(&cs.cond) == 0 && cs.cond != 0, "new");
    CHECK(trio_condition_wait(cs.cond) == TRIO_EMISUSE, "wait without the lock is TRIO_EMISUSE");
    CHECK(trio_condition_notify(cs.cond, 1) == TRIO_EMISUSE, "notify without the lock");
    CHECK(trio_condition_notify_all(cs.cond) == TRIO_EMISUSE, "notify_all without the lock");
    CHECK(trio_condition_release(cs.cond) == TRIO_EMISUSE, "release without the lock");
    CHECK(trio_lock_new(&lock) == 0, "a lock");
    CHECK(trio_condition_acquire(lock) == TRIO_EBADHANDLE, "a lock handle is not a condition");
    CHECK(trio_condition_statistics(cs.cond, NULL) == TRIO_EINVAL, "statistics with a NULL out");

    CHECK(trio_nursery_open(&n) == 0, "open");
    for (i = 0; i < 3; i++) CHECK(trio_nursery_spawn(n, cond_waiter, &cs) == 0, "spawn a waiter");
    CHECK(trio_sleep(1) == 0, "let them wait");
    CHECK(trio_condition_statistics(cs.cond, &st) == 0 && st.tasks_waiting == 3 && st.lock_locked == 0,
          "three wait, the lock is free");
    CHECK(trio_condition_acquire(cs.cond) == 0, "acquire");
    CHECK(trio_condition_try_acquire(cs.cond) == TRIO_EMISUSE, "try_acquire while holding it");
    cs.ready = 1;
    CHECK(trio_condition_notify(cs.cond, 1) == 1, "notify(1) wakes one");
    CHECK(trio_condition_statistics(cs.cond, &st) == 0 && st.tasks_waiting == 2 && st.lock_locked == 1 &&
              st.lock_tasks_waiting == 1,
          "the woken one waits for the lock");
    CHECK(trio_condition_release(cs.cond) == 0, "release");
    CHECK(trio_sleep(1) == 0 && cs.woken == 1, "one got through");
    CHECK(trio_condition_try_acquire(cs.cond) == 0, "try_acquire");
    CHECK(trio_condition_notify_all(cs.cond) == 2, "notify_all wakes the other two");
    CHECK(trio_condition_notify(cs.cond, 5) == 0, "nobody left to notify");
    CHECK(trio_condition_release(cs.cond) == 0, "release");
    CHECK(trio_nursery_close(n) == 0 && cs.woken == 3, "all three got through");

    /* A wait cancelled by its scope's deadline returns holding the lock. */
    memset(cs.results, 0x7f, sizeof cs.results);
    CHECK(trio_nursery_open(&n) == 0, "open");
    CHECK(trio_nursery_spawn(n, cancelled_waiter, &cs) == 0, "spawn a waiter with a deadline");
    CHECK(trio_nursery_close(n) == 0, "it ends");
    CHECK(cs.results[0] == TRIO_ECANCELED, "its wait was cancelled");
    CHECK(cs.results[1] == 1, "by its scope");
    CHECK(cs.results[2] == 1 && cs.results[3] == 0, "and it held the lock again");

    /* Closing the handle wakes a waiter with TRIO_ECLOSED. */
    cs.ready = 0;
    CHECK(trio_nursery_open(&n) == 0, "open");
    CHECK(trio_nursery_spawn(n, cond_waiter, &cs) == 0, "spawn a waiter");
    CHECK(trio_sleep(1) == 0, "let it wait");
    CHECK(trio_condition_close(cs.cond) == 0, "close the condition");
    CHECK(trio_nursery_close(n) == TRIO_ECLOSED, "the waiter saw TRIO_ECLOSED");
    CHECK(trio_condition_close(cs.cond) == TRIO_EBADHANDLE, "closing twice");
    CHECK(trio_lock_close(lock) == 0, "close the lock");
    return 0;
}

/* ------------------------------------------------------------ limiters */

struct lim_state {
    trio_handle_t lim;
    int got;
};

static int lim_borrower(void *arg) {
    struct lim_state *ls = (struct lim_state *)arg;
    int rc = trio_capacity_limiter_acquire(ls->lim);
    if (rc != 0) return rc;
    ls->got++;
    if (trio_sleep(1) != 0) return TRIO_ECANCELED;
    return trio_capacity_limiter_release(ls->lim);
}

static int capacity_limiters(void) {
    struct lim_state ls;
    trio_handle_t n = 0, z = 0;
    trio_capacity_limiter_stats st;

    memset(&ls, 0, sizeof ls);
    CHECK(trio_capacity_limiter_new(1, NULL) == TRIO_EINVAL, "new with a NULL out");
    CHECK(trio_capacity_limiter_new(1, &ls.lim) == 0 && ls.lim != 0, "new(1)");
    CHECK(trio_capacity_limiter_release(ls.lim) == TRIO_EMISUSE, "releasing a token not held");
    CHECK(trio_capacity_limiter_acquire(ls.lim) == 0, "acquire");
    CHECK(trio_capacity_limiter_acquire(ls.lim) == TRIO_EMISUSE, "a task holds one token at most");
    CHECK(trio_capacity_limiter_try_acquire(ls.lim) == TRIO_EMISUSE, "try_acquire too");
    CHECK(trio_capacity_limiter_statistics(ls.lim, &st) == 0 && st.total_tokens == 1 && st.borrowed_tokens == 1 &&
              st.available_tokens == 0 && st.tasks_waiting == 0,
          "statistics: one borrowed, none available");

    CHECK(trio_nursery_open(&n) == 0, "open");
    CHECK(trio_nursery_spawn(n, lim_borrower, &ls) == 0, "spawn a borrower");
    CHECK(trio_nursery_spawn(n, lim_borrower, &ls) == 0, "and another");
    CHECK(trio_sleep(0.5) == 0, "let them block");
    CHECK(trio_capacity_limiter_statistics(ls.lim, &st) == 0 && st.tasks_waiting == 2 && ls.got == 0,
          "both wait");
    CHECK(trio_capacity_limiter_set_total_tokens(ls.lim, 2) == 0, "raise the total to 2");
    CHECK(trio_checkpoint() == 0 && ls.got == 1, "one waiter got the new token at once");
    CHECK(trio_capacity_limiter_statistics(ls.lim, &st) == 0 && st.total_tokens == 2 && st.borrowed_tokens == 2 &&
              st.available_tokens == 0 && st.tasks_waiting == 1,
          "two borrowed, one waits");
    CHECK(trio_capacity_limiter_release(ls.lim) == 0, "give ours back");
    CHECK(trio_nursery_close(n) == 0 && ls.got == 2, "the other waiter got ours");
    CHECK(trio_capacity_limiter_statistics(ls.lim, &st) == 0 && st.borrowed_tokens == 0 && st.available_tokens == 2,
          "all back");
    CHECK(trio_capacity_limiter_set_total_tokens(ls.lim, 0) == 0, "lower the total to 0");
    CHECK(trio_capacity_limiter_try_acquire(ls.lim) == TRIO_EWOULDBLOCK, "then nothing is available");
    CHECK(trio_capacity_limiter_close(ls.lim) == 0, "close");
    CHECK(trio_capacity_limiter_acquire(ls.lim) == TRIO_EBADHANDLE, "acquire on a closed handle");
    CHECK(trio_capacity_limiter_set_total_tokens(ls.lim, 1) == TRIO_EBADHANDLE, "set_total_tokens too");

    /* Closing wakes a waiter with TRIO_ECLOSED. */
    CHECK(trio_capacity_limiter_new(0, &z) == 0, "new(0)");
    ls.lim = z;
    CHECK(trio_nursery_open(&n) == 0, "open");
    CHECK(trio_nursery_spawn(n, lim_borrower, &ls) == 0, "spawn a borrower");
    CHECK(trio_sleep(0.5) == 0, "let it block");
    CHECK(trio_capacity_limiter_close(z) == 0, "close");
    CHECK(trio_nursery_close(n) == TRIO_ECLOSED, "the waiter saw TRIO_ECLOSED");
    return 0;
}

static int main_task(void *arg) {
    (void)arg;
    bounded_semaphores();
    conditions();
    capacity_limiters();
    return 0;
}

int main(void) {
    trio_handle_t h = 0;
    setvbuf(stdout, NULL, _IONBF, 0);
    CHECK(trio_condition_new(&h) == TRIO_ENORUN, "condition_new outside a run");
    CHECK(trio_capacity_limiter_new(1, &h) == TRIO_ENORUN, "capacity_limiter_new outside a run");
    CHECK(trio_semaphore_new_bounded(0, 1, &h) == TRIO_ENORUN, "semaphore_new_bounded outside a run");
    CHECK(trio_run_mock_clock(main_task, NULL) == 0, "run");
    printf("1..%d\n", test_no);
    return 0;
}
