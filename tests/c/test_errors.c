/* Status codes, trio_strerror and trio_last_error. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "libtrio.h"

static int test_no = 0;

#define CHECK(cond, name)                                                      \
    do {                                                                       \
        int ok_ = (cond);                                                      \
        test_no++;                                                             \
        if (!ok_) {                                                            \
            printf("not ok %d - %s (%s:%d)\n", test_no, name, __FILE__,        \
                   __LINE__);                                                  \
            exit(1);                                                           \
        }                                                                      \
        printf("ok %d - %s\n", test_no, name);                                 \
    } while (0)

int main(void) {
    static const int codes[] = {TRIO_EINVAL,  TRIO_EBADHANDLE, TRIO_ENORUN,     TRIO_ECANCELED,
                                TRIO_ETIMEDOUT, TRIO_ECLOSED,  TRIO_EBROKEN,    TRIO_EBUSY,
                                TRIO_EWOULDBLOCK, TRIO_EENDOFCHANNEL, TRIO_EIO, TRIO_ENOMEM,
                                TRIO_EPANIC,  TRIO_EUNSUPPORTED, TRIO_EGROUP,   TRIO_EUSER};
    size_t i, j;
    char small[8], big[256];
    int n;
    const char *unknown = trio_strerror(-1);

    CHECK(strcmp(unknown, "unknown trio error code") == 0, "an unknown code has a string too");
    for (i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        const char *s = trio_strerror(codes[i]);
        CHECK(codes[i] < 0 && s != NULL && strlen(s) > 0 && strcmp(s, unknown) != 0, "a named code");
        for (j = 0; j < i; j++) CHECK(codes[i] != codes[j], "codes are distinct");
    }
    CHECK(trio_strerror(0) != NULL, "TRIO_OK has a string");

    /* Make a failure with a long detail, then read it back. */
    CHECK(trio_sleep(1.0) == TRIO_ENORUN, "sleep outside a run fails");
    n = trio_last_error(NULL, 0);
    CHECK(n > 8, "the detail's length with a NULL buffer");
    CHECK(trio_last_error(small, sizeof small) == n, "a short buffer gets the full length back");
    CHECK(strlen(small) == sizeof small - 1, "and a truncated, terminated copy");
    CHECK(trio_last_error(big, sizeof big) == n && (int)strlen(big) == n, "a long buffer gets all of it");
    CHECK(trio_last_error(NULL, 5) == TRIO_EINVAL, "NULL with a length is refused");
    CHECK(trio_last_error_code() == TRIO_EINVAL, "and that is now the last error");
    printf("1..%d\n", test_no);
    return 0;
}
