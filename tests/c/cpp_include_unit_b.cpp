// The second translation unit of cpp_include (see cpp_include_unit_a.cpp).
#include <cstring>

#include "libtrio.h"

// Uses the header's constants, typedefs and functions from a second unit.
int cpp_include_unit_b(void) {
    trio_task_fn no_task = nullptr;
    if (trio_run(no_task, nullptr) != TRIO_EINVAL) return 1;
    if (trio_last_error_code() != TRIO_EINVAL) return 2;
    if (std::strcmp(trio_strerror(-1), "unknown trio error code") != 0) return 3;
    return 0;
}
