// The second translation unit of cpp_two_unit_a.cpp's program.
#include <trio.hpp>

#include <stdexcept>

int unit_b_spawn_children(trio::nursery &n, int *counter) {
    for (int i = 0; i < 3; i++) {
        n.spawn([counter] {
            trio::sleep(0.5);
            (*counter)++;
        });
    }
    return 0;
}

int unit_b_run(int value) {
    return trio::run_mock_clock([value] {
        trio::open_nursery([](trio::nursery &n) { n.spawn([] { trio::sleep(1); }); });
        return value;
    });
}

void unit_b_record_destructor_error() {
    trio::detail::record_destructor_error(std::make_exception_ptr(std::runtime_error("from unit b")));
}

const void *unit_b_check_address() { return reinterpret_cast<const void *>(&trio::check); }

const void *unit_b_trampoline_address() {
    return reinterpret_cast<const void *>(&trio::detail::trio_cpp_trampoline);
}
