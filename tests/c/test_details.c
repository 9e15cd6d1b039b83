/* Failure details: a TRIO_EGROUP's detail names every failed child's code
 * and message; trio_set_last_error gives a C task's own code a message;
 * a child's detail is its own (never another task's).
 * Prints TAP-like "ok N - name" lines; exits 1 at the first failure. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "libtrio.h"

#include "check.h"

static char detail[4096];

/* This thread's last error detail, in `detail`. */
static const char *last(void) {
    trio_last_error(detail, sizeof detail);
    return detail;
}

/* What the misusing child's failed call said. */
static char misuse_detail[512];

/* Fails a libtrio call (releasing a lock it does not hold) and returns
 * its code. */
static int misusing_child(void *arg) {
    trio_handle_t lock = 0;
    int rc;
    (void)arg;
    if (trio_lock_new(&lock) != 0) return -100;
    rc = trio_lock_release(lock);
    trio_last_error(misuse_detail, sizeof misuse_detail);
    trio_lock_close(lock);
    return rc;
}

static int child_with_a_message(void *arg) {
    (void)arg;
    return trio_set_last_error(-1, "no config file");
}

static int child_without_a_message(void *arg) {
    (void)arg;
    return -5;
}

/* Three children failing at once: returns the close's code. */
static int three_failures(void) {
    trio_handle_t n = 0;
    if (trio_nursery_open(&n) != 0) return -100;
    trio_nursery_spawn(n, misusing_child, NULL);
    trio_nursery_spawn(n, child_with_a_message, NULL);
    trio_nursery_spawn(n, child_without_a_message, NULL);
    return trio_nursery_close(n);
}

static int contains(const char *s, const char *part) {
    return strstr(s, part) != NULL;
}

static int group_detail_lists_every_child(void *arg) {
    char want[700];
    (void)arg;
    CHECK(three_failures() == TRIO_EGROUP, "three failing children give TRIO_EGROUP");
    CHECK(trio_last_error_code() == TRIO_EGROUP, "the last error is the group");
    CHECK(misuse_detail[0] != '\0' && trio_last_error(NULL, 0) > 0, "the misusing child saw a detail");
    snprintf(want, sizeof want, "a C task returned %d (TRIO_EMISUSE: %s)", TRIO_EMISUSE, misuse_detail);
    CHECK(contains(last(), want), "the group names a libtrio code with its call's detail");
    CHECK(contains(last(), "a C task returned -1 (no config file)"),
          "the group names a task's own code with the message given to trio_set_last_error");
    CHECK(contains(last(), "a C task returned -5;"), "a code without a message is named alone");
    /* The main task fails with the group: trio_run's detail has it all. */
    return three_failures();
}

static int sets_a_message_and_succeeds(void *arg) {
    (void)arg;
    trio_set_last_error(TRIO_EINVAL, "someone else's message");
    return 0;
}

static int returns_einval_of_its_own(void *arg) {
    (void)arg;
    /* The sibling runs (and records its message) meanwhile. */
    if (trio_sleep(0.01) != 0) return TRIO_ECANCELED;
    return TRIO_EINVAL;
}

static int a_childs_detail_is_its_own(void *arg) {
    trio_handle_t n = 0;
    (void)arg;
    CHECK(trio_nursery_open(&n) == 0, "open");
    CHECK(trio_nursery_spawn(n, sets_a_message_and_succeeds, NULL) == 0, "spawn the one with a message");
    CHECK(trio_nursery_spawn(n, returns_einval_of_its_own, NULL) == 0, "spawn the one without");
    CHECK(trio_nursery_close(n) == TRIO_EINVAL, "the only failure's code is passed on");
    CHECK(!contains(last(), "someone else's message"), "another task's message is not taken for the child's");
    CHECK(contains(last(), "a C task returned -1001 (TRIO_EINVAL)"), "the code is named");
    return 0;
}

int main(void) {
    int rc;
    setvbuf(stdout, NULL, _IONBF, 0);

    CHECK(trio_set_last_error(-42, "my message") == -42, "trio_set_last_error returns the code");
    CHECK(trio_last_error_code() == -42 && strcmp(last(), "my message") == 0, "and sets code and detail");
    CHECK(trio_set_last_error(0, "x") == TRIO_EINVAL && contains(last(), "code"), "a code of 0 is refused");
    CHECK(trio_set_last_error(5, "x") == TRIO_EINVAL, "a positive code is refused");
    CHECK(trio_set_last_error(-1, NULL) == TRIO_EINVAL && contains(last(), "detail is NULL"),
          "a NULL detail is refused");

    rc = trio_run_mock_clock(group_detail_lists_every_child, NULL);
    CHECK(rc == TRIO_EGROUP, "the run fails with the main task's group");
    CHECK(contains(last(), "a C task returned -1016 (TRIO_EGROUP: "), "trio_run names the main task's code");
    CHECK(contains(last(), misuse_detail) && contains(last(), "no config file") &&
              contains(last(), "a C task returned -5;"),
          "and every child's code and message");

    CHECK(trio_run_mock_clock(a_childs_detail_is_its_own, NULL) == 0, "a child's detail is its own");

    printf("1..%d\n", test_no);
    return 0;
}
