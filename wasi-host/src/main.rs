//! The `trio-wasi-host` command; see [`trio_wasi_host::HELP`].

#![forbid(unsafe_code)]

use std::io::Write;
use std::process::ExitCode;

use trio_wasi_host::{Command, HELP, parse_args, run_file, say};

fn main() -> ExitCode {
    let status = match parse_args(std::env::args_os().skip(1)) {
        Ok(Command::Help) => {
            // Ignored if stdout cannot be written, as every host line.
            let _ = std::io::stdout().lock().write_all(HELP.as_bytes());
            0
        }
        Ok(Command::Run { guest, config }) => match run_file(&guest, &config) {
            Ok(status) => status,
            Err(e) => fail(&e),
        },
        Err(e) => fail(&e),
    };
    exit(status)
}

fn fail(e: &trio_wasi_host::HostError) -> i32 {
    say(format_args!("trio-wasi-host: {e}\n"));
    e.exit_status()
}

fn exit(status: i32) -> ExitCode {
    // WASI keeps guest statuses within 0..=255; should one ever be outside,
    // keep the low 8 bits, as the OS would.
    ExitCode::from(status as u8)
}
