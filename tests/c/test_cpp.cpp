// The C++ wrapper bindings/cpp/trio.hpp: runs, nurseries of lambdas,
// exceptions crossing tasks, cancel scopes, RAII, sync objects, sockets.
// Prints TAP-like "ok N - name" lines; exits 1 at the first failure.
#include <trio.hpp>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

static int test_no = 0;

#define CHECK(cond, name)                                                                   \
    do {                                                                                    \
        bool ok_ = (cond);                                                                  \
        test_no++;                                                                          \
        if (!ok_) {                                                                         \
            std::printf("not ok %d - %s (%s:%d)\n", test_no, name, __FILE__, __LINE__);     \
            std::exit(1);                                                                   \
        }                                                                                   \
        std::printf("ok %d - %s\n", test_no, name);                                         \
    } while (0)

// Runs `f` and says whether it threw E (and keeps what() / code).
template <class E, class F>
static bool throws(F &&f, std::string *what = nullptr) {
    try {
        f();
    } catch (const E &e) {
        if (what) *what = e.what();
        return true;
    } catch (...) {
        return false;
    }
    return false;
}

static void nursery_of_lambdas() {
    std::vector<int> order;
    trio::open_nursery([&](trio::nursery &n) {
        for (int i : {3, 1, 2}) {
            n.spawn([&order, i] {
                trio::sleep(0.01 * i);
                order.push_back(i);
            });
        }
    });
    CHECK((order == std::vector<int>{1, 2, 3}), "lambdas capturing by reference ran in the order of their sleeps");

    int total = 0;
    {
        trio::nursery n;
        for (int i = 1; i <= 10; i++) n.spawn([&total, i] { total += i; return 0; });
        n.close();
        n.close(); // a second close does nothing
    }
    CHECK(total == 55, "explicit close() waits for every child");

    // A move-only callable.
    auto p = std::make_unique<int>(7);
    int got = 0;
    trio::open_nursery([&](trio::nursery &n) { n.spawn([q = std::move(p), &got] { got = *q; }); });
    CHECK(got == 7, "a move-only lambda can be spawned");

    // Children spawning into the parent's nursery (while its body is still
    // running: trio_nursery_close frees the handle before it waits).
    int grandchildren = 0;
    trio::open_nursery([&](trio::nursery &n) {
        n.spawn([&] {
            for (int i = 0; i < 3; i++) n.spawn([&] { grandchildren++; });
        });
        trio::sleep(1);
    });
    CHECK(grandchildren == 3, "a child spawns siblings through the nursery reference");
}

static void exceptions_in_children() {
    bool sibling_cancelled = false;
    bool parent_cancelled = false;
    double t0 = trio::now();
    std::string what;
    bool threw = throws<std::logic_error>(
        [&] {
            trio::open_nursery([&](trio::nursery &n) {
                n.spawn([&] {
                    try {
                        trio::sleep(100);
                    } catch (const trio::cancelled &) {
                        sibling_cancelled = true;
                        throw;
                    }
                });
                n.spawn([] {
                    trio::sleep(0.5);
                    throw std::logic_error("child failed");
                });
                try {
                    trio::sleep(100);
                } catch (const trio::cancelled &) {
                    parent_cancelled = true;
                    throw;
                }
            });
        },
        &what);
    CHECK(threw && what == "child failed", "a child's exception is rethrown, with its type, when the nursery closes");
    CHECK(sibling_cancelled, "the failing child cancelled its sibling");
    CHECK(parent_cancelled, "and the body of the nursery");
    CHECK(trio::now() - t0 < 1.0, "nobody waited for the 100 s sleeps");

    // trio::error thrown by a child keeps its code.
    int code = 0;
    try {
        trio::nursery n;
        n.spawn([] { throw trio::error(TRIO_EBROKEN, "peer gone"); });
        n.close();
    } catch (const trio::error &e) {
        code = e.code();
    }
    CHECK(code == TRIO_EBROKEN, "a child's trio::error keeps its code");

    // A child returning its own negative status.
    code = 0;
    std::string msg;
    try {
        trio::nursery n;
        n.spawn([] { return -77; });
        n.close();
    } catch (const trio::error &e) {
        code = e.code();
        msg = e.what();
    }
    CHECK(code == -77, "a child's negative return value becomes trio::error");

    // Two failures at once: TRIO_EGROUP.
    code = 0;
    try {
        trio::nursery n;
        n.spawn([] { throw std::runtime_error("one"); });
        n.spawn([] { throw std::runtime_error("two"); });
        n.close();
    } catch (const trio::error &e) {
        code = e.code();
        msg = e.what();
    }
    CHECK(code == TRIO_EGROUP, "two failing children give TRIO_EGROUP");
    CHECK(msg.find("several") != std::string::npos, "with trio_strerror's message");
    CHECK(msg.find("(TRIO_EUSER: one)") != std::string::npos && msg.find("(TRIO_EUSER: two)") != std::string::npos,
          "and each child's code and message");

    // nursery.cancel() is absorbed by the nursery.
    bool finished = false;
    trio::open_nursery([&](trio::nursery &n) {
        n.spawn([] { trio::sleep(100); });
        n.spawn([&n] {
            trio::sleep(1);
            n.cancel();
        });
        trio::sleep(100);
        finished = true;
    });
    CHECK(!finished, "nursery.cancel() stopped the body and children, and open_nursery returned normally");
}

static void nursery_start() {
    int port = 0;
    bool served = false;
    trio::open_nursery([&](trio::nursery &n) {
        void *v = n.start([&](trio::task_status &status) {
            trio::sleep(0.01);
            port = 4242;
            status.started(&port);
            CHECK(throws<trio::error>([&] { status.started(nullptr); }), "started twice throws");
            trio::sleep(0.02);
            served = true;
        });
        CHECK(v == &port && port == 4242, "start returns the started value");
        CHECK(!served, "the started task runs on in the nursery");
    });
    CHECK(served, "the nursery waited for the started task");

    std::string what;
    bool caught = false;
    trio::open_nursery([&](trio::nursery &n) {
        caught = throws<std::runtime_error>(
            [&] { n.start([](trio::task_status &) { throw std::runtime_error("setup failed"); }); }, &what);
    });
    CHECK(caught && what == "setup failed", "an exception before started comes out of start");

    int code = 0;
    trio::open_nursery([&](trio::nursery &n) {
        try {
            n.start([](trio::task_status &) { return 0; });
        } catch (const trio::error &e) {
            code = e.code();
        }
    });
    CHECK(code == TRIO_EMISUSE, "returning without started is TRIO_EMISUSE");

    caught = throws<std::logic_error>(
        [&] {
            trio::open_nursery([&](trio::nursery &n) {
                n.start([](trio::task_status &status) {
                    status.started();
                    trio::sleep(0.01);
                    throw std::logic_error("after start");
                });
                trio::sleep(10);
            });
        },
        &what);
    CHECK(caught && what == "after start", "an exception after started goes to the nursery");
}

static void cancel_scopes() {
    double t0 = trio::now();
    bool cancelled = false;
    bool caught = false;
    {
        trio::cancel_scope scope(2.0);
        try {
            trio::sleep(100);
        } catch (const trio::cancelled &) {
            cancelled = true;
        }
        caught = scope.close();
    }
    double elapsed = trio::now() - t0;
    CHECK(cancelled && caught, "a cancel_scope timeout cancels the sleep and is caught");
    CHECK(elapsed >= 2.0 && elapsed < 2.5, "after the 2 s deadline (mock clock)");

    CHECK(trio::move_on_after(1.0, [] { trio::sleep(10); }), "move_on_after: the deadline fired");
    CHECK(!trio::move_on_after(10.0, [] { trio::sleep(1); }), "move_on_after: finished in time");

    // An outer cancellation passes through an inner scope.
    bool outer_caught = false;
    bool inner_rethrew = false;
    {
        trio::cancel_scope outer;
        outer.cancel();
        try {
            trio::move_on_after(10.0, [] { trio::sleep(1); });
        } catch (const trio::cancelled &) {
            inner_rethrew = true;
        }
        outer_caught = outer.close();
    }
    CHECK(inner_rethrew && outer_caught, "an outer cancellation passes through move_on_after to its scope");

    // Shield.
    {
        trio::cancel_scope outer;
        outer.cancel();
        {
            trio::cancel_scope shield(-1, true);
            trio::sleep(0.5); // does not throw
            CHECK(!shield.close(), "a shielded scope runs inside a cancelled one");
        }
        CHECK(throws<trio::cancelled>([] { trio::checkpoint(); }), "outside the shield the cancellation is delivered");
        CHECK(outer.close(), "and caught by the outer scope");
    }
}

static void raii() {
    // The destructor waits for the children on a normal scope exit.
    int done = 0;
    {
        trio::nursery n;
        n.spawn([&] {
            trio::sleep(1);
            done++;
        });
    }
    CHECK(done == 1, "the nursery destructor waits for its children");

    // The scope destructor closes the scope: its handle becomes stale.
    trio_handle_t h = 0;
    {
        trio::cancel_scope s(5.0);
        h = s.handle();
        trio::sleep(0.1);
    }
    CHECK(trio_cancel_scope_cancel(h) == TRIO_EBADHANDLE, "the cancel_scope destructor closed the scope");

    // Sync objects close in their destructors.
    trio_handle_t ev = 0;
    {
        trio::event e1;
        ev = e1.handle();
    }
    CHECK(trio_event_set(ev) == TRIO_EBADHANDLE, "the event destructor closed it");
}

static void raii_with_exceptions() {
    // During unwinding the destructor cancels the children first.
    bool child_cancelled = false;
    double t0 = trio::now();
    try {
        trio::nursery n;
        n.spawn([&] {
            try {
                trio::sleep(100);
            } catch (const trio::cancelled &) {
                child_cancelled = true;
                throw;
            }
        });
        trio::sleep(0.1);
        throw std::runtime_error("body failed");
    } catch (const std::runtime_error &) {
    }
    CHECK(child_cancelled && trio::now() - t0 < 1.0, "unwinding cancels the nursery instead of waiting");
    CHECK(!trio::take_destructor_error(), "nothing was recorded for a clean cancellation");

    // A failure seen only by the destructor is recorded.
    {
        trio::nursery n;
        n.spawn([] { throw std::runtime_error("lost?"); });
    }
    std::exception_ptr e = trio::take_destructor_error();
    CHECK(e != nullptr, "a child failure swallowed by the destructor is recorded");
    CHECK(throws<std::runtime_error>([&] { std::rethrow_exception(e); }), "with its type");
    CHECK(!trio::take_destructor_error(), "and taken once");


    // Spawning into a closed nursery frees the callable and throws.
    auto token = std::make_shared<int>(1);
    trio_handle_t nh = 0;
    {
        trio::nursery n;
        nh = n.handle();
        n.close();
        int code = 0;
        try {
            n.spawn([token] { return *token; });
        } catch (const trio::error &err) {
            code = err.code();
        }
        CHECK(code == TRIO_EBADHANDLE, "spawning into a closed nursery throws TRIO_EBADHANDLE");
    }
    CHECK(token.use_count() == 1, "the callable of a failed spawn was freed");
    CHECK(trio_nursery_close(nh) == TRIO_EBADHANDLE, "the nursery handle is stale");

}

static void more_sync_objects() {
    // A semaphore with a maximum.
    trio::semaphore bounded(1, 1);
    int code = 0;
    try {
        bounded.release();
    } catch (const trio::error &e) {
        code = e.code();
    }
    CHECK(code == TRIO_EMISUSE, "releasing past the maximum throws TRIO_EMISUSE");
    auto sst = bounded.statistics();
    CHECK(sst.value == 1 && sst.has_max == 1 && sst.max_value == 1, "semaphore statistics");
    CHECK(throws<trio::error>([] { trio::semaphore bad(2, 1); }), "initial above max throws");

    // A condition: three waiters, notified one then all.
    trio::condition cond;
    bool ready = false;
    int woken = 0;
    trio::open_nursery([&](trio::nursery &n) {
        for (int i = 0; i < 3; i++) {
            n.spawn([&] {
                trio::condition_guard g(cond);
                while (!ready) cond.wait();
                woken++;
            });
        }
        trio::sleep(1);
        CHECK(cond.statistics().tasks_waiting == 3, "three tasks wait on the condition");
        CHECK(throws<trio::error>([&] { cond.notify(); }), "notify without the lock throws");
        {
            trio::condition_guard g(cond);
            ready = true;
            CHECK(cond.notify() == 1, "notify wakes one");
        }
        trio::sleep(1);
        CHECK(woken == 1, "one got through");
        trio::condition_guard g(cond);
        CHECK(cond.notify_all() == 2, "notify_all wakes the rest");
    });
    CHECK(woken == 3, "every waiter got through");

    // A cancelled wait throws trio::cancelled holding the lock again.
    bool held_after = false;
    trio::move_on_after(1, [&] {
        trio::condition_guard g(cond);
        try {
            cond.wait();
        } catch (const trio::cancelled &) {
            held_after = cond.statistics().lock_locked == 1;
            throw;
        }
    });
    CHECK(held_after, "a cancelled wait holds the lock again");
    CHECK(cond.statistics().lock_locked == 0, "and the guard released it");

    // A capacity limiter.
    trio::capacity_limiter lim(1);
    int inside = 0, max_inside = 0;
    trio::open_nursery([&](trio::nursery &n) {
        for (int i = 0; i < 3; i++) {
            n.spawn([&] {
                lim.acquire();
                if (++inside > max_inside) max_inside = inside;
                trio::sleep(1);
                inside--;
                lim.release();
            });
        }
        trio::sleep(0.5);
        CHECK(lim.borrowed_tokens() == 1 && lim.available_tokens() == 0 && lim.statistics().tasks_waiting == 2,
              "one token out, two tasks wait");
        lim.set_total_tokens(2);
    });
    CHECK(max_inside == 2, "raising the total let a second task in");
    CHECK(lim.total_tokens() == 2 && lim.borrowed_tokens() == 0, "every token back");
    CHECK(throws<trio::error>([&] { lim.release(); }), "releasing a token not held throws");
    CHECK(lim.try_acquire() && !throws<trio::error>([&] { lim.release(); }), "try_acquire and release");
}

static void sync_objects() {
    trio::event ready;
    trio::lock lk;
    trio::semaphore sem(2);
    int inside = 0, max_inside = 0, in_lock = 0;
    bool overlap = false;
    trio::open_nursery([&](trio::nursery &n) {
        for (int i = 0; i < 5; i++) {
            n.spawn([&] {
                ready.wait();
                sem.acquire();
                inside++;
                if (inside > max_inside) max_inside = inside;
                trio::sleep(0.1);
                inside--;
                sem.release();
                trio::lock_guard g(lk);
                if (in_lock++) overlap = true;
                trio::sleep(0.1);
                in_lock--;
            });
        }
        trio::sleep(1);
        CHECK(max_inside == 0, "the children wait for the event");
        ready.set();
    });
    CHECK(ready.is_set(), "event set");
    CHECK(max_inside == 2, "the semaphore let two in at a time");
    CHECK(!overlap, "the lock_guard excluded");
    CHECK(sem.value() == 2, "every permit returned");

    // A channel of int*: producer/consumer.
    std::vector<int> values = {1, 2, 3, 4, 5};
    int sum = 0;
    {
        auto [tx, rx] = trio::open_channel<int>(1);
        trio::open_nursery([&, &tx = tx, &rx = rx](trio::nursery &n) {
            n.spawn([&values, s = std::move(tx)]() mutable {
                for (int &v : values) s.send(&v);
                // s closes when the task ends: end of channel.
            });
            n.spawn([&sum, r = std::move(rx)]() mutable {
                int *p = nullptr;
                while (r.receive(p)) sum += *p;
            });
        });
    }
    CHECK(sum == 15, "a channel of pointers between two lambdas, closed by RAII");
    more_sync_objects();
}

static void threads() {
    CHECK(trio::to_thread([] { return 6 * 7; }) == 42, "to_thread returns the worker's value");
    int ticks = 0;
    trio::open_nursery([&](trio::nursery &n) {
        n.spawn([&] {
            trio::to_thread([] { std::this_thread::sleep_for(std::chrono::milliseconds(50)); });
            n.cancel();
        });
        while (trio_sleep(0.001) == 0) ticks++; // the C API: no exception at the cancel
    });
    CHECK(ticks > 0, "the run goes on while a worker blocks");

    trio::token tok = trio::token::current();
    int got = trio::to_thread([&tok] {
        // On the worker: back into the run for a task that may sleep.
        return trio::from_thread_run(tok, [] {
            trio::sleep(1);
            return 5;
        });
    });
    CHECK(got == 5, "from_thread_run through a token runs a task in the run");
}

static void thread_exceptions() {
    std::string what;
    CHECK(throws<std::domain_error>([] { trio::to_thread([]() -> int { throw std::domain_error("worker"); }); },
                                    &what) &&
              what == "worker",
          "an exception on the worker thread is rethrown in the task");
    trio::token tok = trio::token::current();
    int code = trio::to_thread([&tok] {
        try {
            trio::from_thread_run(tok, [] { throw std::length_error("in the run"); });
        } catch (const std::length_error &) {
            return 1;
        }
        return 0;
    });
    CHECK(code == 1, "an exception of a from_thread_run task is rethrown on the calling thread");
}

static void sockets() {
    // Real clock: an echo over loopback.
    std::string reply;
    trio::run([&] {
        trio::listener l = trio::listener::tcp("127.0.0.1", 0);
        std::uint16_t port = l.port();
        trio::open_nursery([&](trio::nursery &n) {
            n.spawn([&] {
                trio::stream s = l.accept();
                for (;;) {
                    std::string data = s.receive_some(1024);
                    if (data.empty()) break;
                    s.send_all(data);
                }
            });
            trio::stream c = trio::stream::connect_tcp("127.0.0.1", port);
            c.send_all(std::string("hello"));
            c.send_eof();
            for (;;) {
                std::string data = c.receive_some(1024);
                if (data.empty()) break;
                reply += data;
            }
        });
    });
    CHECK(reply == "hello", "echo over a TCP stream, sockets closed by RAII");
}

static int nested_run_refused() {
    int code = 0;
    try {
        trio::run([] { return 1; });
    } catch (const trio::error &e) {
        code = e.code();
    }
    CHECK(code == TRIO_ENORUN, "run() inside a run throws TRIO_ENORUN (and frees the callable)");
    return 0;
}

// Everything runs under AddressSanitizer too, exceptions thrown on task
// stacks included: ffi/src/task.rs tells ASan about every stack switch.
int main() {
    std::setvbuf(stdout, nullptr, _IONBF, 0);
    CHECK(trio::run([] { return 42; }) == 42, "run returns the callable's int");
    CHECK(trio::run_mock_clock([] {}) == 0, "a void callable gives 0");
    CHECK(throws<trio::error>([] { trio::sleep(1); }), "sleep outside a run throws");
    int code = 0;
    try {
        trio::run([] { return -5; });
    } catch (const trio::error &e) {
        code = e.code();
    }
    CHECK(code == -5, "a negative return becomes trio::error");

    trio::run_mock_clock([] {
        nursery_of_lambdas();
        raii();
        sync_objects();
        threads();
    });
    sockets();

    // A group leaving run(): every child's message is in what().
    std::string what;
    code = 0;
    try {
        trio::run_mock_clock([] {
            trio::open_nursery([](trio::nursery &n) {
                n.spawn([] { throw std::runtime_error("child one failed"); });
                n.spawn([] {
                    trio::lock l;
                    l.release(); // not held: TRIO_EMISUSE with a detail
                });
                n.spawn([] { throw 7; });
            });
        });
    } catch (const trio::error &e) {
        code = e.code();
        what = e.what();
    }
    CHECK(code == TRIO_EGROUP, "a group leaves run() as TRIO_EGROUP");
    CHECK(what.find("child one failed") != std::string::npos, "run()'s what() has a std::exception's message");
    CHECK(what.find("TRIO_EMISUSE: runtime misuse: ") != std::string::npos,
          "and a trio::error's code and detail");
    CHECK(what.find("not a std::exception") != std::string::npos, "and says what the other exception was");
    CHECK(throws<std::out_of_range>([] { trio::run_mock_clock([] { throw std::out_of_range("main"); }); },
                                    &what) &&
              what == "main",
          "an exception of the main callable is rethrown by run()");
    trio::run_mock_clock([] {
        exceptions_in_children();
        nursery_start();
        cancel_scopes();
        raii_with_exceptions();
        thread_exceptions();
        return nested_run_refused();
    });
    std::printf("1..%d\n", test_no);
    return 0;
}
