//! Pinning for the echo benchmark: with two or more CPUs, the server runs on
//! one and the load client on another, so neither steals the other's core
//! and the server's CPU time is its own.

use std::process::Command;

/// The CPUs this process may run on, in order (empty if unknown).
pub(crate) fn allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_getaffinity
    // writes at most its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize).filter(|&c| libc::CPU_ISSET(c, &set)).collect()
    }
}

fn one_cpu(cpu: usize) -> libc::cpu_set_t {
    // SAFETY: as above; `cpu` is below CPU_SETSIZE (it came from
    // `allowed_cpus`).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        set
    }
}

/// Makes the process `cmd` starts run only on `cpu` (all its threads).
pub(crate) fn pin_command(cmd: &mut Command, cpu: usize) {
    use std::os::unix::process::CommandExt;
    let set = one_cpu(cpu);
    // SAFETY: in the child only `sched_setaffinity`, a system call, runs.
    unsafe {
        cmd.pre_exec(move || {
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
            Ok(())
        });
    }
}

/// The calling thread runs only on `cpu` until this is dropped, then
/// wherever it could before.
pub(crate) struct PinnedThread {
    saved: Option<libc::cpu_set_t>,
}

impl PinnedThread {
    /// Pins the calling thread to `cpu` (if that fails, nothing changes).
    pub(crate) fn new(cpu: usize) -> PinnedThread {
        // SAFETY: get and set this thread's affinity with valid sets.
        unsafe {
            let size = std::mem::size_of::<libc::cpu_set_t>();
            let mut saved: libc::cpu_set_t = std::mem::zeroed();
            if libc::sched_getaffinity(0, size, &mut saved) != 0 {
                return PinnedThread { saved: None };
            }
            let set = one_cpu(cpu);
            if libc::sched_setaffinity(0, size, &set) != 0 {
                return PinnedThread { saved: None };
            }
            PinnedThread { saved: Some(saved) }
        }
    }
}

impl Drop for PinnedThread {
    fn drop(&mut self) {
        if let Some(saved) = &self.saved {
            // SAFETY: restores the set read in `new`.
            unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), saved) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinning_a_thread_is_undone() {
        let before = allowed_cpus();
        assert!(!before.is_empty());
        {
            let _p = PinnedThread::new(before[0]);
            assert_eq!(allowed_cpus(), vec![before[0]]);
        }
        assert_eq!(allowed_cpus(), before);
    }
}
