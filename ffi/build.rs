//! Gives the shared library its SONAME on ELF systems: `libtrio.so.MAJOR`
//! (`libtrio.so.0` for the 0.x releases), so a program linked against
//! `libtrio.so` records `NEEDED libtrio.so.0` and keeps working when a
//! compatible `libtrio.so.0.x.y` replaces the file. `ffi/install.sh`
//! installs `libtrio.so.VERSION` with the `libtrio.so.MAJOR` and
//! `libtrio.so` links; `tests/c_programs.rs` checks the SONAME.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let elf = matches!(
        os.as_str(),
        "linux" | "android" | "freebsd" | "netbsd" | "openbsd" | "dragonfly" | "illumos" | "solaris"
    );
    if elf {
        let major = std::env::var("CARGO_PKG_VERSION_MAJOR").unwrap_or_else(|_| "0".to_owned());
        // Only the cdylib (libtrio.so) is linked with it: not the test
        // binaries, and an archive is not linked at all.
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libtrio.so.{major}");
    }
}
