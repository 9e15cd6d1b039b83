// libtrio.h in two C++17 translation units linked into one program: the
// header must hold only declarations (no definitions that would collide at
// link time) and its extern "C" names must link against libtrio from C++.
// This unit has main(); cpp_include_unit_b.cpp is the other unit.
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "libtrio.h"

int cpp_include_unit_b(void);

static int test_no = 0;

static void check(bool ok, const char *name) {
    ++test_no;
    std::printf("%s %d - %s\n", ok ? "ok" : "not ok", test_no, name);
    if (!ok) std::exit(1);
}

int main() {
    check(std::strcmp(trio_strerror(TRIO_ECANCELED), "cancelled") == 0, "trio_strerror from C++");
    trio_handle_t h = 0;
    check(trio_event_set(h) == TRIO_EBADHANDLE, "a zero handle from C++");
    char buf[64];
    check(trio_last_error(buf, sizeof buf) > 0 && std::strstr(buf, "handle is 0") != nullptr,
          "the detail from C++");
    check(cpp_include_unit_b() == 0, "the other translation unit calls libtrio too");
    std::printf("1..%d\n", test_no);
    return 0;
}
