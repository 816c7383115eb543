//! Running documented commands exactly as written: bash with `pipefail`, the docs' variables in
//! the environment, the cluster's kubectl and the workspace binaries first on PATH. Every
//! command that exits 0 is recorded in this process's [`ledger`], which the documentation test
//! compares with the docs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use test_harness::{Cluster, root};

static LEDGER: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// The [`crate::docs::key`]s of every command a [`Shell`] in this process ran successfully.
pub fn ledger() -> BTreeSet<String> {
    LEDGER.lock().map(|l| l.clone()).unwrap_or_default()
}

fn record(command: &str) {
    if let Ok(mut ledger) = LEDGER.lock() {
        ledger.insert(crate::docs::key(command));
    }
}

/// A command that did not exit 0.
#[derive(Debug, Clone)]
pub struct Failed {
    pub command: String,
    pub status: String,
    pub stdout: String,
    pub stderr: String,
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
            self.command, self.status, self.stdout, self.stderr
        )
    }
}

/// Where and with what documented commands run.
#[derive(Debug, Clone)]
pub struct Shell {
    kubeconfig: PathBuf,
    path: String,
    dir: PathBuf,
    vars: BTreeMap<String, String>,
}

impl Shell {
    /// Commands against `cluster`, from the repository root.
    pub fn new(cluster: &Cluster) -> Self {
        let kubectl_dir = cluster
            .kubectl_path
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let path = format!(
            "{kubectl_dir}:{}:{}",
            root().join("target/debug").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        Self {
            kubeconfig: cluster.kubeconfig.clone(),
            path,
            dir: root(),
            vars: BTreeMap::new(),
        }
    }

    /// Set a variable the docs use (`$NS`, `$BOT`, ...).
    pub fn var(&mut self, name: &str, value: &str) -> &mut Self {
        self.vars.insert(name.to_string(), value.to_string());
        self
    }

    pub fn vars(&self) -> &BTreeMap<String, String> {
        &self.vars
    }

    /// The same shell working in `dir`.
    pub fn in_dir(&self, dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            ..self.clone()
        }
    }

    /// Run `command`; `Err` when it exits non-zero.
    pub fn run(&self, command: &str) -> Result<String, Failed> {
        let output = Command::new("bash")
            .args(["-o", "pipefail", "-c", command])
            .current_dir(&self.dir)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("PATH", &self.path)
            .envs(&self.vars)
            .output();
        let output = match output {
            Ok(output) => output,
            Err(e) => {
                return Err(Failed {
                    command: command.to_string(),
                    status: format!("not started: {e}"),
                    stdout: String::new(),
                    stderr: String::new(),
                });
            }
        };
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if output.status.success() {
            record(command);
            Ok(stdout)
        } else {
            Err(Failed {
                command: command.to_string(),
                status: output.status.to_string(),
                stdout,
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            })
        }
    }

    /// Start a long-running documented command (a server such as `perps-bot exporter ...`) in
    /// the background. It counts as run once [`Background::confirm`] finds it still running
    /// after the caller checked it works; it is stopped (its whole process group, by pid) when
    /// the returned value is dropped.
    pub fn spawn(&self, command: &str, log: &Path) -> Background {
        use std::os::unix::process::CommandExt;
        let out = std::fs::File::create(log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let child = Command::new("bash")
            .args(["-o", "pipefail", "-c", command])
            .current_dir(&self.dir)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("PATH", &self.path)
            .envs(&self.vars)
            .stdout(out.try_clone().expect("log file"))
            .stderr(out)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("`{command}`: {e}"));
        Background {
            command: command.to_string(),
            child,
            log: log.to_path_buf(),
        }
    }

    /// Run `command`, which must answer with exit `code` (a documented refusal, say); returns
    /// its stderr. A command that gave its documented answer counts as run.
    pub fn sh_fails(&self, command: &str, code: i32) -> String {
        match self.run(command) {
            Ok(stdout) => panic!("`{command}` succeeded, expected exit {code}:\n{stdout}"),
            Err(failed) => {
                assert_eq!(failed.status, format!("exit status: {code}"), "`{command}`: {failed:?}");
                record(command);
                failed.stderr
            }
        }
    }

    /// Run `command`, panicking with its output when it fails.
    pub fn sh(&self, command: &str) -> String {
        self.run(command).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Run `command` until it succeeds with output that satisfies `accept`. A failed run is
    /// tried again too, as a user would: the documented reads go through the API server's
    /// proxy to a pod, which answers 503 while the pod is briefly not ready. Panics after
    /// `timeout` with the last output or failure.
    pub async fn sh_until(
        &self,
        command: &str,
        what: &str,
        timeout: Duration,
        accept: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.run(command) {
                Ok(output) if accept(&output) => return output,
                Ok(output) => format!("printed:\n{output}"),
                Err(failed) => format!("failed: {failed}"),
            };
            if Instant::now() > deadline {
                panic!("timed out after {timeout:?} waiting for {what}; `{command}` last {last}");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// A documented command running in the background (see [`Shell::spawn`]).
pub struct Background {
    command: String,
    child: std::process::Child,
    log: PathBuf,
}

impl Background {
    /// What it printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Record it as run: it must still be running (a server that exited failed).
    pub fn confirm(&mut self) {
        assert!(
            self.running(),
            "`{}` exited: {:?}\n{}",
            self.command,
            self.child.try_wait(),
            self.log()
        );
        record(&self.command);
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if self.running() {
            // SAFETY: kill(2) on the process group we started (its id is the child's pid).
            unsafe {
                libc::kill(-(self.child.id() as i32), libc::SIGTERM);
            }
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shell() -> Shell {
        Shell::new(&Cluster {
            kubeconfig: PathBuf::from("/nonexistent/kubeconfig"),
            kubectl_path: PathBuf::from("/usr/bin/kubectl"),
        })
    }

    #[test]
    fn a_failing_command_is_an_error_and_not_recorded() {
        let error = shell().run("echo out; echo err >&2; exit 3").unwrap_err();
        assert!(error.status.contains('3'), "{error}");
        assert_eq!((error.stdout.trim(), error.stderr.trim()), ("out", "err"));
        assert!(!ledger().contains("echo out; echo err >&2; exit 3"));
        assert!(shell().run("false | true").is_err(), "pipefail");
    }

    #[test]
    fn variables_reach_the_command_and_successes_are_recorded() {
        let mut shell = shell();
        shell.var("BOT", "dev-bot");
        assert_eq!(shell.sh("echo $BOT").trim(), "dev-bot");
        assert!(ledger().contains("echo $BOT"));
    }

    #[test]
    fn a_background_command_is_recorded_when_confirmed_and_stopped_when_dropped() {
        let log = std::env::temp_dir().join(format!("shell-spawn-{}.log", std::process::id()));
        let mut server = shell().spawn("echo serving; sleep 60", &log);
        let pid = server.child.id();
        while !server.log().contains("serving") {
            std::thread::sleep(Duration::from_millis(20));
        }
        server.confirm();
        assert!(ledger().contains("echo serving; sleep 60"));
        drop(server);
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "stopped");
        let _ = std::fs::remove_file(log);
    }
}
