/* happy_path.c: the C API in one page. A producer and a consumer talk over
 * a memory channel inside a nursery; a cancel scope gives the whole thing a
 * deadline. The producer would go on for 10 seconds; the deadline stops
 * both tasks after 0.35 s, the nursery waits for them, and the scope
 * reports that it caught the cancellation.
 *
 * Build (from the repository, after `cargo build -p trio-ffi`):
 *   cc -std=c99 -Wall -Wextra -Werror -pedantic -Iinclude \
 *      examples/c/happy_path.c $CARGO_TARGET_DIR/debug/libtrio.a \
 *      -lgcc_s -lutil -lrt -lpthread -lm -ldl -o happy_path
 * or, installed: cc happy_path.c $(pkg-config --cflags --libs trio)
 */
#include <stdio.h>

#include "libtrio.h"

struct pipeline {
    trio_handle_t tx, rx; /* the channel's two ends */
    int values[100];      /* what the pointers sent point to */
    int produced, consumed, sum;
};

/* Sends 100 values, one every 0.1 s, then closes its end of the channel. */
static int producer(void *arg) {
    struct pipeline *p = (struct pipeline *)arg;
    int rc = 0, i;
    for (i = 0; i < 100 && rc == 0; i++) {
        p->values[i] = i + 1;
        rc = trio_channel_send(p->tx, &p->values[i]);
        if (rc == 0) {
            p->produced++;
            rc = trio_sleep(0.1);
        }
    }
    trio_channel_close_sender(p->tx); /* the consumer sees the end */
    return rc;                        /* TRIO_ECANCELED: passed on to the scope */
}

/* Receives until the end of the channel (or a cancellation). */
static int consumer(void *arg) {
    struct pipeline *p = (struct pipeline *)arg;
    for (;;) {
        void *v = NULL;
        int rc = trio_channel_receive(p->rx, &v);
        if (rc == TRIO_EENDOFCHANNEL) return 0;
        if (rc != 0) return rc;
        p->consumed++;
        p->sum += *(int *)v;
        printf("consumer: got %d\n", *(int *)v);
    }
}

static void report(const char *what, int rc) {
    char detail[256];
    trio_last_error(detail, sizeof detail);
    fprintf(stderr, "%s failed: %s (%s)\n", what, trio_strerror(rc), detail);
}

static int main_task(void *arg) {
    struct pipeline *p = (struct pipeline *)arg;
    trio_handle_t scope = 0, nursery = 0;
    double t0 = 0, t1 = 0;
    int rc, caught;

    if ((rc = trio_channel_open(0, &p->tx, &p->rx)) != 0) return report("channel_open", rc), rc;
    trio_now(&t0);
    if ((rc = trio_cancel_scope_open(0.35, 0, &scope)) != 0) return report("cancel_scope_open", rc), rc;
    if ((rc = trio_nursery_open(&nursery)) != 0) return report("nursery_open", rc), rc;
    if ((rc = trio_nursery_spawn(nursery, producer, p)) != 0) report("spawn", rc);
    if (rc == 0 && (rc = trio_nursery_spawn(nursery, consumer, p)) != 0) report("spawn", rc);
    /* Waits for both children; the deadline cancels them (and this close
     * then says TRIO_ECANCELED: the cancellation belongs to the scope). */
    rc = trio_nursery_close(nursery);
    if (rc != 0 && rc != TRIO_ECANCELED) report("nursery_close", rc);
    caught = trio_cancel_scope_close(scope);
    trio_now(&t1);
    trio_channel_close_receiver(p->rx);
    printf("deadline %s after %.2f s: %d produced, %d consumed (sum %d)\n",
           caught == 1 ? "reached" : "not reached", t1 - t0, p->produced, p->consumed, p->sum);
    return caught == 1 && p->consumed > 0 && p->consumed == p->produced ? 0 : -1;
}

int main(void) {
    struct pipeline p = {0, 0, {0}, 0, 0, 0};
    int rc = trio_run(main_task, &p);
    if (rc != 0) {
        report("trio_run", rc);
        return 1;
    }
    return 0;
}
