// Two translation units including trio.hpp, linked into one program (with
// cpp_two_unit_b.cpp): everything in the header is inline, so there are no
// duplicate symbols and the inline functions and thread-local state are
// one across the units (no ODR violation).
#include <trio.hpp>

#include <cstdio>
#include <cstdlib>
#include <stdexcept>

static int test_no = 0;

#define CHECK(cond, name)                                                               \
    do {                                                                                \
        bool ok_ = (cond);                                                              \
        test_no++;                                                                      \
        if (!ok_) {                                                                     \
            std::printf("not ok %d - %s (%s:%d)\n", test_no, name, __FILE__, __LINE__); \
            std::exit(1);                                                               \
        }                                                                               \
        std::printf("ok %d - %s\n", test_no, name);                                     \
    } while (0)

// Defined in cpp_two_unit_b.cpp.
int unit_b_spawn_children(trio::nursery &n, int *counter);
int unit_b_run(int value);
void unit_b_record_destructor_error();
const void *unit_b_check_address();
const void *unit_b_trampoline_address();

int main() {
    std::setvbuf(stdout, nullptr, _IONBF, 0);
    CHECK(unit_b_check_address() == reinterpret_cast<const void *>(&trio::check),
          "trio::check has one address in both units");
    CHECK(unit_b_trampoline_address() == reinterpret_cast<const void *>(&trio::detail::trio_cpp_trampoline),
          "the C trampoline has one address in both units");
    CHECK(unit_b_run(7) == 7, "a run started in unit b");
    int counter = 0;
    int rc = trio::run_mock_clock([&] {
        trio::open_nursery([&](trio::nursery &n) {
            n.spawn([&] {
                trio::sleep(1);
                counter += 100;
            });
            unit_b_spawn_children(n, &counter);
        });
        return counter;
    });
    CHECK(rc == 103, "a nursery opened in unit a gets children from both units");
    unit_b_record_destructor_error();
    CHECK(trio::take_destructor_error() != nullptr, "the thread-local error slot is shared by the units");
    std::printf("1..%d\n", test_no);
    return 0;
}
