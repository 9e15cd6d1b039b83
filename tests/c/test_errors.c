/* Status codes, trio_strerror, the per-thread error detail
 * (trio_last_error, trio_last_error_code, trio_last_os_error), and how the
 * handle table reports zero, stale, double-closed and wrong-kind handles. */
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "libtrio.h"

#include "check.h"

static const int codes[] = {
    TRIO_EINVAL,      TRIO_EBADHANDLE,    TRIO_ENORUN,       TRIO_ECANCELED,
    TRIO_ETIMEDOUT,   TRIO_ECLOSED,       TRIO_EBROKEN,      TRIO_EBUSY,
    TRIO_EWOULDBLOCK, TRIO_EENDOFCHANNEL, TRIO_EINTERRUPTED, TRIO_EIO,
    TRIO_ENOMEM,      TRIO_EPANIC,        TRIO_EUNSUPPORTED, TRIO_EGROUP,
    TRIO_EUSER,       TRIO_EMISUSE,
};
#define NCODES (sizeof codes / sizeof codes[0])

/* This thread's last error detail (static buffer). */
static const char *detail(void) {
    static char buf[512];
    trio_last_error(buf, sizeof buf);
    return buf;
}

static void check_strerror(void) {
    const char *unknown = trio_strerror(-1);
    size_t i, j;
    CHECK(unknown != NULL && strcmp(unknown, "unknown trio error code") == 0,
          "an unknown code has a string too");
    CHECK(strcmp(trio_strerror(1), unknown) == 0 && strcmp(trio_strerror(INT_MIN), unknown) == 0 &&
              strcmp(trio_strerror(INT_MAX), unknown) == 0 && strcmp(trio_strerror(-22), unknown) == 0,
          "positive, extreme and errno-like values are unknown");
    CHECK(strcmp(trio_strerror(TRIO_OK), "success") == 0, "TRIO_OK is success");
    for (i = 0; i < NCODES; i++) {
        const char *s = trio_strerror(codes[i]);
        CHECK(codes[i] < -1000 && s != NULL && strlen(s) > 0 && strcmp(s, unknown) != 0,
              "every code is negative, below -1000 and named");
        for (j = 0; j < i; j++) {
            if (codes[i] == codes[j] || strcmp(s, trio_strerror(codes[j])) == 0) {
                CHECK(0, "codes and their strings are distinct");
            }
        }
    }
    CHECK(strcmp(trio_strerror(TRIO_ECANCELED), "cancelled") == 0, "TRIO_ECANCELED is 'cancelled'");
}

static void check_last_error_buffers(void) {
    char big[512], small[8], one[1], fit[512];
    int n;
    /* A failure outside a run, with a detail longer than `small`. */
    CHECK(trio_sleep(1.0) == TRIO_ENORUN, "sleep outside a run is TRIO_ENORUN");
    CHECK(trio_last_error_code() == TRIO_ENORUN, "trio_last_error_code says so");
    CHECK(trio_last_os_error() == 0, "no OS error behind it");
    n = trio_last_error(NULL, 0);
    CHECK(n > (int)sizeof small, "NULL, 0 gives the detail's length");
    memset(big, 'x', sizeof big);
    CHECK(trio_last_error(big, sizeof big) == n && (int)strlen(big) == n, "a long buffer gets all of it");
    memset(small, 'x', sizeof small);
    CHECK(trio_last_error(small, sizeof small) == n, "a short buffer gets the full length back");
    CHECK(small[sizeof small - 1] == '\0' && strncmp(small, big, sizeof small - 1) == 0,
          "and a truncated, terminated prefix");
    one[0] = 'x';
    CHECK(trio_last_error(one, 1) == n && one[0] == '\0', "a one-byte buffer gets just the NUL");
    memset(fit, 'x', sizeof fit);
    CHECK(trio_last_error(fit, (size_t)n + 1) == n && strcmp(fit, big) == 0, "length + 1 fits exactly");
    memset(fit, 'x', sizeof fit);
    CHECK(trio_last_error(fit, (size_t)n) == n && (int)strlen(fit) == n - 1, "length alone loses one byte");
    CHECK(trio_last_error(NULL, 0) == n, "reading the detail does not change it");
    CHECK(trio_last_error(NULL, 5) == TRIO_EINVAL, "NULL with a length is refused");
    CHECK(trio_last_error_code() == TRIO_EINVAL && strstr(detail(), "NULL") != NULL,
          "and that refusal is now the last error");
}

static void *other_thread(void *arg) {
    (void)arg;
    if (trio_last_error(NULL, 0) != 0 || trio_last_error_code() != 0) return (void *)1;
    if (trio_checkpoint() != TRIO_ENORUN) return (void *)2;
    if (trio_last_error_code() != TRIO_ENORUN) return (void *)3;
    return NULL;
}

static void check_detail_is_per_thread(void) {
    pthread_t t;
    void *result = (void *)-1;
    char before[512];
    trio_event_set(0);
    strcpy(before, detail());
    CHECK(pthread_create(&t, NULL, other_thread, NULL) == 0 && pthread_join(t, &result) == 0,
          "a second thread runs");
    CHECK(result == NULL, "a new thread starts with no error, and fails on its own");
    CHECK(strcmp(before, detail()) == 0 && trio_last_error_code() == TRIO_EBADHANDLE,
          "another thread's failure leaves this thread's detail alone");
}

static int handles_main(void *arg) {
    trio_handle_t ev = 0, lock = 0;
    (void)arg;
    CHECK(trio_event_set(0) == TRIO_EBADHANDLE, "a zero handle is TRIO_EBADHANDLE");
    CHECK(strstr(detail(), "handle is 0") != NULL, "and the detail says it is 0");
    CHECK(trio_event_set(0x12345) == TRIO_EBADHANDLE && strstr(detail(), "not a trio handle") != NULL,
          "a made-up number is not a trio handle");
    CHECK(trio_event_new(&ev) == 0 && ev != 0, "an event");
    CHECK(trio_lock_new(&lock) == 0 && lock != 0 && lock != ev, "a lock");
    CHECK(trio_event_set(lock) == TRIO_EBADHANDLE, "a lock is not an event");
    CHECK(strstr(detail(), "is a lock, expected an event") != NULL, "and the detail names both kinds");
    CHECK(trio_lock_acquire(ev) == TRIO_EBADHANDLE && strstr(detail(), "is an event, expected a lock") != NULL,
          "nor is an event a lock");
    CHECK(trio_event_set(ev) == 0, "the event still works");
    CHECK(trio_event_close(ev) == 0, "close the event");
    CHECK(trio_event_close(ev) == TRIO_EBADHANDLE, "a double close is TRIO_EBADHANDLE");
    CHECK(strstr(detail(), "stale") != NULL, "and the detail says the handle is stale");
    CHECK(trio_event_set(ev) == TRIO_EBADHANDLE, "a closed handle is not used");
    {
        /* The freed slot is reused, under a new generation: the old handle
         * must not reach the new object. */
        trio_handle_t ev2 = 0;
        CHECK(trio_event_new(&ev2) == 0 && ev2 != ev, "a new event gets a new handle");
        CHECK(trio_event_is_set(ev) == TRIO_EBADHANDLE && trio_event_is_set(ev2) == 0,
              "the stale handle does not reach the new event");
        CHECK(trio_event_close(ev2) == 0, "close the new event");
    }
    CHECK(trio_lock_close(lock) == 0, "close the lock");
    return 0;
}

int main(void) {
    check_strerror();
    check_last_error_buffers();
    check_detail_is_per_thread();
    CHECK(trio_run(handles_main, NULL) == 0, "handle checks inside a run");
    printf("1..%d\n", test_no);
    return 0;
}
