//! The `trio-wasi-host` binary on preview 1 guests written in WAT, and its
//! command-line and load errors.

mod util;

use util::{assert_contains, closed_pipe_stderr, full_stderr, host, host_status_with_stderr, scratch, wat_guest};

const EXIT_7: &str = r#"(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start") (call $proc_exit (i32.const 7))))"#;

#[test]
fn proc_exit_status_is_passed_through() {
    let guest = wat_guest("proc_exit_status", EXIT_7);
    let out = host(["run".as_ref(), guest.as_os_str()]);
    assert_eq!(out.status, Some(7), "{out:?}");
    assert_eq!(out.stderr, "");
}

fn exit_with(test: &str, status: u32) -> std::path::PathBuf {
    wat_guest(
        test,
        &format!(
            r#"(module
              (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
              (memory (export "memory") 1)
              (func (export "_start") (call $proc_exit (i32.const {status}))))"#
        ),
    )
}

#[test]
fn a_guest_status_the_host_uses_becomes_125_with_a_line() {
    // Before, `proc_exit(2)` exited 2, which reads like "could not load".
    for status in [2, 124, 125] {
        let out = host(["run".as_ref(), exit_with(&format!("reserved_status_{status}"), status).as_os_str()]);
        assert_eq!(out.status, Some(125), "{out:?}");
        assert_eq!(
            out.stderr,
            format!(
                "trio-wasi-host: the guest exited with status {status}, which the host uses for its own \
                 errors; exiting with 125 instead\n"
            )
        );
    }
    for status in [0, 1, 3, 123] {
        let out = host(["run".as_ref(), exit_with(&format!("own_status_{status}"), status).as_os_str()]);
        assert_eq!(out.status, Some(status as i32), "{out:?}");
        assert_eq!(out.stderr, "");
    }
}

#[test]
fn a_failing_guest_prints_one_line_even_with_rust_backtrace() {
    // WASI preview 1 refuses exit statuses of 126 and up: the guest fails
    // (neither a trap nor an exit). Its report used to carry the host's own
    // stack under RUST_BACKTRACE=1 (25-50 lines).
    let guest = exit_with("invalid_exit_status", 200);
    for backtrace in ["1", "full"] {
        let out = util::run_with_deadline(
            std::process::Command::new(env!("CARGO_BIN_EXE_trio-wasi-host"))
                .args(["run".as_ref(), guest.as_os_str()])
                .env("RUST_BACKTRACE", backtrace)
                .env("RUST_LIB_BACKTRACE", backtrace),
        );
        assert_eq!(out.status, Some(134), "{out:?}");
        let mut lines = out.stderr.lines();
        assert_eq!(
            lines.next(),
            Some("trio-wasi-host: guest failed: exit with invalid exit status outside of [0..126)"),
            "RUST_BACKTRACE={backtrace}: {out:?}"
        );
        // Then the guest's wasm backtrace, and nothing of the host's stack.
        assert_eq!(lines.next(), Some("wasm backtrace:"), "{out:?}");
        let frames: Vec<&str> = lines.collect();
        assert!(!frames.is_empty() && frames.len() <= 3, "{out:?}");
        assert!(frames.iter().all(|l| l.contains("wasm function")), "{out:?}");
    }
}

#[test]
fn returning_from_start_is_status_0_and_stdout_is_inherited() {
    let guest = wat_guest(
        "hello",
        r#"(module
          (import "wasi_snapshot_preview1" "fd_write"
            (func $fd_write (param i32 i32 i32 i32) (result i32)))
          (memory (export "memory") 1)
          (data (i32.const 16) "hello\n")
          (func (export "_start")
            ;; iovec at 0: base 16, len 6; bytes written at 8
            (i32.store (i32.const 0) (i32.const 16))
            (i32.store (i32.const 4) (i32.const 6))
            (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#,
    );
    let out = host(["run".as_ref(), guest.as_os_str()]);
    assert_eq!(out.status, Some(0), "{out:?}");
    assert_eq!(out.stdout, "hello\n");
}

#[test]
fn args_and_env_reach_the_guest() {
    // Exits with argc + 10 * (number of environment variables).
    let guest = wat_guest(
        "args_env",
        r#"(module
          (import "wasi_snapshot_preview1" "args_sizes_get"
            (func $args_sizes_get (param i32 i32) (result i32)))
          (import "wasi_snapshot_preview1" "environ_sizes_get"
            (func $environ_sizes_get (param i32 i32) (result i32)))
          (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
          (memory (export "memory") 1)
          (func (export "_start")
            (drop (call $args_sizes_get (i32.const 0) (i32.const 4)))
            (drop (call $environ_sizes_get (i32.const 8) (i32.const 12)))
            (call $proc_exit
              (i32.add (i32.load (i32.const 0))
                       (i32.mul (i32.const 10) (i32.load (i32.const 8)))))))"#,
    );
    let out = host(["run".as_ref(), guest.as_os_str()]);
    assert_eq!(out.status, Some(1), "argv[0] only, no env: {out:?}");
    let out = host([
        "run".as_ref(),
        guest.as_os_str(),
        "--env".as_ref(),
        "A=1".as_ref(),
        "--env=B=2".as_ref(),
        "--".as_ref(),
        "x".as_ref(),
        "--fuel".as_ref(),
    ]);
    assert_eq!(out.status, Some(23), "{out:?}");
}

#[test]
fn trap_exits_134_with_backtrace() {
    let guest = wat_guest(
        "trap",
        r#"(module
          (func $boom unreachable)
          (func (export "_start") (call $boom)))"#,
    );
    let out = host(["run".as_ref(), guest.as_os_str()]);
    assert_eq!(out.status, Some(134), "{out:?}");
    assert!(out.stderr.starts_with("trio-wasi-host: guest trapped: "), "{out:?}");
    assert_contains(&out.stderr, &["unreachable", "boom", "wasm backtrace"]);
}

#[test]
fn infinite_loop_runs_out_of_fuel() {
    let guest = wat_guest("fuel", r#"(module (func (export "_start") (loop $spin (br $spin))))"#);
    let out = host(["run".as_ref(), guest.as_os_str(), "--fuel".as_ref(), "100000".as_ref()]);
    assert_eq!(out.status, Some(134), "{out:?}");
    assert_eq!(out.stderr, "trio-wasi-host: guest ran out of fuel (100000 units)\n");
}

/// Grows memory by 10 pages and aborts (traps) if that fails.
const GROW_OR_ABORT: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "_start")
    (if (i32.eq (memory.grow (i32.const 10)) (i32.const -1))
      (then unreachable))))"#;

#[test]
fn refused_growth_then_abort_is_out_of_memory() {
    let guest = wat_guest("memory_limit", GROW_OR_ABORT);
    let out = host(["run".as_ref(), guest.as_os_str(), "--max-memory".as_ref(), "131072".as_ref()]);
    assert_eq!(out.status, Some(134), "{out:?}");
    assert_eq!(out.stderr, "trio-wasi-host: guest ran out of memory (limit 131072 bytes)\n");
}

#[test]
fn growth_within_the_limit_succeeds() {
    let guest = wat_guest("memory_ok", GROW_OR_ABORT);
    let out = host(["run".as_ref(), guest.as_os_str(), "--max-memory=1M".as_ref()]);
    assert_eq!(out.status, Some(0), "{out:?}");
}

#[test]
fn guest_handling_refused_growth_keeps_its_status() {
    let guest = wat_guest(
        "memory_handled",
        r#"(module
          (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
          (memory (export "memory") 1)
          (func (export "_start")
            (if (i32.eq (memory.grow (i32.const 10)) (i32.const -1))
              (then (call $proc_exit (i32.const 5))))))"#,
    );
    let out = host(["run".as_ref(), guest.as_os_str(), "--max-memory".as_ref(), "64K".as_ref()]);
    assert_eq!(out.status, Some(5), "{out:?}");
}

#[test]
fn initial_memory_over_the_limit_is_out_of_memory() {
    let guest = wat_guest("memory_initial", r#"(module (memory (export "memory") 4) (func (export "_start")))"#);
    let out = host(["run".as_ref(), guest.as_os_str(), "--max-memory".as_ref(), "65536".as_ref()]);
    assert_eq!(out.status, Some(134), "{out:?}");
    assert_contains(&out.stderr, &["guest ran out of memory (limit 65536 bytes)"]);
}

/// A guest with a 1-page memory and a 1-element table that grows the table
/// by `table_elements`, then the memory by `memory_pages`, and aborts
/// (traps) if either growth is refused.
fn table_guest(test: &str, table_elements: u32, memory_pages: u32) -> std::path::PathBuf {
    wat_guest(
        test,
        &format!(
            r#"(module
          (memory (export "memory") 1)
          (table 1 funcref)
          (func (export "_start")
            (if (i32.eq (table.grow (ref.null func) (i32.const {table_elements})) (i32.const -1))
              (then unreachable))
            (if (i32.eq (memory.grow (i32.const {memory_pages})) (i32.const -1))
              (then unreachable))))"#
        ),
    )
}

#[test]
fn table_growth_past_the_limit_is_out_of_memory() {
    // 1 Mi elements are 8 MiB at 8 bytes each (4 MiB on 32-bit hosts).
    let guest = table_guest("table_limit", 1 << 20, 0);
    let out = host(["run".as_ref(), guest.as_os_str(), "--max-memory".as_ref(), "1M".as_ref()]);
    assert_eq!(out.status, Some(134), "{out:?}");
    assert_eq!(out.stderr, "trio-wasi-host: guest ran out of memory (limit 1048576 bytes)\n");
}

#[test]
fn table_growth_within_the_limit_succeeds() {
    let guest = table_guest("table_ok", 1000, 0);
    let out = host(["run".as_ref(), guest.as_os_str(), "--max-memory".as_ref(), "1M".as_ref()]);
    assert_eq!(out.status, Some(0), "{out:?}");
    assert_eq!(out.stderr, "");
}

#[test]
fn memory_and_tables_share_one_budget() {
    // 64 Ki elements (512 KiB on 64-bit hosts) fit in 1 MiB, and so do 11
    // pages of memory (704 KiB), but not both.
    let guest = table_guest("table_and_memory", 1 << 16, 10);
    let out = host(["run".as_ref(), guest.as_os_str(), "--max-memory".as_ref(), "1M".as_ref()]);
    if cfg!(target_pointer_width = "64") {
        assert_eq!(out.status, Some(134), "{out:?}");
        assert_eq!(out.stderr, "trio-wasi-host: guest ran out of memory (limit 1048576 bytes)\n");
    }
    let out = host(["run".as_ref(), guest.as_os_str(), "--max-memory".as_ref(), "2M".as_ref()]);
    assert_eq!(out.status, Some(0), "{out:?}");
}

#[test]
fn initial_table_over_the_limit_is_out_of_memory() {
    let guest = wat_guest("table_initial", r#"(module (table 1000000 funcref) (func (export "_start")))"#);
    let out = host(["run".as_ref(), guest.as_os_str(), "--max-memory".as_ref(), "1M".as_ref()]);
    assert_eq!(out.status, Some(134), "{out:?}");
    assert_contains(&out.stderr, &["guest ran out of memory (limit 1048576 bytes)"]);
}

#[test]
fn missing_file() {
    let path = scratch("missing_file").join("nope.wasm");
    let out = host(["run".as_ref(), path.as_os_str()]);
    assert_eq!(out.status, Some(2), "{out:?}");
    assert_contains(&out.stderr, &[&format!("trio-wasi-host: cannot read {}: ", path.display())]);
    assert_eq!(out.stderr.lines().count(), 1, "{out:?}");
}

#[test]
fn non_wasm_file() {
    let path = scratch("non_wasm").join("readme.txt");
    std::fs::write(&path, "(module) is text, not binary\n").unwrap();
    let out = host(["run".as_ref(), path.as_os_str()]);
    assert_eq!(out.status, Some(2), "{out:?}");
    assert_eq!(
        out.stderr,
        format!("trio-wasi-host: {} is not a WebAssembly module or component (bad header)\n", path.display())
    );
}

#[test]
fn invalid_module_body() {
    let path = scratch("invalid_body").join("bad.wasm");
    std::fs::write(&path, b"\0asm\x01\0\0\0\x01\xff\xff").unwrap();
    let out = host(["run".as_ref(), path.as_os_str()]);
    assert_eq!(out.status, Some(2), "{out:?}");
    assert_contains(&out.stderr, &[&format!("trio-wasi-host: cannot compile {}: ", path.display())]);
    assert_eq!(out.stderr.lines().count(), 1, "{out:?}");
}

#[test]
fn unknown_import_is_a_link_error() {
    let guest = wat_guest(
        "unknown_import",
        r#"(module
          (import "env" "mystery" (func))
          (func (export "_start")))"#,
    );
    let out = host(["run".as_ref(), guest.as_os_str()]);
    assert_eq!(out.status, Some(2), "{out:?}");
    assert_contains(&out.stderr, &[&format!("trio-wasi-host: cannot link {}: ", guest.display()), "env::mystery"]);
    assert_eq!(out.stderr.lines().count(), 1, "{out:?}");
}

#[test]
fn module_without_start_is_a_link_error() {
    let guest = wat_guest("no_start", r#"(module (func (export "main")))"#);
    let out = host(["run".as_ref(), guest.as_os_str()]);
    assert_eq!(out.status, Some(2), "{out:?}");
    assert_contains(&out.stderr, &["cannot link", "no `_start` export"]);
}

#[test]
fn listen_with_a_preview_1_module_is_refused() {
    let guest = wat_guest("p1_listen", EXIT_7);
    let out = host(["run".as_ref(), guest.as_os_str(), "--listen".as_ref(), "127.0.0.1:0".as_ref()]);
    assert_eq!(out.status, Some(2), "{out:?}");
    assert_contains(&out.stderr, &["preview 1", "--listen", "wasmtime-cli 46", "-Stcplisten"]);
    assert_eq!(out.stderr.lines().count(), 1, "{out:?}");
}

#[test]
fn preopened_dir_must_exist() {
    let guest = wat_guest("bad_dir", EXIT_7);
    let dir = scratch("bad_dir").join("no-such-dir");
    let arg = format!("{}::/data", dir.display());
    let out = host(["run".as_ref(), guest.as_os_str(), "--dir".as_ref(), arg.as_ref()]);
    assert_eq!(out.status, Some(2), "{out:?}");
    assert_contains(&out.stderr, &["cannot open --dir"]);
}

/// Opens `in.txt` in the first preopen for reading, then tries to create
/// `new.txt` and to truncate `in.txt`; exits with 1 if the create worked,
/// + 2 if the truncate worked, + 4 if the read-only open failed.
const DIR_WRITER: &str = r#"(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "in.txt")
  (data (i32.const 200) "new.txt")
  (func $open (param $path i32) (param $len i32) (param $oflags i32) (param $rights i64) (result i32)
    (call $path_open (i32.const 3) (i32.const 0) (local.get $path) (local.get $len)
      (local.get $oflags) (local.get $rights) (i64.const 0) (i32.const 0) (i32.const 0)))
  (func (export "_start")
    (local $status i32)
    ;; O_CREAT|O_EXCL, FD_WRITE
    (if (i32.eqz (call $open (i32.const 200) (i32.const 7) (i32.const 5) (i64.const 64)))
      (then (local.set $status (i32.const 1))))
    ;; O_TRUNC, FD_WRITE
    (if (i32.eqz (call $open (i32.const 100) (i32.const 6) (i32.const 8) (i64.const 64)))
      (then (local.set $status (i32.or (local.get $status) (i32.const 2)))))
    ;; FD_READ
    (if (call $open (i32.const 100) (i32.const 6) (i32.const 0) (i64.const 2))
      (then (local.set $status (i32.or (local.get $status) (i32.const 4)))))
    (call $proc_exit (local.get $status))))"#;

#[test]
fn read_only_dir_refuses_creating_and_truncating_but_reads() {
    let guest = wat_guest("ro_dir", DIR_WRITER);
    for (suffix, read_only) in [(":ro", true), ("", false)] {
        let data = scratch("ro_dir").join(if read_only { "ro" } else { "rw" });
        let _ = std::fs::remove_dir_all(&data);
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("in.txt"), "keep me\n").unwrap();
        let arg = format!("{}::/data{suffix}", data.display());
        let out = host(["run".as_ref(), guest.as_os_str(), "--dir".as_ref(), arg.as_ref()]);
        let contents = std::fs::read_to_string(data.join("in.txt")).unwrap();
        if read_only {
            assert_eq!(out.status, Some(0), "create or truncate worked, or read failed: {out:?}");
            assert_eq!(contents, "keep me\n");
            assert!(!data.join("new.txt").exists());
        } else {
            assert_eq!(out.status, Some(3), "{out:?}");
            assert_eq!(contents, "");
            assert!(data.join("new.txt").exists());
        }
        assert_eq!(out.stderr, "");
    }
}

#[test]
fn read_only_dir_with_an_unknown_suffix_is_a_usage_error() {
    let guest = wat_guest("ro_dir_bad", EXIT_7);
    let arg = format!("{}::/data:rw", scratch("ro_dir_bad").display());
    let out = host(["run".as_ref(), guest.as_os_str(), "--dir".as_ref(), arg.as_ref()]);
    assert_eq!(out.status, Some(2), "{out:?}");
    assert_contains(&out.stderr, &["invalid --dir", "usage:"]);
    assert_eq!(out.stderr.lines().count(), 2, "one line and the usage line: {out:?}");
}

/// Sleeps 60 s in one `poll_oneoff` on the monotonic clock, then exits 0.
const SLEEP_60S: &str = r#"(module
  (import "wasi_snapshot_preview1" "poll_oneoff"
    (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    ;; subscription at 0: userdata 0, tag 0 (clock), id 1 (monotonic),
    ;; timeout 60 s relative, precision 0, flags 0; event at 64; count at 128
    (i32.store8 (i32.const 8) (i32.const 0))
    (i32.store (i32.const 16) (i32.const 1))
    (i64.store (i32.const 24) (i64.const 60000000000))
    (drop (call $poll_oneoff (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))))"#;

#[test]
fn timeout_stops_a_sleeping_guest_with_124() {
    let guest = wat_guest("timeout_sleep", SLEEP_60S);
    let start = std::time::Instant::now();
    let out = host(["run".as_ref(), guest.as_os_str(), "--timeout".as_ref(), "1s".as_ref()]);
    // A bound, not a timing: the guest alone would take 60 s.
    assert!(start.elapsed() < std::time::Duration::from_secs(30), "{out:?}");
    assert_eq!(out.status, Some(124), "{out:?}");
    assert_eq!(out.stderr, "trio-wasi-host: guest stopped: --timeout 1s passed\n");
}

#[test]
fn timeout_stops_a_looping_guest_with_124() {
    let guest = wat_guest("timeout_loop", r#"(module (func (export "_start") (loop (br 0))))"#);
    let out = host(["run".as_ref(), guest.as_os_str(), "--timeout=500ms".as_ref()]);
    assert_eq!(out.status, Some(124), "{out:?}");
    assert_eq!(out.stderr, "trio-wasi-host: guest stopped: --timeout 500ms passed\n");
}

#[test]
fn a_quick_guest_under_a_generous_timeout_keeps_its_status() {
    let guest = wat_guest("timeout_quick", EXIT_7);
    let out = host(["run".as_ref(), guest.as_os_str(), "--timeout".as_ref(), "1m".as_ref()]);
    assert_eq!(out.status, Some(7), "{out:?}");
    assert_eq!(out.stderr, "");
}

#[test]
fn timeout_with_stderr_unwritable_still_exits_124() {
    let guest = wat_guest("timeout_full", SLEEP_60S);
    for stderr in [full_stderr(), closed_pipe_stderr()] {
        let status = host_status_with_stderr(
            ["run".as_ref(), guest.as_os_str(), "--timeout".as_ref(), "500ms".as_ref()],
            stderr,
        );
        assert_eq!(status, Some(124));
    }
}

#[test]
fn usage_errors_exit_2_with_a_usage_line() {
    for args in [
        &[][..],
        &["run"],
        &["frobnicate"],
        &["run", "g.wasm", "--bogus"],
        &["run", "g.wasm", "--fuel", "lots"],
        &["run", "g.wasm", "--listen", "localhost"],
        &["run", "g.wasm", "stray"],
    ] {
        let out = host(args);
        assert_eq!(out.status, Some(2), "{args:?}: {out:?}");
        assert!(out.stderr.starts_with("trio-wasi-host: "), "{out:?}");
        assert_contains(&out.stderr, &["\nusage: trio-wasi-host run GUEST.wasm"]);
        assert_eq!(out.stderr.lines().count(), 2, "{out:?}");
    }
}

#[test]
fn help_goes_to_stdout_with_status_0() {
    let out = host(["--help"]);
    assert_eq!(out.status, Some(0), "{out:?}");
    assert_contains(&out.stdout, &["usage: trio-wasi-host run", "--listen ADDR"]);
    assert_eq!(out.stderr, "");
}

#[test]
fn unwritable_stderr_keeps_the_exit_status() {
    // The host's own line cannot be written: the status is still 134 or 2,
    // not a panic's 101.
    let guest = wat_guest("trap_no_stderr", r#"(module (func (export "_start") unreachable))"#);
    let missing = scratch("missing_no_stderr").join("nope.wasm");
    for (name, stderr) in
        [("/dev/full", full_stderr as fn() -> std::process::Stdio), ("closed pipe", closed_pipe_stderr)]
    {
        assert_eq!(host_status_with_stderr(["run".as_ref(), guest.as_os_str()], stderr()), Some(134), "{name}");
        assert_eq!(host_status_with_stderr(["run".as_ref(), missing.as_os_str()], stderr()), Some(2), "{name}");
    }
}

#[test]
fn help_with_stdout_closed_still_exits_0() {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_trio-wasi-host"))
        .arg("--help")
        .stdin(std::process::Stdio::null())
        .stdout(writer)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let status = util::wait_with_deadline(&mut child);
    assert_eq!(status, Some(0));
}
