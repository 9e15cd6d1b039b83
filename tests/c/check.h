/* The check macro every C test program uses: prints TAP-like
 * "ok N - name" lines, and at the first failure "not ok N - name" with the
 * file, the line and libtrio's last error detail, then exits 1. */
#ifndef TRIO_TEST_CHECK_H
#define TRIO_TEST_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#include "libtrio.h"

static int test_no = 0;

#define CHECK(cond, name)                                                      \
    do {                                                                       \
        int ok_ = (cond);                                                      \
        test_no++;                                                             \
        if (!ok_) {                                                            \
            char detail_[1024];                                                \
            trio_last_error(detail_, sizeof detail_);                          \
            printf("not ok %d - %s (%s:%d; last error: %s)\n", test_no, name,  \
                   __FILE__, __LINE__, detail_);                               \
            exit(1);                                                           \
        }                                                                      \
        printf("ok %d - %s\n", test_no, name);                                 \
        fflush(stdout);                                                        \
    } while (0)

#endif
