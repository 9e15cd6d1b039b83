/* A small program built by tests/cmake/CMakeLists.txt against an installed
 * libtrio: a run with a nursery of C tasks that each set a slot, waited
 * for by the nursery. Written in C89 (CMakeLists.txt compiles it so).
 * Prints `ok N - name` lines like tests/c/. */
#include <libtrio.h>
#include <stdio.h>

#define TASKS 4

static int done[TASKS];

static int child(void *arg) {
    int *slot = (int *)arg;
    int rc = trio_sleep(0.0);
    if (rc < 0) {
        return rc;
    }
    *slot = 1;
    return 0;
}

static int main_task(void *arg) {
    trio_handle_t nursery = 0;
    int i, rc;
    (void)arg;
    rc = trio_nursery_open(&nursery);
    if (rc < 0) {
        return rc;
    }
    for (i = 0; i < TASKS; i++) {
        rc = trio_nursery_spawn(nursery, child, &done[i]);
        if (rc < 0) {
            break;
        }
    }
    {
        int closed = trio_nursery_close(nursery);
        return rc < 0 ? rc : closed;
    }
}

int main(void) {
    int i, rc = trio_run(main_task, NULL);
    if (rc < 0) {
        char detail[256];
        trio_last_error(detail, sizeof detail);
        printf("not ok 1 - trio_run: %s (%s)\n", trio_strerror(rc), detail);
        return 1;
    }
    printf("ok 1 - trio_run returned %d\n", rc);
    for (i = 0; i < TASKS; i++) {
        if (!done[i]) {
            printf("not ok 2 - task %d did not run\n", i);
            return 1;
        }
    }
    printf("ok 2 - %d tasks ran\n", TASKS);
    printf("ok 3 - trio_strerror(TRIO_EINVAL) is \"%s\"\n", trio_strerror(TRIO_EINVAL));
    return 0;
}
