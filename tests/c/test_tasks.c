/* C tasks, nurseries and cancel scopes through libtrio.h.
 * Prints TAP-like "ok N - name" lines; exits 1 at the first failure. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "libtrio.h"

#include "check.h"

/* --- children that record the order they finish in --- */
static int order[8];
static int order_len = 0;

struct sleeper {
    double seconds;
    int id;
    int result; /* what trio_sleep returned */
};

static int sleeper_task(void *arg) {
    struct sleeper *s = (struct sleeper *)arg;
    s->result = trio_sleep(s->seconds);
    if (s->result == 0) order[order_len++] = s->id;
    return s->result;
}

static int failing_task(void *arg) {
    (void)arg;
    if (trio_sleep(0.01) != 0) return TRIO_ECANCELED;
    return -77; /* an error of the C code's own */
}

static int nursery_waits_for_children(void) {
    struct sleeper a = {0.03, 1, 99}, b = {0.01, 2, 99}, c = {0.02, 3, 99};
    trio_handle_t n = 0;
    order_len = 0;
    CHECK(trio_nursery_open(&n) == 0 && n != 0, "nursery_open gives a handle");
    CHECK(trio_nursery_spawn(n, sleeper_task, &a) == 0, "spawn a");
    CHECK(trio_nursery_spawn(n, sleeper_task, &b) == 0, "spawn b");
    CHECK(trio_nursery_spawn(n, sleeper_task, &c) == 0, "spawn c");
    CHECK(trio_nursery_close(n) == 0, "nursery_close waits and succeeds");
    CHECK(order_len == 3 && order[0] == 2 && order[1] == 3 && order[2] == 1,
          "children finished in the order of their sleeps");
    CHECK(trio_nursery_close(n) == TRIO_EBADHANDLE, "closing twice is a stale handle");
    CHECK(trio_nursery_spawn(n, sleeper_task, &a) == TRIO_EBADHANDLE, "spawning into a closed nursery");
    return 0;
}

static int children_run_while_the_parent_waits(void) {
    struct sleeper a = {0.01, 7, 99};
    trio_handle_t n = 0;
    order_len = 0;
    CHECK(trio_nursery_open(&n) == 0, "open");
    CHECK(trio_nursery_spawn(n, sleeper_task, &a) == 0, "spawn");
    /* The parent waits on something else; the child runs meanwhile. */
    CHECK(trio_sleep(0.05) == 0, "parent sleeps inside the nursery");
    CHECK(order_len == 1 && order[0] == 7, "the child finished while the parent slept");
    CHECK(trio_nursery_close(n) == 0, "close");
    return 0;
}

static int a_failing_child_cancels_its_siblings(void) {
    struct sleeper slow = {10.0, 1, 99};
    trio_handle_t n = 0;
    int rc;
    CHECK(trio_nursery_open(&n) == 0, "open");
    CHECK(trio_nursery_spawn(n, sleeper_task, &slow) == 0, "spawn the slow one");
    CHECK(trio_nursery_spawn(n, failing_task, NULL) == 0, "spawn the failing one");
    /* The parent's own wait inside the nursery is cancelled too. */
    rc = trio_sleep(10.0);
    CHECK(rc == TRIO_ECANCELED, "the parent's sleep in the nursery is cancelled");
    rc = trio_nursery_close(n);
    CHECK(rc == -77, "close reports the child's own code");
    CHECK(slow.result == TRIO_ECANCELED, "the sibling was cancelled");
    return 0;
}

static int cancel_scopes(void) {
    trio_handle_t s = 0, inner = 0;
    double t0 = 0, t1 = 0;
    CHECK(trio_now(&t0) == 0, "now");
    CHECK(trio_cancel_scope_open(0.02, 0, &s) == 0, "open a scope with a 20 ms deadline");
    CHECK(trio_sleep(10.0) == TRIO_ECANCELED, "the deadline cancels a long sleep");
    CHECK(trio_cancel_scope_close(s) == 1, "the scope caught the cancellation");
    CHECK(trio_now(&t1) == 0 && t1 > t0, "the clock moved");

    CHECK(trio_cancel_scope_open(-1.0, 0, &s) == 0, "open a scope without a deadline");
    CHECK(trio_sleep(0.001) == 0, "a short sleep completes");
    CHECK(trio_cancel_scope_close(s) == 0, "nothing caught");

    CHECK(trio_cancel_scope_open(-1.0, 0, &s) == 0, "outer scope");
    CHECK(trio_cancel_scope_cancel(s) == 0, "cancel it");
    CHECK(trio_cancel_scope_open(-1.0, 1, &inner) == 0, "shielded inner scope");
    CHECK(trio_sleep(0.001) == 0, "a shielded sleep completes inside a cancelled scope");
    CHECK(trio_cancel_scope_close(s) == TRIO_EINVAL, "closing the outer scope first is refused");
    CHECK(trio_cancel_scope_close(inner) == 0, "close the shield");
    CHECK(trio_checkpoint() == TRIO_ECANCELED, "outside the shield the cancellation is delivered");
    CHECK(trio_cancel_scope_close(s) == 1, "and caught by the outer scope");
    CHECK(trio_cancel_scope_cancel(s) == TRIO_EBADHANDLE, "a closed scope's handle is stale");
    return 0;
}

static int cancelling_a_nursery(void) {
    struct sleeper a = {10.0, 1, 99}, b = {10.0, 2, 99};
    trio_handle_t n = 0;
    CHECK(trio_nursery_open(&n) == 0, "open");
    CHECK(trio_nursery_spawn(n, sleeper_task, &a) == 0, "spawn a");
    CHECK(trio_nursery_spawn(n, sleeper_task, &b) == 0, "spawn b");
    CHECK(trio_checkpoint() == 0, "let them start");
    CHECK(trio_nursery_cancel(n) == 0, "cancel the nursery");
    CHECK(trio_nursery_close(n) == 0, "close after cancel is not an error");
    CHECK(a.result == TRIO_ECANCELED && b.result == TRIO_ECANCELED, "both children were cancelled");
    return 0;
}

/* --- trio_nursery_start / trio_task_started --- */
struct starter {
    double setup;   /* sleep before trio_task_started (< 0: never call it) */
    int fail_with;  /* returned before started if non-zero */
    double after;   /* sleep after started */
    int second;     /* what a second trio_task_started returned */
    int after_rc;   /* what the sleep after started returned (99: not yet) */
};

static int starter_task(void *arg) {
    struct starter *s = (struct starter *)arg;
    int rc;
    if (s->setup >= 0 && (rc = trio_sleep(s->setup)) != 0) return rc;
    if (s->fail_with) return s->fail_with;
    if (s->setup < 0) return 0; /* returns without reporting */
    if (trio_task_started(s) != 0) return -1;
    s->second = trio_task_started(s);
    s->after_rc = trio_sleep(s->after);
    return s->after_rc;
}

static int nursery_start(void) {
    struct starter ok = {0.01, 0, 0.05, 99, 99};
    struct starter fails = {0.01, -55, 0, 99, 99};
    struct starter silent = {-1, 0, 0, 99, 99};
    struct starter slow = {10.0, 0, 0, 99, 99};
    struct starter moved = {0.0, 0, 0.05, 99, 99};
    trio_handle_t n = 0, s = 0;
    void *value = NULL;
    CHECK(trio_task_started(NULL) == TRIO_EMISUSE, "task_started in a task not started by start");
    CHECK(trio_nursery_open(&n) == 0, "open");
    CHECK(trio_nursery_start(n, starter_task, &ok, &value) == 0, "start returns once the task started");
    CHECK(value == &ok, "start hands over the started value");
    CHECK(ok.second == TRIO_EMISUSE, "a second task_started is misuse");
    CHECK(ok.after_rc == 99, "the started task runs on in the nursery");

    value = (void *)&value;
    CHECK(trio_nursery_start(n, starter_task, &fails, &value) == -55,
          "a failure before started comes back from start");
    CHECK(value == (void *)&value, "the value is left alone on failure");
    CHECK(trio_nursery_start(n, starter_task, &silent, NULL) == TRIO_EMISUSE,
          "returning without started is misuse");

    CHECK(trio_cancel_scope_open(0.02, 0, &s) == 0, "a scope with a deadline around start");
    CHECK(trio_nursery_start(n, starter_task, &slow, NULL) == TRIO_ECANCELED,
          "cancelling the caller before started cancels start");
    CHECK(trio_cancel_scope_close(s) == 1, "and the scope caught it");

    CHECK(trio_cancel_scope_open(-1.0, 0, &s) == 0, "a scope around a start that succeeds");
    CHECK(trio_nursery_start(n, starter_task, &moved, NULL) == 0, "start");
    CHECK(trio_cancel_scope_cancel(s) == 0, "cancel the caller's scope after started");
    CHECK(trio_cancel_scope_close(s) == 0, "nothing in the caller was cancelled");
    CHECK(trio_nursery_start(n, NULL, NULL, NULL) == TRIO_EINVAL, "start with a NULL function");
    CHECK(trio_nursery_close(n) == 0, "the nursery waits for the started tasks");
    CHECK(ok.after_rc == 0, "the first started task finished in the nursery");
    CHECK(moved.after_rc == 0, "a started task no longer belongs to the caller's scope");
    CHECK(slow.after_rc == 99, "the cancelled task never started");
    CHECK(trio_nursery_start(n, starter_task, &ok, NULL) == TRIO_EBADHANDLE, "start into a closed nursery");

    /* A started task's later failure goes to the nursery. */
    {
        struct starter late = {0.0, 0, 0.01, 99, 99};
        struct starter sibling = {0.0, 0, 10.0, 99, 99};
        CHECK(trio_nursery_open(&n) == 0, "open");
        CHECK(trio_nursery_start(n, starter_task, &sibling, NULL) == 0, "start a long sleeper");
        CHECK(trio_nursery_spawn(n, failing_task, NULL) == 0, "spawn a failing child");
        CHECK(trio_nursery_start(n, starter_task, &late, NULL) == 0, "start another");
        CHECK(trio_nursery_close(n) == -77, "the nursery reports its failing child");
        CHECK(sibling.after_rc == TRIO_ECANCELED, "which cancelled the started sleeper");
    }
    return 0;
}

static int main_task(void *arg) {
    (void)arg;
    CHECK(trio_checkpoint() == 0, "checkpoint");
    nursery_waits_for_children();
    children_run_while_the_parent_waits();
    a_failing_child_cancels_its_siblings();
    cancel_scopes();
    cancelling_a_nursery();
    nursery_start();
    return 42;
}

static int returns_error(void *arg) {
    (void)arg;
    return -77;
}

static int short_real_sleep(void *arg) {
    double t0 = 0, t1 = 0;
    (void)arg;
    if (trio_now(&t0) != 0 || trio_sleep(0.001) != 0 || trio_now(&t1) != 0) return -1;
    return t1 > t0 ? 0 : -2;
}

int main(void) {
    trio_handle_t h = 0;
    CHECK(trio_sleep(0.0) == TRIO_ENORUN, "sleep outside a run");
    CHECK(trio_checkpoint() == TRIO_ENORUN, "checkpoint outside a run");
    CHECK(trio_nursery_open(&h) == TRIO_ENORUN && h == 0, "nursery_open outside a run leaves out alone");
    CHECK(trio_run(NULL, NULL) == TRIO_EINVAL, "run with NULL");
    CHECK(trio_last_error_code() == TRIO_EINVAL, "the last error code is kept");
    CHECK(trio_run_mock_clock(main_task, NULL) == 42, "run (mock clock) returns main's value");
    CHECK(trio_run_mock_clock(returns_error, NULL) == -77, "run (mock clock) passes main's own code on");
    CHECK(trio_run(returns_error, NULL) == -77, "run passes main's own code on");
    CHECK(trio_set_stack_size(1) == TRIO_EINVAL, "tiny stack refused");
    CHECK(trio_set_stack_size(64 * 1024) == 0, "64 KiB stacks");
    CHECK(trio_run_mock_clock(main_task, NULL) == 42, "everything again on 64 KiB stacks");
    CHECK(trio_run(short_real_sleep, NULL) == 0, "a run on the real clock");
    printf("1..%d\n", test_no);
    return 0;
}
