//! Builds the C and C++ programs in `tests/c/` against `libtrio.a` and
//! `libtrio.so` and runs them: plain (static and shared), under
//! AddressSanitizer + UndefinedBehaviorSanitizer, and under valgrind with
//! its default leak kinds (zero errors, zero definite or possible leaks: no
//! worker thread may be left alive at exit). Each program prints
//! `ok N - name` lines and exits 0. Also: the header compiles as C89, C99,
//! C++98 and C++17 with warnings as errors, libtrio.so has its SONAME, and
//! `ffi/install.sh` gives a prefix (versioned, stripped libraries) a C
//! program builds against with pkg-config and, through the CMake package,
//! the project in `tests/cmake/`.
//!
//! `TRIO_C_TESTS=test_errors,cpp_include cargo test -p trio-ffi --test
//! c_programs` runs only the programs named (a program made of
//! `NAME_unit_*` files is named `NAME`).
//!
//! Unix only (gcc, the sanitizers, valgrind, libtrio.so): on Windows the C
//! programs are built with mingw-w64 and run under Wine by
//! `ffi/windows-c-tests.sh`.
#![cfg(unix)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long one program may run (valgrind is slow).
const RUN_TIMEOUT: Duration = Duration::from_secs(300);

/// Libraries a static `libtrio.a` needs (`--print native-static-libs`).
const NATIVE_LIBS: &[&str] = &["-lgcc_s", "-lutil", "-lrt", "-lpthread", "-lm", "-ldl", "-lc"];

const C_FLAGS: &[&str] = &["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-D_POSIX_C_SOURCE=200809L", "-g"];
const CXX_FLAGS: &[&str] = &["-std=c++17", "-Wall", "-Wextra", "-Werror", "-g"];

/// The workspace root. The manifest directory is read when the test runs
/// (cargo and nextest set it): the compile-time value goes stale when a
/// cached target directory is reused by a clone in another folder. Its
/// parent, not `ffi/..`: paths built on it are compared with what `ldd`
/// prints, which has no `..` in it.
fn workspace() -> PathBuf {
    let manifest =
        std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    manifest.parent().map_or_else(|| manifest.join(".."), Path::to_path_buf)
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace().join("target"))
}

/// Builds the library (debug) once and returns the directory holding
/// `libtrio.a` and `libtrio.so`.
fn lib_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into()))
            .args(["build", "-p", "trio-ffi"])
            .env("CARGO_TARGET_DIR", target_dir())
            .current_dir(workspace())
            .status()
            .expect("running cargo build -p trio-ffi");
        assert!(status.success(), "cargo build -p trio-ffi failed");
        let dir = target_dir().join("debug");
        assert!(dir.join("libtrio.a").exists() && dir.join("libtrio.so").exists(), "no libtrio in {}", dir.display());
        // A program linked with -ltrio asks the loader for the SONAME,
        // libtrio.so.MAJOR, which cargo does not make: link it here (as
        // install.sh does in a prefix). Another test process may have made
        // it already.
        let soname = dir.join(soname());
        if std::fs::read_link(&soname).is_err() {
            let _ = std::fs::remove_file(&soname);
            if let Err(e) = std::os::unix::fs::symlink("libtrio.so", &soname) {
                assert!(e.kind() == std::io::ErrorKind::AlreadyExists, "linking {}: {e}", soname.display());
            }
        }
        dir
    })
}

/// The SONAME of libtrio.so (ffi/build.rs): `libtrio.so.MAJOR`.
fn soname() -> String {
    format!("libtrio.so.{}", env!("CARGO_PKG_VERSION_MAJOR"))
}

/// The test programs with extension `ext`.
fn programs(ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(workspace().join("tests/c"))
        .expect("tests/c")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        // Files named `NAME_unit_*` are translation units of program NAME.
        .filter(|p| !p.file_stem().is_some_and(|s| s.to_string_lossy().contains("_unit_")))
        .collect();
    v.sort();
    v
}

/// How a program is linked and run.
#[derive(Clone, Copy, PartialEq)]
enum Variant {
    Static,
    Shared,
    Sanitized,
    /// Linked statically, like `Static`, into a directory of its own: the
    /// tests run in parallel, and one must not rebuild a program another
    /// is running.
    Valgrind,
}

fn out_dir(variant: Variant) -> PathBuf {
    let name = match variant {
        Variant::Static => "static",
        Variant::Shared => "shared",
        Variant::Sanitized => "asan",
        Variant::Valgrind => "valgrind",
    };
    let dir = target_dir().join("c-tests").join(name);
    std::fs::create_dir_all(&dir).expect("creating the output directory");
    dir
}

/// The program a source file belongs to: its stem, without `_unit_*`.
fn program_name(source: &Path) -> String {
    let stem = source.file_stem().expect("a file name").to_string_lossy();
    stem.split("_unit_").next().unwrap_or(&stem).to_owned()
}

/// Compiles `sources` (C or C++) into one program.
fn compile(sources: &[PathBuf], variant: Variant) -> PathBuf {
    let cxx = sources.iter().any(|s| s.extension().is_some_and(|x| x == "cpp"));
    let out = out_dir(variant).join(program_name(&sources[0]));
    let lib = lib_dir();
    let mut cmd = Command::new(if cxx { "g++" } else { "gcc" });
    cmd.args(if cxx { CXX_FLAGS } else { C_FLAGS });
    cmd.arg("-I").arg(workspace().join("include"));
    cmd.arg("-I").arg(workspace().join("bindings/cpp"));
    if variant == Variant::Sanitized {
        cmd.arg("-fsanitize=address,undefined").arg("-fno-omit-frame-pointer");
    }
    cmd.args(sources).arg("-o").arg(&out);
    if cxx {
        // After `-x c++` sources, the archive must not be read as C++.
        cmd.args(["-x", "none"]);
    }
    match variant {
        Variant::Static | Variant::Sanitized | Variant::Valgrind => {
            cmd.arg(lib.join("libtrio.a")).args(NATIVE_LIBS);
        }
        Variant::Shared => {
            cmd.arg("-L").arg(lib).arg("-ltrio").arg(format!("-Wl,-rpath,{}", lib.display())).arg("-lpthread");
        }
    }
    let output = cmd.output().expect("running the C compiler");
    assert!(output.status.success(), "compiling {sources:?} failed:\n{}", String::from_utf8_lossy(&output.stderr));
    out
}

/// Runs `program` (through `wrapper`, if any) and checks it exits 0.
fn run(program: &Path, wrapper: &[&str], env: &[(&str, &str)]) {
    let mut cmd = match wrapper.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(program);
            c
        }
        None => Command::new(program),
    };
    // Every program finds libtrio.so through its rpath (or links libtrio.a):
    // cargo's LD_LIBRARY_PATH (which holds target/debug) must not hide a
    // program that would not find it on its own.
    cmd.env_remove("LD_LIBRARY_PATH");
    cmd.envs(env.iter().copied()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("starting {}: {e}", program.display()));
    // Read both pipes while the program runs: one that prints more than a
    // pipe holds (64 KiB) would otherwise block until the timeout.
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out_reader = drain(child.stdout.take().map(|p| Box::new(p) as Box<dyn std::io::Read + Send>));
    let err_reader = drain(child.stderr.take().map(|p| Box::new(p) as Box<dyn std::io::Read + Send>));
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("waiting for the program") {
            break s;
        }
        if start.elapsed() > RUN_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{} {wrapper:?} did not finish within {RUN_TIMEOUT:?}", program.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = out_reader.join().expect("reading the program's stdout");
    let stderr = err_reader.join().expect("reading the program's stderr");
    let stdout = String::from_utf8_lossy(&stdout);
    let stderr = String::from_utf8_lossy(&stderr);
    let oks = stdout.lines().filter(|l| l.starts_with("ok ")).count();
    println!("{} {wrapper:?}: {oks} checks passed", program.display());
    assert!(
        status.success() && oks > 0,
        "{} {wrapper:?} failed ({status}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        program.display()
    );
}

fn all_programs() -> Vec<Vec<PathBuf>> {
    let mut v: Vec<Vec<PathBuf>> = programs("c").into_iter().map(|p| vec![p]).collect();
    v.extend(programs("cpp").into_iter().map(|p| vec![p]));
    // Programs made of several translation units: tests/c/NAME_unit_*.c(pp).
    let mut units: std::collections::BTreeMap<String, Vec<PathBuf>> = Default::default();
    for p in std::fs::read_dir(workspace().join("tests/c")).expect("tests/c").filter_map(|e| e.ok().map(|e| e.path())) {
        let stem = p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        if let Some((name, _)) = stem.split_once("_unit_") {
            units.entry(name.to_owned()).or_default().push(p);
        }
    }
    for (_, mut files) in units {
        files.sort();
        v.push(files);
    }
    // TRIO_C_TESTS=test_errors,cpp_include runs only the programs named.
    if let Ok(only) = std::env::var("TRIO_C_TESTS") {
        let names: Vec<&str> = only.split(',').map(str::trim).collect();
        v.retain(|files| names.contains(&program_name(&files[0]).as_str()));
    }
    v
}

#[test]
fn programs_linked_statically() {
    for p in all_programs() {
        run(&compile(&p, Variant::Static), &[], &[]);
    }
}

#[test]
fn programs_linked_dynamically() {
    for p in all_programs() {
        run(&compile(&p, Variant::Shared), &[], &[]);
    }
}

#[test]
fn programs_under_address_and_undefined_sanitizers() {
    for p in all_programs() {
        run(
            &compile(&p, Variant::Sanitized),
            &[],
            &[
                ("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0"),
                ("UBSAN_OPTIONS", "halt_on_error=1:print_stacktrace=1"),
            ],
        );
    }
}

#[test]
fn programs_under_valgrind() {
    if Command::new("valgrind").arg("--version").output().is_err() {
        // Every machine of this project has valgrind; say so loudly if not.
        eprintln!("*** SKIPPED: valgrind is not installed ***");
        assert!(std::env::var_os("TRIO_ALLOW_SKIP").is_some(), "valgrind is missing (set TRIO_ALLOW_SKIP=1 to skip)");
        return;
    }
    for p in all_programs() {
        let program = compile(&p, Variant::Valgrind);
        run(&program, &["valgrind", "-q", "--error-exitcode=99", "--leak-check=full", "--fair-sched=yes"], &[]);
    }
}

#[test]
fn header_compiles_as_c99_and_cpp17() {
    let header = workspace().join("include/libtrio.h");
    for (compiler, flags, lang) in [("gcc", C_FLAGS, "c"), ("g++", CXX_FLAGS, "c++")] {
        let out = Command::new(compiler)
            .args(flags)
            .args(["-fsyntax-only", "-x", lang])
            .arg(&header)
            .output()
            .expect("running the compiler");
        assert!(out.status.success(), "{compiler} rejects libtrio.h:\n{}", String::from_utf8_lossy(&out.stderr));
    }
}

/// `-std=c89 -pedantic` (and C++98) accept the header: no `//` comments,
/// no comment after `#endif`, nothing newer than C89 but `<stdint.h>`.
#[test]
fn header_compiles_as_c89_and_cpp98() {
    let header = workspace().join("include/libtrio.h");
    for (compiler, std, lang) in [("gcc", "-std=c89", "c"), ("g++", "-std=c++98", "c++")] {
        let out = Command::new(compiler)
            .args([std, "-pedantic", "-Wall", "-Wextra", "-Werror", "-fsyntax-only", "-x", lang])
            .arg(&header)
            .output()
            .expect("running the compiler");
        assert!(out.status.success(), "{compiler} {std} rejects libtrio.h:\n{}", String::from_utf8_lossy(&out.stderr));
    }
}

/// The SONAME of an ELF file as `readelf -d` shows it, if it has one.
fn elf_soname(file: &Path) -> Option<String> {
    let out = Command::new("readelf").arg("-d").arg(file).output().expect("running readelf (binutils)");
    assert!(out.status.success(), "readelf -d {} failed", file.display());
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find(|l| l.contains("(SONAME)"))
        .and_then(|l| l.split_once('[').and_then(|(_, r)| r.split_once(']')).map(|(name, _)| name.to_owned()))
}

/// The names of the sections of an ELF file or of every member of an
/// archive (`readelf -S -W`).
fn elf_sections(file: &Path) -> Vec<String> {
    let out = Command::new("readelf").args(["-S", "-W"]).arg(file).output().expect("running readelf (binutils)");
    assert!(out.status.success(), "readelf -S {} failed", file.display());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix('[').and_then(|r| r.split_once(']')))
        .filter_map(|(_, rest)| rest.split_whitespace().next().map(str::to_owned))
        .collect()
}

#[test]
fn shared_library_has_its_soname() {
    let so = lib_dir().join("libtrio.so");
    assert_eq!(elf_soname(&so).as_deref(), Some(soname().as_str()), "SONAME of {}", so.display());
}

/// A DWARF section (`.debug_gdb_scripts`, which Rust puts in every object
/// to load its pretty-printers, is a few bytes of loaded data, not debug
/// info, and stays).
fn is_dwarf(section: &str) -> bool {
    section.starts_with(".debug_") && section != ".debug_gdb_scripts"
}

/// `ffi/install.sh PREFIX --debug --strip` (the debug build, stripped as
/// the release install is): the versioned file names, the split debug info,
/// then a C program built with pkg-config (shared with an rpath and run
/// without LD_LIBRARY_PATH, and static), and the CMake package used by
/// `tests/cmake`.
#[test]
fn install_gives_a_prefix_for_pkg_config_and_cmake() {
    let prefix = target_dir().join("c-tests/prefix");
    let _ = std::fs::remove_dir_all(&prefix);
    let status = Command::new("bash")
        .arg(workspace().join("ffi/install.sh"))
        .arg(&prefix)
        .args(["--debug", "--strip"])
        .env("CARGO_TARGET_DIR", target_dir())
        .status()
        .expect("running ffi/install.sh");
    assert!(status.success(), "ffi/install.sh failed");
    let lib = prefix.join("lib");

    // lib/libtrio.so -> libtrio.so.MAJOR -> libtrio.so.VERSION, a file
    // whose SONAME is libtrio.so.MAJOR.
    let versioned = format!("libtrio.so.{}", env!("CARGO_PKG_VERSION"));
    for (link, to) in [("libtrio.so".to_owned(), soname()), (soname(), versioned.clone())] {
        let target = std::fs::read_link(lib.join(&link)).unwrap_or_else(|e| panic!("lib/{link} is no symlink: {e}"));
        assert_eq!(target, Path::new(&to), "lib/{link} points at {}", target.display());
    }
    let so = lib.join(&versioned);
    assert!(so.symlink_metadata().expect("the versioned library").is_file(), "lib/{versioned} is not a file");
    assert_eq!(elf_soname(&so).as_deref(), Some(soname().as_str()), "SONAME of the installed {versioned}");

    // Stripped: no DWARF in the libraries; the .so's debug info is in
    // lib/.debug/, named by its .gnu_debuglink.
    for file in [so.clone(), lib.join("libtrio.a")] {
        let debug: Vec<String> = elf_sections(&file).into_iter().filter(|s| is_dwarf(s)).collect();
        assert!(debug.is_empty(), "{} still has debug sections {debug:?}", file.display());
    }
    assert!(elf_sections(&so).iter().any(|s| s == ".gnu_debuglink"), "{versioned} has no .gnu_debuglink");
    let debug_file = lib.join(".debug").join(format!("{versioned}.debug"));
    assert!(
        elf_sections(&debug_file).iter().any(|s| s == ".debug_info"),
        "{} has no .debug_info",
        debug_file.display()
    );

    install_builds_with_pkg_config(&prefix);
    install_builds_with_cmake(&prefix);
}

fn install_builds_with_pkg_config(prefix: &Path) {
    if Command::new("pkg-config").arg("--version").output().is_err() {
        eprintln!("*** SKIPPED: building with pkg-config: pkg-config is not installed ***");
        assert!(std::env::var_os("TRIO_ALLOW_SKIP").is_some(), "pkg-config is missing (set TRIO_ALLOW_SKIP=1 to skip)");
        return;
    }
    let pc_path = prefix.join("lib/pkgconfig");
    for static_link in [false, true] {
        let mut pc = Command::new("pkg-config");
        pc.env("PKG_CONFIG_PATH", &pc_path).args(["--cflags", "--libs", "trio"]);
        if static_link {
            pc.arg("--static");
        }
        let flags = String::from_utf8(pc.output().expect("pkg-config").stdout).expect("utf-8");
        let app = out_dir(Variant::Static).join(if static_link { "pc_static" } else { "pc_shared" });
        let src = workspace().join("tests/c/test_tasks.c");
        let mut cc = Command::new("gcc");
        cc.args(C_FLAGS).arg(&src).arg("-o").arg(&app);
        if static_link {
            // Only the archive is wanted: ask the linker for it by name.
            cc.arg(prefix.join("lib/libtrio.a"));
        }
        cc.args(flags.split_whitespace());
        if !static_link {
            // What ffi/README.md tells a user to add for a prefix the
            // loader does not search.
            cc.arg(format!("-Wl,-rpath,{}", prefix.join("lib").display()));
        }
        let out = cc.output().expect("gcc");
        assert!(
            out.status.success(),
            "building with `pkg-config {flags}` failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        if !static_link {
            assert_loads_libtrio_from(&app, prefix);
        }
        // run() clears LD_LIBRARY_PATH: the rpath alone finds the library.
        run(&app, &[], &[]);
    }
}

/// `ldd program` (without LD_LIBRARY_PATH) resolves libtrio.so.MAJOR to
/// the prefix's lib/.
fn assert_loads_libtrio_from(program: &Path, prefix: &Path) {
    let out = Command::new("ldd").arg(program).env_remove("LD_LIBRARY_PATH").output().expect("running ldd");
    let text = String::from_utf8_lossy(&out.stdout);
    let want = format!("{} => {}", soname(), prefix.join("lib").join(soname()).display());
    assert!(text.lines().any(|l| l.trim().starts_with(&want)), "{} does not load {want}:\n{text}", program.display());
}

fn install_builds_with_cmake(prefix: &Path) {
    if Command::new("cmake").arg("--version").output().is_err() {
        eprintln!("*** SKIPPED: the CMake package test (find_package(trio)): cmake is not installed ***");
        assert!(std::env::var_os("TRIO_ALLOW_SKIP").is_some(), "cmake is missing (set TRIO_ALLOW_SKIP=1 to skip)");
        return;
    }
    let source = workspace().join("tests/cmake");
    let configure = |build: &Path, extra: &[&str]| {
        let _ = std::fs::remove_dir_all(build);
        Command::new("cmake")
            .arg("-S")
            .arg(&source)
            .arg("-B")
            .arg(build)
            .arg(format!("-DCMAKE_PREFIX_PATH={}", prefix.display()))
            .args(extra)
            .output()
            .expect("running cmake")
    };
    let build = target_dir().join("c-tests/cmake-build");
    let out = configure(&build, &[]);
    assert!(
        out.status.success(),
        "cmake configure failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new("cmake").arg("--build").arg(&build).output().expect("running cmake --build");
    assert!(
        out.status.success(),
        "cmake --build failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_loads_libtrio_from(&build.join("app_shared"), prefix);
    run(&build.join("app_shared"), &[], &[]);
    run(&build.join("app_static"), &[], &[]);

    // trioConfigVersion.cmake refuses another 0.x minor version.
    let refused = target_dir().join("c-tests/cmake-build-0.2");
    let out = configure(&refused, &["-DTRIO_WANT_VERSION=0.2"]);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(
        !out.status.success() && text.contains("requested version \"0.2\""),
        "find_package(trio 0.2) was not refused:\n{text}"
    );
    let _ = std::fs::remove_dir_all(&refused);
}
