//! A child process's own peak RSS, read as it exits.
//!
//! The maximum RSS `wait4` reports for a child is no measure of the child: Linux starts a
//! process's maximum at exec from the memory it had before (`exec_mmap` keeps the larger of the
//! two), and a child spawned with `posix_spawn` (as `std::process::Command` does) or `fork` had
//! this bench's memory then. A 50 MiB parent spawning a 9 MiB replay gets 63 MiB back. So the
//! child is traced (`PTRACE_TRACEME`, which only a process's parent can be), stopped when it
//! exits (`PTRACE_O_TRACEEXIT`, before its memory is released), and its own high-water mark
//! (`VmHWM` of /proc/PID/status, which counts from its exec) is read there.
//!
//! Hand-written rather than a crate: the two crates that wrap ptrace (nix, and the ptrace-only
//! ones built on it) would add a dependency for four calls.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What one traced run gave.
pub struct Measured {
    pub stdout: String,
    /// From spawn to exit.
    pub wall: Duration,
    /// The child's own peak resident set size, in bytes.
    pub peak_rss: u64,
}

/// Run `command` to its end with stdout captured, and measure it; a non-zero exit is an error.
pub fn run(mut command: Command) -> anyhow::Result<Measured> {
    command.stdout(Stdio::piped());
    // SAFETY: the closure runs in the child between fork and exec and only calls ptrace, which
    // is async-signal-safe and touches no memory of ours.
    unsafe {
        command.pre_exec(|| {
            if libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let started = Instant::now();
    let mut child = command.spawn()?;
    let pid = child.id() as libc::pid_t;
    let mut stdout = child.stdout.take().expect("stdout is piped");
    // Read while the child runs, so a full pipe never stops it.
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).map(|_| text)
    });
    let outcome = trace_to_exit(pid);
    let wall = started.elapsed();
    let stdout = reader
        .join()
        .map_err(|_| anyhow::anyhow!("the stdout reader panicked"))??;
    let (status, peak_kb) = outcome?;
    anyhow::ensure!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{command:?} failed (wait status {status})"
    );
    let peak_kb = peak_kb.ok_or_else(|| anyhow::anyhow!("{command:?}: its peak RSS could not be read at exit"))?;
    Ok(Measured {
        stdout,
        wall,
        peak_rss: peak_kb * 1024,
    })
}

/// Let the traced child `pid` run to its end, passing its signals on; returns its wait status
/// and its VmHWM (KiB) read at the exit stop. On an error the child is killed and reaped, so
/// nothing is left holding the stdout pipe.
fn trace_to_exit(pid: libc::pid_t) -> anyhow::Result<(i32, Option<u64>)> {
    let traced = follow(pid);
    if traced.is_err() {
        // SAFETY: pid is our own child, not yet reaped (follow returns Ok once it is).
        unsafe { libc::kill(pid, libc::SIGKILL) };
        while wait(pid).is_ok_and(|s| !libc::WIFEXITED(s) && !libc::WIFSIGNALED(s)) {}
    }
    traced
}

fn follow(pid: libc::pid_t) -> anyhow::Result<(i32, Option<u64>)> {
    let mut peak_kb = None;
    let mut execed = false;
    loop {
        let status = wait(pid)?;
        if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
            return Ok((status, peak_kb));
        }
        let mut deliver = 0;
        if !execed && libc::WSTOPSIG(status) == libc::SIGTRAP {
            // The stop at exec: from here on, stop again at exit (and not at a later exec).
            execed = true;
            let options = (libc::PTRACE_O_TRACEEXIT | libc::PTRACE_O_EXITKILL | libc::PTRACE_O_TRACEEXEC) as usize;
            // SAFETY: pid is our stopped tracee.
            if unsafe { libc::ptrace(libc::PTRACE_SETOPTIONS, pid, 0, options) } == -1 {
                anyhow::bail!("PTRACE_SETOPTIONS({pid}): {}", std::io::Error::last_os_error());
            }
        } else if status >> 8 == (libc::SIGTRAP | (libc::PTRACE_EVENT_EXIT << 8)) {
            peak_kb = crate::operator_process::status_kb(pid as u32, "VmHWM:");
        } else if status >> 8 == (libc::SIGTRAP | (libc::PTRACE_EVENT_EXEC << 8)) {
            // A later exec: a ptrace event, not a signal to pass on.
        } else {
            // A signal that arrived (before exec too): the child gets it as untraced.
            deliver = libc::WSTOPSIG(status);
        }
        // SAFETY: pid is our stopped tracee; deliver is the signal it stopped with (or none).
        if unsafe { libc::ptrace(libc::PTRACE_CONT, pid, 0, deliver as usize) } == -1 {
            anyhow::bail!("PTRACE_CONT({pid}): {}", std::io::Error::last_os_error());
        }
    }
}

/// One wait status of `pid`, retried when a signal interrupts the wait.
fn wait(pid: libc::pid_t) -> anyhow::Result<i32> {
    loop {
        let mut status = 0;
        // SAFETY: waiting for our own child; status is a valid out-pointer.
        if unsafe { libc::waitpid(pid, &mut status, 0) } == pid {
            return Ok(status);
        }
        let error = std::io::Error::last_os_error();
        if error.kind() != std::io::ErrorKind::Interrupted {
            anyhow::bail!("waitpid({pid}): {error}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_childs_peak_is_its_own_not_its_parents() {
        // This test process holds 64 MiB; the child holds ~nothing.
        let ballast: Vec<u8> = vec![1; 64 << 20];
        let touched: u64 = ballast.iter().step_by(4096).map(|b| u64::from(*b)).sum();
        assert!(touched > 0);
        let measured = run(Command::new("true")).expect("true runs");
        assert!(
            measured.peak_rss < 16 << 20,
            "true's peak RSS read as {} bytes",
            measured.peak_rss
        );
        assert!(measured.peak_rss > 0);
    }

    #[test]
    fn a_failing_child_is_an_error() {
        assert!(run(Command::new("false")).is_err());
    }
}
