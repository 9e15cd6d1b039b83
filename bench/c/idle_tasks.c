/* Resident memory of N idle C tasks (default 10000): each task sleeps
 * "forever"; once all are started, the resident set size is read from
 * /proc/self/statm, then the nursery is cancelled. Prints KiB per task.
 *   idle_tasks [N [STACK_KIB]]                                          */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "libtrio.h"

static long n_tasks = 10000;
static long started = 0;

static long rss_kib(void) {
    long size = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f) return -1;
    if (fscanf(f, "%ld %ld", &size, &resident) != 2) resident = -1;
    fclose(f);
    return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

static int idle(void *arg) {
    (void)arg;
    started++;
    return trio_sleep(1e9) == TRIO_ECANCELED ? 0 : -1;
}

static int main_task(void *arg) {
    trio_handle_t n = 0;
    long before, after, i;
    (void)arg;
    before = rss_kib();
    if (trio_nursery_open(&n) != 0) return -1;
    for (i = 0; i < n_tasks; i++) {
        if (trio_nursery_spawn(n, idle, NULL) != 0) return -2;
    }
    /* Let every task run up to its sleep. */
    while (started < n_tasks) {
        if (trio_sleep(0.001) != 0) return -3;
    }
    after = rss_kib();
    printf("%ld idle C tasks: RSS %ld KiB -> %ld KiB, %.2f KiB per task\n", n_tasks, before, after,
           (double)(after - before) / (double)n_tasks);
    trio_nursery_cancel(n);
    return trio_nursery_close(n);
}

int main(int argc, char **argv) {
    if (argc > 1) n_tasks = atol(argv[1]);
    if (argc > 2 && trio_set_stack_size((size_t)atol(argv[2]) * 1024) != 0) return 2;
    return trio_run(main_task, NULL) == 0 ? 0 : 1;
}
