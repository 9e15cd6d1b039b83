/*
 * trio.hpp: a header-only C++17 wrapper over libtrio.h, the C ABI of trio
 * for Rust (structured concurrency: nurseries, cancel scopes, deadlines).
 *
 * BUILDING
 *   Header only: nothing to compile. It includes <libtrio.h>, so both
 *   headers must be on the include path (ffi/install.sh PREFIX installs
 *   PREFIX/include/libtrio.h and PREFIX/include/trio.hpp):
 *     g++ -std=c++17 app.cpp $(pkg-config --cflags --libs trio)
 *     g++ -std=c++17 app.cpp $(pkg-config --cflags --libs --static trio) \
 *         (static: name PREFIX/lib/libtrio.a, or let pkg-config --static
 *         add the system libraries: -lgcc_s -lutil -lrt -lpthread -lm -ldl)
 *   From the source tree: -Iinclude -Ibindings/cpp, and
 *     ... app.cpp -x none $CARGO_TARGET_DIR/debug/libtrio.a \
 *         -lgcc_s -lutil -lrt -lpthread -lm -ldl
 *   (with g++, put `-x none` before a `.a` that follows `-x c++`).
 *   Any number of translation units may include it (everything is inline).
 *
 * ERRORS
 *   Every wrapper throws trio::error (a std::runtime_error with code(), the
 *   TRIO_E* status, and a message made of trio_strerror and the
 *   trio_last_error detail); TRIO_ECANCELED throws its subclass
 *   trio::cancelled. trio::check(rc) throws for a negative rc and returns it
 *   otherwise, for calling libtrio.h directly.
 *
 * TASKS
 *   trio::run(f) / trio::run_mock_clock(f) run f (any callable returning
 *   int or void) as the first task of a run and return its value; an
 *   exception thrown by f is rethrown by run() on the calling thread.
 *   nursery.spawn(f) starts any callable (lambdas capturing by reference
 *   are fine: the nursery outlives its children) as a child task. An
 *   exception is never let out of a task into the C runtime: the task's
 *   trampoline catches it and returns a status code instead (the code of a
 *   trio::error, else TRIO_EUSER), so the nursery cancels the siblings as
 *   for any failing child, and nursery.close() rethrows the child's
 *   original exception (when it was the only failure; several failures
 *   throw trio::error with TRIO_EGROUP, whose what() lists every failed
 *   child's code and message: the trampoline hands each exception's what()
 *   to trio_set_last_error). A child that throws trio::cancelled
 *   is simply a cancelled child (not a failure).
 *
 * OTHER WRAPPERS
 *   trio::sleep / checkpoint / now; trio::move_on_after(seconds, f);
 *   trio::open_nursery(body) (the form to prefer, see below); sockets:
 *   trio::listener::tcp / unix_socket, accept, port; trio::stream::
 *   connect_tcp / connect_unix, send_all, receive_some, send_eof; sync:
 *   trio::event, trio::lock + trio::lock_guard, trio::semaphore (with an
 *   optional maximum), trio::condition + trio::condition_guard,
 *   trio::capacity_limiter,
 *   trio::open_channel<T>(capacity) -> {sender<T>, receiver<T>} moving T*;
 *   threads: trio::to_thread(f), trio::token::current(),
 *   trio::from_thread_run(token, f). Handles close in destructors.
 *
 * RAII AND DESTRUCTORS
 *   trio::nursery opens in its constructor; trio::cancel_scope likewise.
 *   Close them explicitly with close() on the normal path: close() throws.
 *   The destructor closes what is still open and never throws:
 *    - nursery: if an exception is propagating (stack unwinding) it first
 *      cancels the nursery, so the children are stopped rather than waited
 *      for; then it closes (waits for the children). Errors are recorded,
 *      not thrown: trio::take_destructor_error() returns (and clears) the
 *      first error a destructor swallowed on this thread.
 *    - cancel_scope: closes; a cancellation passing through is dropped (the
 *      outer scope stays cancelled, so the next checkpoint reports it).
 *    - sockets: close the handle.
 *   Open nurseries and scopes close in the reverse order of opening, which
 *   C++ scopes give for free; do not move them across tasks.
 *
 * RULES (all tasks of a run share one thread and switch stacks)
 *   - Do not wait (sleep, close a nursery, receive, ...) inside a catch
 *     block: the C++ runtime's per-thread list of caught exceptions would
 *     be interleaved with other tasks'. Catch, leave the block, then wait.
 *   - The destructor's "is an exception propagating?" test uses
 *     std::uncaught_exceptions(), which is per thread: while another task is
 *     suspended in the middle of its own unwinding, a nursery destroyed
 *     without close() may wrongly believe it is unwinding and cancel its
 *     children. Calling close() on the normal path avoids the question.
 *   - Objects belong to the run's thread (handles are per thread).
 */
#ifndef TRIO_HPP
#define TRIO_HPP

#include <libtrio.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace trio {

/// A failed libtrio call: code() is the TRIO_E* status.
class error : public std::runtime_error {
public:
    error(int code, const std::string &message) : std::runtime_error(message), code_(code) {}
    /// The TRIO_E* status code (negative).
    int code() const noexcept { return code_; }

private:
    int code_;
};

/// TRIO_ECANCELED: the call was cancelled by an enclosing scope or nursery.
/// Let it propagate out of the task (or out of the cancel scope's block):
/// the scope that cancelled catches it.
class cancelled : public error {
public:
    explicit cancelled(const std::string &message) : error(TRIO_ECANCELED, message) {}
};

namespace detail {

/// "name of the code: detail" for the code just returned by a call.
inline std::string describe(int code) {
    std::string msg = trio_strerror(code);
    if (trio_last_error_code() == code) {
        int n = trio_last_error(nullptr, 0);
        if (n > 0) {
            std::string detail(static_cast<std::size_t>(n) + 1, '\0');
            trio_last_error(&detail[0], detail.size());
            detail.resize(static_cast<std::size_t>(n));
            msg += ": ";
            msg += detail;
        }
    }
    return msg;
}

/// Errors swallowed by destructors on this thread (the first one is kept).
inline std::exception_ptr &destructor_error_slot() {
    static thread_local std::exception_ptr slot;
    return slot;
}

inline void record_destructor_error(std::exception_ptr e) {
    auto &slot = destructor_error_slot();
    if (!slot) slot = std::move(e);
}

} // namespace detail

/// Throws trio::error (trio::cancelled for TRIO_ECANCELED) for `code`.
[[noreturn]] inline void throw_error(int code) {
    if (code == TRIO_ECANCELED) throw cancelled(detail::describe(code));
    throw error(code, detail::describe(code));
}

/// Returns `rc` if it is not negative, throws trio::error otherwise.
inline int check(int rc) {
    if (rc < 0) throw_error(rc);
    return rc;
}

/// The first error a destructor swallowed on this thread (and forgets it),
/// or a null exception_ptr.
inline std::exception_ptr take_destructor_error() noexcept {
    return std::exchange(detail::destructor_error_slot(), nullptr);
}

namespace detail {

/// What the tasks of one nursery (or one run) share: the exceptions its
/// failing tasks threw.
struct task_group {
    std::vector<std::exception_ptr> failures;
};

/// A task on the heap: owned by the trampoline once spawned.
struct task_base {
    explicit task_base(std::shared_ptr<task_group> g) : group(std::move(g)) {}
    virtual ~task_base() = default;
    virtual int call() = 0;
    std::shared_ptr<task_group> group;
    /// Set to true when the task starts (for run(), which keeps ownership
    /// of a task that never started).
    bool *started = nullptr;
};

template <class F>
struct task_impl final : task_base {
    task_impl(std::shared_ptr<task_group> g, F &&fn) : task_base(std::move(g)), f(std::move(fn)) {}
    task_impl(std::shared_ptr<task_group> g, const F &fn) : task_base(std::move(g)), f(fn) {}
    int call() override {
        if constexpr (std::is_void_v<std::invoke_result_t<F &>>) {
            f();
            return 0;
        } else {
            return static_cast<int>(f());
        }
    }
    F f;
};

template <class F>
std::unique_ptr<task_base> make_task(std::shared_ptr<task_group> g, F &&f) {
    using D = std::decay_t<F>;
    static_assert(std::is_invocable_v<D &>, "a trio task is callable with no arguments");
    return std::unique_ptr<task_base>(new task_impl<D>(std::move(g), std::forward<F>(f)));
}

template <class F>
struct start_impl;

} // namespace detail

/// Given to a task started by nursery::start(): `started(value)` tells the
/// starter it is ready (start() returns `value`) and moves the task into
/// the nursery, which from then on gets its failures.
class task_status {
public:
    /// Reports readiness (see trio_task_started). Throws trio::error
    /// (TRIO_EMISUSE) if called twice.
    void started(void *value = nullptr) {
        task_->group = target_;
        check(trio_task_started(value));
    }

private:
    template <class F>
    friend struct detail::start_impl;
    task_status(detail::task_base *task, std::shared_ptr<detail::task_group> target)
        : task_(task), target_(std::move(target)) {}
    detail::task_base *task_;
    std::shared_ptr<detail::task_group> target_;
};

namespace detail {

/// A task for nursery::start(): called with its task_status; its failures
/// go to the starter until it has started.
template <class F>
struct start_impl final : task_base {
    start_impl(std::shared_ptr<task_group> starter, std::shared_ptr<task_group> nursery, F &&fn)
        : task_base(std::move(starter)), status(this, std::move(nursery)), f(std::move(fn)) {}
    start_impl(std::shared_ptr<task_group> starter, std::shared_ptr<task_group> nursery, const F &fn)
        : task_base(std::move(starter)), status(this, std::move(nursery)), f(fn) {}
    int call() override {
        if constexpr (std::is_void_v<std::invoke_result_t<F &, task_status &>>) {
            f(status);
            return 0;
        } else {
            return static_cast<int>(f(status));
        }
    }
    task_status status;
    F f;
};

/// The C task function of every C++ task: runs the callable, deletes it,
/// and turns any exception into a status code (no exception ever reaches
/// the C runtime's frames).
inline int trampoline(void *arg) noexcept {
    std::unique_ptr<task_base> task(static_cast<task_base *>(arg));
    if (task->started) *task->started = true;
    int rc = 0;
    std::exception_ptr failure;
    try {
        rc = task->call();
    } catch (const cancelled &) {
        rc = TRIO_ECANCELED;
    } catch (const error &e) {
        rc = e.code() < 0 ? e.code() : TRIO_EUSER;
        // The message goes with the code, so that a TRIO_EGROUP's detail
        // names it too.
        trio_set_last_error(rc, e.what());
        failure = std::current_exception();
    } catch (const std::exception &e) {
        rc = TRIO_EUSER;
        trio_set_last_error(rc, e.what());
        failure = std::current_exception();
    } catch (...) {
        rc = TRIO_EUSER;
        trio_set_last_error(rc, "an exception that is not a std::exception");
        failure = std::current_exception();
    }
    if (failure && task->group) {
        try {
            task->group->failures.push_back(std::move(failure));
        } catch (...) {
            // Out of memory: the status code still reports the failure.
        }
    }
    return rc;
}

/// The trampoline with C linkage, as libtrio expects.
extern "C" inline int trio_cpp_trampoline(void *arg) {
    return trampoline(arg);
}

/// Throws for a failed close or run: the original exception of the only
/// failing task if it threw one, else trio::error for `rc`.
[[noreturn]] inline void throw_failure(const task_group &group, int rc) {
    if (!group.failures.empty() && rc != TRIO_EGROUP && rc != TRIO_ECANCELED)
        std::rethrow_exception(group.failures.front());
    throw_error(rc);
}

template <class F>
int run_with(int (*runner)(trio_task_fn, void *), F &&f) {
    auto group = std::make_shared<task_group>();
    auto task = make_task(group, std::forward<F>(f));
    // The trampoline owns (and deletes) the task once it starts; a run that
    // fails before starting it (TRIO_ENORUN inside a run, TRIO_ENOMEM)
    // leaves it to us.
    bool started = false;
    task->started = &started;
    int rc = runner(trio_cpp_trampoline, task.get());
    if (started) (void)task.release();
    if (rc < 0) throw_failure(*group, rc);
    return rc;
}

} // namespace detail

/// Runs `f` (returning int or void) as the first task of a new run on this
/// thread; returns its value (0 for void). Throws the exception `f` threw,
/// or trio::error if the run failed (a negative value returned by `f`, a
/// failure of a child, TRIO_ENORUN inside another run).
template <class F>
int run(F &&f) {
    return detail::run_with(trio_run, std::forward<F>(f));
}

/// As run(), on an autojumping mock clock (sleeps and deadlines take no real
/// time): for tests.
template <class F>
int run_mock_clock(F &&f) {
    return detail::run_with(trio_run_mock_clock, std::forward<F>(f));
}

/// Sleeps `seconds` (a checkpoint). Throws trio::cancelled if cancelled.
inline void sleep(double seconds) { check(trio_sleep(seconds)); }

/// A checkpoint: lets other tasks run; throws trio::cancelled if cancelled.
inline void checkpoint() { check(trio_checkpoint()); }

/// The run's clock in seconds.
inline double now() {
    double t = 0;
    check(trio_now(&t));
    return t;
}

/// A nursery, open from construction to close() (or the destructor).
/// Not copyable or movable: it lives in the scope of the task that opened it.
class nursery {
public:
    /// Opens a nursery in the calling task (throws outside a task).
    nursery() : group_(std::make_shared<detail::task_group>()), uncaught_(std::uncaught_exceptions()) {
        check(trio_nursery_open(&handle_));
    }
    nursery(const nursery &) = delete;
    nursery &operator=(const nursery &) = delete;

    /// Starts `f` (a callable returning int or void; captures by reference
    /// are fine) as a child task. The callable is moved or copied to the
    /// heap and freed when the child ends, or at once if spawning fails
    /// (then this throws).
    template <class F>
    void spawn(F &&f) {
        auto task = detail::make_task(group_, std::forward<F>(f));
        check(trio_nursery_spawn(handle_, detail::trio_cpp_trampoline, task.get()));
        (void)task.release(); // owned by the trampoline now
    }

    /// Starts `f` (a callable taking `trio::task_status &`, returning int or
    /// void) as a child task and waits until it calls `status.started(v)`;
    /// returns `v`. Until then the task runs under the caller's cancel
    /// scopes, and if it throws (or returns) first, start() throws that
    /// exception (trio::error with TRIO_EMISUSE if it returned without
    /// calling started). After that it is an ordinary child.
    template <class F>
    void *start(F &&f) {
        using D = std::decay_t<F>;
        static_assert(std::is_invocable_v<D &, task_status &>, "a started task is callable with a trio::task_status &");
        auto starter = std::make_shared<detail::task_group>();
        std::unique_ptr<detail::task_base> task(new detail::start_impl<D>(starter, group_, std::forward<F>(f)));
        bool began = false;
        task->started = &began;
        void *value = nullptr;
        int rc = trio_nursery_start(handle_, detail::trio_cpp_trampoline, task.get(), &value);
        // The trampoline owns (and deletes) the task once it begins.
        if (began) (void)task.release();
        if (rc < 0) detail::throw_failure(*starter, rc);
        return value;
    }

    /// Cancels the children and the opener's region inside the nursery.
    void cancel() { check(trio_nursery_cancel(handle_)); }

    /// Waits for every child and closes. Throws the exception of the child
    /// that failed (its original exception if it threw one; else
    /// trio::error with its code; TRIO_EGROUP for several failures), or
    /// trio::cancelled if an enclosing scope was cancelled.
    void close() {
        if (closed_) return;
        int rc = trio_nursery_close(handle_);
        if (rc != TRIO_EINVAL) closed_ = true; // EINVAL: not the innermost, still open
        if (rc < 0) detail::throw_failure(*group_, rc);
    }

    /// Closes if still open (see the top of this file): cancels first if an
    /// exception is propagating; records a failure for
    /// trio::take_destructor_error() instead of throwing.
    ~nursery() {
        if (closed_) return;
        if (std::uncaught_exceptions() > uncaught_) trio_nursery_cancel(handle_);
        try {
            close();
        } catch (...) {
            detail::record_destructor_error(std::current_exception());
        }
    }

    /// The C handle (for libtrio.h calls).
    trio_handle_t handle() const noexcept { return handle_; }

private:
    trio_handle_t handle_ = 0;
    std::shared_ptr<detail::task_group> group_;
    int uncaught_;
    bool closed_ = false;
};

/// Opens a nursery, runs `body(nursery&)` in it, and closes it: the RAII
/// form that also gets the errors right when the body is interrupted.
///  - body returns: waits for the children; throws as nursery::close().
///  - body throws trio::cancelled (a failing child or nursery.cancel()
///    cancelled the body's waits, or an outer scope did): the nursery closes
///    and decides: the failing child's exception is thrown, nothing is
///    thrown after nursery.cancel(), trio::cancelled for an outer scope.
///  - body throws anything else: the nursery is cancelled and closed (its
///    own errors are recorded for trio::take_destructor_error()) and the
///    body's exception is rethrown.
template <class F>
void open_nursery(F &&body) {
    nursery n;
    std::exception_ptr other;
    try {
        std::forward<F>(body)(n);
    } catch (const cancelled &) {
        // Let close() decide (outside the catch block: it waits).
    } catch (...) {
        other = std::current_exception();
    }
    if (other) {
        (void)trio_nursery_cancel(n.handle());
        try {
            n.close();
        } catch (...) {
            detail::record_destructor_error(std::current_exception());
        }
        std::rethrow_exception(other);
    }
    n.close();
}

/// A cancel scope, open from construction to close() (or the destructor).
class cancel_scope {
public:
    /// `timeout`: a relative deadline in seconds (negative: none); `shield`:
    /// protect the scope from outer cancellation.
    explicit cancel_scope(double timeout = -1.0, bool shield = false) {
        check(trio_cancel_scope_open(timeout, shield ? 1 : 0, &handle_));
    }
    cancel_scope(const cancel_scope &) = delete;
    cancel_scope &operator=(const cancel_scope &) = delete;

    /// Cancels the scope (any task may).
    void cancel() { check(trio_cancel_scope_cancel(handle_)); }

    /// Closes the scope; returns whether it caught a cancellation (its
    /// deadline or cancel()). Throws trio::cancelled if an outer scope's
    /// cancellation passes through it.
    bool close() {
        if (closed_) return caught_;
        int rc = trio_cancel_scope_close(handle_);
        if (rc != TRIO_EINVAL) closed_ = true;
        caught_ = check(rc) == 1;
        return caught_;
    }

    /// Closes if still open, never throws (records the error, see
    /// trio::take_destructor_error(); a cancellation passing through is
    /// dropped: the outer scope stays cancelled).
    ~cancel_scope() {
        if (closed_) return;
        int rc = trio_cancel_scope_close(handle_);
        if (rc < 0 && rc != TRIO_ECANCELED) {
            try {
                throw_error(rc);
            } catch (...) {
                detail::record_destructor_error(std::current_exception());
            }
        }
    }

    trio_handle_t handle() const noexcept { return handle_; }

private:
    trio_handle_t handle_ = 0;
    bool closed_ = false;
    bool caught_ = false;
};

/// Runs `f` inside a cancel scope with a deadline `seconds` from now;
/// returns true if the deadline cancelled it (f's trio::cancelled is then
/// absorbed). An outer cancellation still throws trio::cancelled.
template <class F>
bool move_on_after(double seconds, F &&f) {
    cancel_scope scope(seconds);
    bool was_cancelled = false;
    try {
        std::forward<F>(f)();
    } catch (const cancelled &) {
        was_cancelled = true; // decided below, outside the catch block
    }
    bool caught = scope.close(); // throws cancelled if it was an outer one
    if (was_cancelled && !caught) throw_error(TRIO_ECANCELED);
    return caught;
}

/// A socket handle (stream or listener) closed by its destructor. Movable.
class socket_handle {
public:
    socket_handle() noexcept = default;
    explicit socket_handle(trio_handle_t h) noexcept : handle_(h) {}
    socket_handle(socket_handle &&o) noexcept : handle_(std::exchange(o.handle_, 0)) {}
    socket_handle &operator=(socket_handle &&o) noexcept {
        if (this != &o) {
            reset();
            handle_ = std::exchange(o.handle_, 0);
        }
        return *this;
    }
    socket_handle(const socket_handle &) = delete;
    socket_handle &operator=(const socket_handle &) = delete;
    ~socket_handle() { reset(); }

    /// Closes the socket now (not a checkpoint; tasks blocked on it wake
    /// with TRIO_ECLOSED).
    void close() {
        trio_handle_t h = std::exchange(handle_, 0);
        if (h != 0) check(trio_close(h));
    }
    trio_handle_t handle() const noexcept { return handle_; }
    explicit operator bool() const noexcept { return handle_ != 0; }

protected:
    void reset() noexcept {
        trio_handle_t h = std::exchange(handle_, 0);
        if (h != 0) (void)trio_close(h);
    }
    trio_handle_t handle_ = 0;
};

/// A connected byte stream (TCP or Unix).
class stream : public socket_handle {
public:
    using socket_handle::socket_handle;

    /// Connects over TCP (happy eyeballs over every address of `host`).
    static stream connect_tcp(const std::string &host, std::uint16_t port) {
        trio_handle_t h = 0;
        check(trio_tcp_connect(host.c_str(), port, &h));
        return stream(h);
    }
    /// Connects to the Unix-domain socket at `path`.
    static stream connect_unix(const std::string &path) {
        trio_handle_t h = 0;
        check(trio_unix_connect(path.c_str(), &h));
        return stream(h);
    }
    /// Sends every byte.
    void send_all(const void *data, std::size_t len) { check(trio_send_all(handle_, data, len)); }
    void send_all(std::string_view s) { send_all(s.data(), s.size()); }
    /// Receives at most `len` bytes; returns how many (0: the peer sent EOF).
    std::size_t receive_some(void *buf, std::size_t len) {
        return static_cast<std::size_t>(check(trio_receive_some(handle_, buf, len)));
    }
    /// Receives at most `max` bytes as a string ("" at EOF).
    std::string receive_some(std::size_t max = 65536) {
        std::string s(max, '\0');
        s.resize(receive_some(&s[0], s.size()));
        return s;
    }
    /// Shuts down the sending side.
    void send_eof() { check(trio_send_eof(handle_)); }
};

/// A listening socket (TCP or Unix).
class listener : public socket_handle {
public:
    using socket_handle::socket_handle;

    /// Listens on `host`:`port` (a numeric address or "localhost"; port 0:
    /// the OS chooses, see port()).
    static listener tcp(const std::string &host, std::uint16_t port) {
        trio_handle_t h = 0;
        check(trio_tcp_listen(host.c_str(), port, &h));
        return listener(h);
    }
    /// Listens at the filesystem path `path` (not removed on close).
    static listener unix_socket(const std::string &path) {
        trio_handle_t h = 0;
        check(trio_unix_listen(path.c_str(), &h));
        return listener(h);
    }
    /// The local TCP port.
    std::uint16_t port() const {
        std::uint16_t p = 0;
        check(trio_listener_port(handle_, &p));
        return p;
    }
    /// Waits for a connection.
    stream accept() {
        trio_handle_t h = 0;
        check(trio_accept(handle_, &h));
        return stream(h);
    }
};

namespace detail {

/// A handle closed by `Close` in the destructor. Movable, not copyable.
template <int (*Close)(trio_handle_t)>
class owned_handle {
public:
    owned_handle() noexcept = default;
    explicit owned_handle(trio_handle_t h) noexcept : handle_(h) {}
    owned_handle(owned_handle &&o) noexcept : handle_(std::exchange(o.handle_, 0)) {}
    owned_handle &operator=(owned_handle &&o) noexcept {
        if (this != &o) {
            reset();
            handle_ = std::exchange(o.handle_, 0);
        }
        return *this;
    }
    owned_handle(const owned_handle &) = delete;
    owned_handle &operator=(const owned_handle &) = delete;
    ~owned_handle() { reset(); }

    /// Closes now: tasks blocked on the object wake with TRIO_ECLOSED.
    void close() {
        trio_handle_t h = std::exchange(handle_, 0);
        if (h != 0) check(Close(h));
    }
    trio_handle_t handle() const noexcept { return handle_; }
    explicit operator bool() const noexcept { return handle_ != 0; }

protected:
    void reset() noexcept {
        trio_handle_t h = std::exchange(handle_, 0);
        if (h != 0) (void)Close(h);
    }
    trio_handle_t handle_ = 0;
};

} // namespace detail

/// A one-shot flag: set() wakes every waiter, and it stays set.
class event : public detail::owned_handle<trio_event_close> {
public:
    /// Makes an event (inside a task).
    event() { check(trio_event_new(&handle_)); }
    void set() { check(trio_event_set(handle_)); }
    bool is_set() const { return check(trio_event_is_set(handle_)) == 1; }
    /// Waits until set (a checkpoint).
    void wait() { check(trio_event_wait(handle_)); }
};

/// A lock owned by the task that acquired it (use trio::lock_guard).
class lock : public detail::owned_handle<trio_lock_close> {
public:
    lock() { check(trio_lock_new(&handle_)); }
    /// Waits for the lock (a checkpoint).
    void acquire() { check(trio_lock_acquire(handle_)); }
    /// Takes it if free; false if it would wait.
    bool try_acquire() {
        int rc = trio_lock_try_acquire(handle_);
        if (rc == TRIO_EWOULDBLOCK) return false;
        check(rc);
        return true;
    }
    void release() { check(trio_lock_release(handle_)); }
};

/// Holds a trio::lock for its lifetime (acquires in the constructor,
/// releases in the destructor, errors ignored there).
class lock_guard {
public:
    explicit lock_guard(lock &l) : lock_(l) { lock_.acquire(); }
    lock_guard(const lock_guard &) = delete;
    lock_guard &operator=(const lock_guard &) = delete;
    ~lock_guard() { (void)trio_lock_release(lock_.handle()); }

private:
    lock &lock_;
};

/// A counting semaphore, optionally with a maximum value.
class semaphore : public detail::owned_handle<trio_semaphore_close> {
public:
    explicit semaphore(std::size_t initial) { check(trio_semaphore_new(initial, &handle_)); }
    /// At most `max` permits: release() beyond it throws trio::error
    /// (TRIO_EMISUSE); `initial > max` throws TRIO_EINVAL.
    semaphore(std::size_t initial, std::size_t max) { check(trio_semaphore_new_bounded(initial, max, &handle_)); }
    /// Waits for a permit (a checkpoint).
    void acquire() { check(trio_semaphore_acquire(handle_)); }
    bool try_acquire() {
        int rc = trio_semaphore_try_acquire(handle_);
        if (rc == TRIO_EWOULDBLOCK) return false;
        check(rc);
        return true;
    }
    void release() { check(trio_semaphore_release(handle_)); }
    std::size_t value() const {
        std::size_t v = 0;
        check(trio_semaphore_value(handle_, &v));
        return v;
    }
    /// value, has_max, max_value, tasks_waiting.
    trio_semaphore_stats statistics() const {
        trio_semaphore_stats st{};
        check(trio_semaphore_statistics(handle_, &st));
        return st;
    }
};

/// A condition variable with its own lock: acquire() (or a
/// trio::condition_guard), then wait() until notified; notify() needs the
/// lock held too.
class condition : public detail::owned_handle<trio_condition_close> {
public:
    condition() { check(trio_condition_new(&handle_)); }
    /// Waits for the lock (a checkpoint).
    void acquire() { check(trio_condition_acquire(handle_)); }
    /// Takes the lock if free; false if it would wait.
    bool try_acquire() {
        int rc = trio_condition_try_acquire(handle_);
        if (rc == TRIO_EWOULDBLOCK) return false;
        check(rc);
        return true;
    }
    void release() { check(trio_condition_release(handle_)); }
    /// Releases the lock, waits to be notified, takes the lock again (a
    /// checkpoint). Throws trio::cancelled holding the lock again.
    void wait() { check(trio_condition_wait(handle_)); }
    /// Wakes up to `n` waiters; returns how many.
    std::size_t notify(std::size_t n = 1) { return static_cast<std::size_t>(check(trio_condition_notify(handle_, n))); }
    /// Wakes every waiter; returns how many.
    std::size_t notify_all() { return static_cast<std::size_t>(check(trio_condition_notify_all(handle_))); }
    /// tasks_waiting, lock_locked, lock_tasks_waiting.
    trio_condition_stats statistics() const {
        trio_condition_stats st{};
        check(trio_condition_statistics(handle_, &st));
        return st;
    }
};

/// Holds a trio::condition's lock for its lifetime (acquires in the
/// constructor, releases in the destructor, errors ignored there).
class condition_guard {
public:
    explicit condition_guard(condition &c) : cond_(c) { cond_.acquire(); }
    condition_guard(const condition_guard &) = delete;
    condition_guard &operator=(const condition_guard &) = delete;
    ~condition_guard() { (void)trio_condition_release(cond_.handle()); }

private:
    condition &cond_;
};

/// A capacity limiter: at most total_tokens() tasks hold a token at once
/// (each task one at most).
class capacity_limiter : public detail::owned_handle<trio_capacity_limiter_close> {
public:
    explicit capacity_limiter(std::size_t total_tokens) {
        check(trio_capacity_limiter_new(total_tokens, &handle_));
    }
    /// Waits for a token for the calling task (a checkpoint).
    void acquire() { check(trio_capacity_limiter_acquire(handle_)); }
    /// Takes a token if one is free; false if it would wait.
    bool try_acquire() {
        int rc = trio_capacity_limiter_try_acquire(handle_);
        if (rc == TRIO_EWOULDBLOCK) return false;
        check(rc);
        return true;
    }
    void release() { check(trio_capacity_limiter_release(handle_)); }
    void set_total_tokens(std::size_t total) { check(trio_capacity_limiter_set_total_tokens(handle_, total)); }
    /// total_tokens, borrowed_tokens, available_tokens, tasks_waiting.
    trio_capacity_limiter_stats statistics() const {
        trio_capacity_limiter_stats st{};
        check(trio_capacity_limiter_statistics(handle_, &st));
        return st;
    }
    std::size_t total_tokens() const { return statistics().total_tokens; }
    std::size_t borrowed_tokens() const { return statistics().borrowed_tokens; }
    std::size_t available_tokens() const { return statistics().available_tokens; }
};

/// The sending end of a memory channel of `T *` (the channel moves the
/// pointers only: the program owns what they point to).
template <class T>
class sender : public detail::owned_handle<trio_channel_close_sender> {
public:
    using detail::owned_handle<trio_channel_close_sender>::owned_handle;
    /// Sends (waits while the buffer is full; a checkpoint). Throws
    /// trio::error TRIO_EBROKEN once every receiver is closed.
    void send(T *value) { check(trio_channel_send(handle_, static_cast<void *>(value))); }
    /// Sends without waiting; false if it would wait.
    bool try_send(T *value) {
        int rc = trio_channel_try_send(handle_, static_cast<void *>(value));
        if (rc == TRIO_EWOULDBLOCK) return false;
        check(rc);
        return true;
    }
    sender clone() const {
        trio_handle_t h = 0;
        check(trio_channel_clone_sender(handle_, &h));
        return sender(h);
    }
};

/// The receiving end of a memory channel of `T *`.
template <class T>
class receiver : public detail::owned_handle<trio_channel_close_receiver> {
public:
    using detail::owned_handle<trio_channel_close_receiver>::owned_handle;
    /// Receives the next value, waiting for one (a checkpoint); false at the
    /// end of the channel (every sender closed and the buffer empty).
    bool receive(T *&out) {
        void *v = nullptr;
        int rc = trio_channel_receive(handle_, &v);
        if (rc == TRIO_EENDOFCHANNEL) return false;
        check(rc);
        out = static_cast<T *>(v);
        return true;
    }
    receiver clone() const {
        trio_handle_t h = 0;
        check(trio_channel_clone_receiver(handle_, &h));
        return receiver(h);
    }
};

/// Opens a channel of `T *` buffering `capacity` values (0: rendezvous).
template <class T>
std::pair<sender<T>, receiver<T>> open_channel(std::size_t capacity) {
    trio_handle_t s = 0, r = 0;
    check(trio_channel_open(capacity, &s, &r));
    return {sender<T>(s), receiver<T>(r)};
}

namespace detail {

/// What a to_thread() call shares with its worker thread.
struct thread_job {
    std::atomic<bool> started{false};
    std::unique_ptr<task_base> task;
    std::exception_ptr failure;
};

/// The worker side of to_thread(): owns one reference to the job.
extern "C" inline int trio_cpp_thread_trampoline(void *arg) {
    std::unique_ptr<std::shared_ptr<thread_job>> ref(static_cast<std::shared_ptr<thread_job> *>(arg));
    thread_job &job = **ref;
    job.started.store(true);
    try {
        return job.task->call();
    } catch (const error &e) {
        job.failure = std::current_exception();
        return e.code() < 0 ? e.code() : TRIO_EUSER;
    } catch (...) {
        job.failure = std::current_exception();
        return TRIO_EUSER;
    }
}

/// A task the caller keeps (from_thread_run waits for it).
struct borrowed_task {
    task_base *task;
    std::exception_ptr failure;
};

extern "C" inline int trio_cpp_borrowed_trampoline(void *arg) {
    auto *b = static_cast<borrowed_task *>(arg);
    try {
        return b->task->call();
    } catch (const cancelled &) {
        return TRIO_ECANCELED;
    } catch (const error &e) {
        b->failure = std::current_exception();
        return e.code() < 0 ? e.code() : TRIO_EUSER;
    } catch (...) {
        b->failure = std::current_exception();
        return TRIO_EUSER;
    }
}

} // namespace detail

/// Runs `f` (returning int or void) on a worker thread and returns its
/// value, suspending only the calling task. An exception thrown by `f` is
/// rethrown here. `f` must not call what needs a task (sleep, nurseries,
/// ...): use from_thread_run(token, ...) for that.
/// Cancellation: before the thread starts, throws trio::cancelled and `f`
/// never runs. Once it runs, with abandon_on_cancel false the task waits for
/// it; with true, throws trio::cancelled at once and the thread goes on
/// alone (the callable and what it captures by value live until it
/// returns; what it captures by reference must too).
template <class F>
int to_thread(F &&f, bool abandon_on_cancel = false) {
    auto job = std::make_shared<detail::thread_job>();
    job->task = detail::make_task(nullptr, std::forward<F>(f));
    auto ref = std::make_unique<std::shared_ptr<detail::thread_job>>(job);
    int rc = trio_to_thread(detail::trio_cpp_thread_trampoline, ref.get(), abandon_on_cancel ? 1 : 0);
    // A started worker owns `ref` (and has freed it, or will); one that
    // never started never will.
    if (job->started.load()) (void)ref.release();
    if (rc == TRIO_ECANCELED) throw_error(rc);
    if (rc < 0 && job->failure) std::rethrow_exception(job->failure);
    return check(rc);
}

/// A run's token: lets other threads reach the run (from_thread_run).
/// Get it inside the run; use and destroy it on any thread. Movable.
class token {
public:
    /// The token of the run on the calling thread (throws outside a run).
    static token current() {
        trio_token *t = nullptr;
        check(trio_token_get(&t));
        return token(t);
    }
    token(token &&o) noexcept : t_(std::exchange(o.t_, nullptr)) {}
    token &operator=(token &&o) noexcept {
        if (this != &o) {
            trio_token_free(t_);
            t_ = std::exchange(o.t_, nullptr);
        }
        return *this;
    }
    token(const token &) = delete;
    token &operator=(const token &) = delete;
    ~token() { trio_token_free(t_); }

    /// Queues a plain C callback to run soon on the run's thread (any
    /// thread may call this). If the run ends first it never runs, so no
    /// owning lambda form is offered: nothing could free it.
    void run_sync_soon(trio_sync_fn fn, void *arg) const { check(trio_token_run_sync_soon(t_, fn, arg)); }

    const trio_token *get() const noexcept { return t_; }

private:
    explicit token(trio_token *t) noexcept : t_(t) {}
    trio_token *t_;
};

/// From a thread other than the run's: runs `f` (int or void) as a task in
/// the token's run, blocks this OS thread until it returns, and returns its
/// value. An exception thrown by `f` is rethrown here; trio::cancelled if
/// it was cancelled; trio::error TRIO_ENORUN if the run ended.
template <class F>
int from_thread_run(const token &t, F &&f) {
    auto task = detail::make_task(nullptr, std::forward<F>(f));
    detail::borrowed_task b{task.get(), nullptr};
    int rc = trio_from_thread_run(t.get(), detail::trio_cpp_borrowed_trampoline, &b);
    if (rc < 0 && rc != TRIO_ECANCELED && b.failure) std::rethrow_exception(b.failure);
    return check(rc);
}

} // namespace trio

#endif /* TRIO_HPP */
