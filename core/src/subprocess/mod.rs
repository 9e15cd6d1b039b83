//! Subprocesses: `run_process` and `open_process`.
