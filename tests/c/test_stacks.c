/* C task stacks: size and guard bounds, a large frame caught by the guard
 * region instead of corrupting a sibling's stack, the overflow handler's
 * line, other faults left alone, and the memory-mapping budget.
 * The crashing cases run in a child process: forked on Unix; on Windows the
 * program itself run again as `test_stacks --child NAME`. The parent
 * checks how it died (Unix: the signal; Windows: the exit status) and what
 * it printed on stdout and stderr. Prints "ok N - name" lines; exits 1 at
 * the first failure. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _WIN32
#include <windows.h>
#else
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>
#endif

#include "libtrio.h"

#include "check.h"

#if defined(__GNUC__)
#define NOINLINE __attribute__((noinline))
#else
#define NOINLINE
#endif
/* The large frame must be built without stack-clash probes (the point is
 * that the guard region catches it without them). Compilers for Windows
 * always probe a frame larger than a page (`___chkstk_ms`, `__chkstk`):
 * there the probes walk it down into the guard page. */
#if defined(__GNUC__) && !defined(__clang__)
#define NO_CLASH_PROBES __attribute__((optimize("no-stack-clash-protection")))
#else
#define NO_CLASH_PROBES
#endif

static char detail[1024];

static const char *last_detail(void) {
    trio_last_error(detail, sizeof detail);
    return detail;
}

/* --- bounds of the size arguments --- */

static int small_task(void *arg) {
    volatile char buf[2048];
    memset((char *)buf, 1, sizeof buf);
    *(int *)arg += buf[100];
    return trio_sleep(0);
}

static int run_small(void *arg) {
    trio_handle_t n = 0;
    int r = trio_nursery_open(&n);
    if (r != 0) return r;
    r = trio_nursery_spawn(n, small_task, arg);
    if (r != 0) return r;
    return trio_nursery_close(n);
}

static void sizes_are_checked(void) {
    int count = 0;
    CHECK(trio_set_stack_size(SIZE_MAX) == TRIO_EINVAL, "stack size SIZE_MAX is TRIO_EINVAL");
    last_detail();
    CHECK(strstr(detail, "size") && strstr(detail, "16384") && (strstr(detail, "GiB") || strstr(detail, "MiB")),
          "the detail names the argument and the allowed range");
    CHECK(trio_set_stack_size(0) == TRIO_EINVAL, "stack size 0 is TRIO_EINVAL");
    CHECK(trio_set_stack_size(16 * 1024 - 1) == TRIO_EINVAL, "stack size below 16 KiB is TRIO_EINVAL");
    CHECK(trio_set_stack_size(SIZE_MAX / 2 + 1) == TRIO_EINVAL, "stack size 2^63 is TRIO_EINVAL");
    CHECK(trio_set_stack_size((size_t)1 << 30 | 1) == TRIO_EINVAL || sizeof(size_t) < 8,
          "stack size above 1 GiB is TRIO_EINVAL");
    CHECK(trio_run(run_small, &count) == 0 && count == 1,
          "a run after refused sizes works (no panic over the bad size)");
    CHECK(trio_set_stack_guard_size(0) == TRIO_EINVAL, "guard size 0 is TRIO_EINVAL");
    CHECK(trio_set_stack_guard_size(SIZE_MAX) == TRIO_EINVAL, "guard size SIZE_MAX is TRIO_EINVAL");
    last_detail();
    CHECK(strstr(detail, "size") && strstr(detail, "guard") && strstr(detail, "4096"),
          "the guard detail names the argument and the range");
    CHECK(trio_set_stack_size(16 * 1024) == 0 && trio_set_stack_guard_size(4096) == 0,
          "the smallest stack and guard are accepted");
    CHECK(trio_run(run_small, &count) == 0 && count == 2, "a run with them works");
    CHECK(trio_set_stack_size(256 * 1024) == 0 && trio_set_stack_guard_size(1024 * 1024) == 0,
          "back to the defaults");
}

/* --- children that crash; the parent watches them --- */

struct outcome {
#ifdef _WIN32
    DWORD status; /* the exit status */
#else
    int status; /* from waitpid */
#endif
    char out[4096]; /* the child's stdout and stderr */
};

#ifdef _WIN32
/* How a process a stack overflow ends (STATUS_STACK_OVERFLOW) and one an
 * unhandled access violation ends (STATUS_ACCESS_VIOLATION). */
#define EXIT_OVERFLOW 0xC00000FDul
#define EXIT_FAULT 0xC0000005ul

static char self_path[MAX_PATH];

/* Runs this program as `test_stacks --child NAME` with stdout and stderr
 * in a pipe. */
static void in_child(const char *name, void (*fn)(void), struct outcome *o) {
    SECURITY_ATTRIBUTES sa;
    STARTUPINFOA si;
    PROCESS_INFORMATION pi;
    HANDLE rd, wr;
    char cmd[MAX_PATH + 64];
    size_t len = 0;
    DWORD got;
    (void)fn;
    fflush(stdout);
    fflush(stderr);
    memset(&sa, 0, sizeof sa);
    sa.nLength = sizeof sa;
    sa.bInheritHandle = TRUE;
    if (!CreatePipe(&rd, &wr, &sa, 0) || !SetHandleInformation(rd, HANDLE_FLAG_INHERIT, 0)) {
        printf("CreatePipe: error %lu\n", (unsigned long)GetLastError());
        exit(1);
    }
    memset(&si, 0, sizeof si);
    si.cb = sizeof si;
    si.dwFlags = STARTF_USESTDHANDLES;
    si.hStdInput = GetStdHandle(STD_INPUT_HANDLE);
    si.hStdOutput = wr;
    si.hStdError = wr;
    snprintf(cmd, sizeof cmd, "\"%s\" --child %s", self_path, name);
    if (!CreateProcessA(NULL, cmd, NULL, NULL, TRUE, 0, NULL, NULL, &si, &pi)) {
        printf("CreateProcess %s: error %lu\n", cmd, (unsigned long)GetLastError());
        exit(1);
    }
    CloseHandle(wr);
    while (ReadFile(rd, o->out + len, (DWORD)(sizeof o->out - 1 - len), &got, NULL) && got > 0) {
        len += got;
        if (len == sizeof o->out - 1) {
            char sink[256];
            while (ReadFile(rd, sink, sizeof sink, &got, NULL) && got > 0) {
            }
            break;
        }
    }
    o->out[len] = '\0';
    CloseHandle(rd);
    WaitForSingleObject(pi.hProcess, INFINITE);
    if (!GetExitCodeProcess(pi.hProcess, &o->status)) o->status = 0;
    CloseHandle(pi.hProcess);
    CloseHandle(pi.hThread);
}

static int died_of_overflow(const struct outcome *o) {
    return o->status == EXIT_OVERFLOW;
}

static int died_of_fault(const struct outcome *o) {
    return o->status == EXIT_FAULT;
}

static void show_status(const struct outcome *o) {
    printf("status 0x%lx", (unsigned long)o->status);
}

#define OVERFLOW_EXIT_NAME "status 0xC00000FD (STATUS_STACK_OVERFLOW)"
#define FAULT_EXIT_NAME "status 0xC0000005 (STATUS_ACCESS_VIOLATION)"
#else
/* Runs `fn` in a forked child with stdout and stderr in a pipe. */
static void in_child(const char *name, void (*fn)(void), struct outcome *o) {
    int fds[2];
    pid_t pid;
    size_t len = 0;
    ssize_t got;
    (void)name;
    fflush(stdout);
    fflush(stderr);
    if (pipe(fds) != 0) {
        perror("pipe");
        exit(1);
    }
    pid = fork();
    if (pid < 0) {
        perror("fork");
        exit(1);
    }
    if (pid == 0) {
        close(fds[0]);
        dup2(fds[1], 1);
        dup2(fds[1], 2);
        close(fds[1]);
        fn();
        fflush(stdout);
        _exit(0);
    }
    close(fds[1]);
    while ((got = read(fds[0], o->out + len, sizeof o->out - 1 - len)) > 0 ||
           (got < 0 && errno == EINTR)) {
        if (got > 0) len += (size_t)got;
        if (len == sizeof o->out - 1) {
            char sink[256];
            while (read(fds[0], sink, sizeof sink) > 0) {
            }
            break;
        }
    }
    o->out[len] = '\0';
    close(fds[0]);
    while (waitpid(pid, &o->status, 0) < 0 && errno == EINTR) {
    }
}

static int died_of(const struct outcome *o, int sig) {
    return WIFSIGNALED(o->status) && WTERMSIG(o->status) == sig;
}

static int died_of_overflow(const struct outcome *o) {
    return died_of(o, SIGABRT);
}

#if !defined(__SANITIZE_ADDRESS__) /* ASan reports the fault itself */
static int died_of_fault(const struct outcome *o) {
    return died_of(o, SIGSEGV);
}
#endif

static void show_status(const struct outcome *o) {
    printf("status %d (signal %d, exit %d)", o->status, WIFSIGNALED(o->status) ? WTERMSIG(o->status) : 0,
           WIFEXITED(o->status) ? WEXITSTATUS(o->status) : -1);
}

#define OVERFLOW_EXIT_NAME "SIGABRT"
#define FAULT_EXIT_NAME "SIGSEGV"
#endif

static void show(const char *what, const struct outcome *o) {
    printf("# %s: ", what);
    show_status(o);
    printf("; output:\n");
    {
        const char *p = o->out;
        while (*p) {
            const char *nl = strchr(p, '\n');
            size_t n = nl ? (size_t)(nl - p) : strlen(p);
            printf("#   %.*s\n", (int)n, p);
            p += n + (nl ? 1 : 0);
        }
    }
}

/* The text of a function's address as the overflow line prints it. */
static void func_hex(trio_task_fn f, char *buf, size_t len) {
    uintptr_t v = 0;
    memcpy(&v, &f, sizeof f < sizeof v ? sizeof f : sizeof v);
    snprintf(buf, len, "function 0x%" PRIxPTR, v);
}

/* A task with a 320 KiB local array on a 256 KiB stack, and a sibling
 * whose stack is made right after (on Linux it lies just below, where the
 * array reaches past a one-page guard) with a canary on it. On Windows the
 * frame's probes reach the stack's end before the frame is used. */
#define CANARY_SIZE (64 * 1024)
static trio_handle_t big_go, big_done;

static NOINLINE NO_CLASH_PROBES int big_frame(void) {
    volatile unsigned char big[320 * 1024];
    size_t i;
    /* Lowest addresses first, as code writing big[0] does: the stack
     * pointer has jumped 320 KiB at once. */
    for (i = 0; i < 16 * 1024; i++) big[i] = 0x5A;
    big[sizeof big - 1] = 1;
    return big[0] + big[sizeof big - 1];
}

static int big_task(void *arg) {
    (void)arg;
    if (trio_event_wait(big_go) != 0) return -1;
    big_frame();
    return trio_event_set(big_done);
}

static int canary_task(void *arg) {
    volatile unsigned char canary[CANARY_SIZE];
    size_t i, bad = 0;
    (void)arg;
    for (i = 0; i < sizeof canary; i++) canary[i] = 0xC3;
    if (trio_event_set(big_go) != 0) return -1;
    if (trio_event_wait(big_done) != 0) return -1;
    for (i = 0; i < sizeof canary; i++) bad += canary[i] != 0xC3;
    printf("sibling canary: %s (%lu bytes changed)\n", bad ? "CORRUPTED" : "intact", (unsigned long)bad);
    fflush(stdout);
    return bad ? 3 : 0;
}

static int big_main(void *arg) {
    trio_handle_t n = 0;
    (void)arg;
    if (trio_event_new(&big_go) != 0 || trio_event_new(&big_done) != 0) return -1;
    if (trio_nursery_open(&n) != 0) return -1;
    if (trio_nursery_spawn(n, big_task, NULL) != 0) return -1;
    if (trio_nursery_spawn(n, canary_task, NULL) != 0) return -1;
    return trio_nursery_close(n);
}

static void child_big_frame(void) {
    int r = trio_run_mock_clock(big_main, NULL);
    printf("run returned %d\n", r);
    fflush(stdout);
    _Exit(r == 3 ? 3 : 0);
}

static void big_frame_is_caught(void) {
    struct outcome o;
    char fn[64];
    in_child("big", child_big_frame, &o);
    func_hex(big_task, fn, sizeof fn);
    if (!died_of_overflow(&o) || !strstr(o.out, "stack overflow in C task")) show("large frame", &o);
    CHECK(!strstr(o.out, "CORRUPTED"), "a 320 KiB frame does not write into a sibling's stack");
    CHECK(died_of_overflow(&o), "it ends the process with " OVERFLOW_EXIT_NAME);
    CHECK(strstr(o.out, "stack overflow in C task") && strstr(o.out, "262144 bytes") && strstr(o.out, fn) &&
              strstr(o.out, "1048576-byte guard region"),
          "one line names the task's function, its stack size and the guard region");
}

/* Unbounded recursion (each frame 1 KiB) on a 64 KiB stack. */
static NOINLINE int recurse(volatile char *up, int depth) {
    volatile char frame[1024];
    frame[0] = (char)depth;
    frame[sizeof frame - 1] = up ? up[0] : 0;
    if (depth > 1000000) return frame[0]; /* never: the stack ends first */
    return recurse(frame, depth + 1) + frame[sizeof frame - 1];
}

static int recursing_task(void *arg) {
    (void)arg;
    return recurse(NULL, 0) & 0;
}

static int recursion_main(void *arg) {
    trio_handle_t n = 0;
    (void)arg;
    if (trio_set_stack_size(64 * 1024) != 0) return -1;
    if (trio_nursery_open(&n) != 0) return -1;
    if (trio_nursery_spawn(n, recursing_task, NULL) != 0) return -1;
    return trio_nursery_close(n);
}

static void child_recursion(void) {
    printf("run returned %d\n", trio_run(recursion_main, NULL));
}

static void overflow_is_reported(void) {
    struct outcome o;
    char fn[64];
    const char *line;
    in_child("overflow", child_recursion, &o);
    func_hex(recursing_task, fn, sizeof fn);
    if (!died_of_overflow(&o)) show("recursion", &o);
    CHECK(died_of_overflow(&o), "a task overflowing its stack ends the process with " OVERFLOW_EXIT_NAME);
    line = strstr(o.out, "trio: stack overflow in C task");
    CHECK(line && strstr(line, fn) && strstr(line, "its stack is 65536 bytes") && strchr(line, '\n'),
          "after one line on stderr naming the task and its stack size");
    CHECK(strstr(line + 1, "trio: stack overflow") == NULL, "exactly one such line");
}

/* A fault that is not a stack overflow keeps its ordinary outcome. */
static int wild_task(void *arg) {
    volatile int *p = (volatile int *)arg;
    *p = 1;
    return 0;
}

static int wild_main(void *arg) {
    trio_handle_t n = 0;
    if (trio_nursery_open(&n) != 0) return -1;
    if (trio_nursery_spawn(n, wild_task, arg) != 0) return -1;
    return trio_nursery_close(n);
}

static void child_wild(void) {
    printf("run returned %d\n", trio_run(wild_main, (void *)(uintptr_t)16));
}

static void other_faults_pass_through(void) {
    struct outcome o;
    in_child("wild", child_wild, &o);
#if defined(__SANITIZE_ADDRESS__)
    /* ASan's own handler (installed before ours) reports it and exits 1. */
    if (!(WIFEXITED(o.status) && WEXITSTATUS(o.status) != 0 && strstr(o.out, "AddressSanitizer")))
        show("wild write", &o);
    CHECK(WIFEXITED(o.status) && WEXITSTATUS(o.status) != 0 && strstr(o.out, "AddressSanitizer"),
          "a wild write in a task reaches ASan's handler");
#else
    if (!died_of_fault(&o)) show("wild write", &o);
    CHECK(died_of_fault(&o), "a wild write in a task still dies of " FAULT_EXIT_NAME);
#endif
    CHECK(!strstr(o.out, "stack overflow"), "without a stack-overflow line");
}

/* --- the memory-mapping budget (TRIO_MAX_MAP_COUNT=3000, set in main) --- */

static int forever_task(void *arg) {
    (void)arg;
    return trio_sleep(INFINITY);
}

static int map_main(void *arg) {
    trio_handle_t n = 0;
    int spawned = 0, r = 0, i;
    char *blocks[64];
    (void)arg;
    CHECK(trio_nursery_open(&n) == 0, "open a nursery");
    /* Bounded: the budget is 2000 mappings of 3000, 2 a stack. */
    while (spawned < 5000 && (r = trio_nursery_spawn(n, forever_task, NULL)) == 0) spawned++;
    printf("# spawned %d tasks before %d\n", spawned, r);
    CHECK(r == TRIO_ENOMEM, "spawning stops with TRIO_ENOMEM");
    CHECK(spawned >= 900 && spawned < 1000, "while a reserve of the mapping limit is left");
    last_detail();
    CHECK(strstr(detail, "vm.max_map_count") && strstr(detail, "mappings"),
          "the detail says why (memory mappings, vm.max_map_count)");
    for (i = 0; i < 64; i++) {
        blocks[i] = malloc((size_t)(i + 1) * 64 * 1024);
        if (blocks[i]) memset(blocks[i], i, (size_t)(i + 1) * 64 * 1024);
    }
    for (i = 0; i < 64 && blocks[i]; i++) {
    }
    CHECK(i == 64, "malloc still works after the refusal");
    for (i = 0; i < 64; i++) free(blocks[i]);
    CHECK(trio_sleep(0.001) == 0, "the run goes on");
    CHECK(trio_nursery_cancel(n) == 0, "cancel the tasks");
    r = trio_nursery_close(n);
    CHECK(r == 0, "the nursery closes cleanly");
    return 0;
}

static int respawn_main(void *arg) {
    trio_handle_t n = 0;
    int count = 0;
    CHECK(trio_nursery_open(&n) == 0 && trio_nursery_spawn(n, small_task, &count) == 0 &&
              trio_nursery_close(n) == 0 && count == 1,
          "a later run spawns again");
    (void)arg;
    return 0;
}

static void mapping_budget(void) {
    CHECK(trio_run(map_main, NULL) == 0, "the run ends cleanly");
    CHECK(trio_run(respawn_main, NULL) == 0, "and the next one too");
}

/* `test_stacks [sizes|big|overflow|wild|maps]` runs one part;
 * `test_stacks --child big|overflow|wild` is the crashing process of a
 * part (Windows runs it as a child; it works on Unix too). */
int main(int argc, char **argv) {
    const char *only = argc > 1 ? argv[1] : NULL;
    /* Read by libtrio when it makes its first stack: lowers the mapping
     * limit it assumes (test-only; documented in ffi/README.md). */
#ifdef _WIN32
    _putenv("TRIO_MAX_MAP_COUNT=3000");
    {
        DWORD n = GetModuleFileNameA(NULL, self_path, sizeof self_path);
        if (n == 0 || n >= sizeof self_path) {
            printf("GetModuleFileName: error %lu\n", (unsigned long)GetLastError());
            return 1;
        }
    }
#else
    setenv("TRIO_MAX_MAP_COUNT", "3000", 1);
#endif
    if (only && !strcmp(only, "--child") && argc > 2) {
        const char *name = argv[2];
        if (!strcmp(name, "big")) child_big_frame();
        else if (!strcmp(name, "overflow")) child_recursion();
        else if (!strcmp(name, "wild")) child_wild();
        else return 2;
        fflush(stdout);
        return 0;
    }
    if (!only || !strcmp(only, "sizes")) sizes_are_checked();
    if (!only || !strcmp(only, "big")) big_frame_is_caught();
    if (!only || !strcmp(only, "overflow")) overflow_is_reported();
    if (!only || !strcmp(only, "wild")) other_faults_pass_through();
    if (!only || !strcmp(only, "maps")) mapping_budget();
    return 0;
}
