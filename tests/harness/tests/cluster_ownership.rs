//! tests/cluster/lib.sh stops a cluster at the end of a run only if that run started it and
//! nobody else (another run, a demo, a test process) still uses it. Each case runs a real bash
//! script against a scratch state directory, with the stop command replaced by one that leaves
//! a marker file, and checks whether the marker appeared.

use std::path::{Path, PathBuf};
use std::process::Command;

struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!("ownership-{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(dir.join("cluster")).unwrap();
        let stub = dir.join("cluster-down-stub.sh");
        std::fs::write(&stub, "#!/bin/sh\ntouch \"$STOPPED_MARKER\"\n").unwrap();
        Command::new("chmod").arg("755").arg(&stub).status().unwrap();
        Self(dir)
    }

    fn stopped(&self) -> bool {
        self.0.join("stopped").exists()
    }

    /// Run `body` in bash after sourcing lib.sh and claiming the cluster for this run; returns
    /// stderr (where lib.sh logs).
    fn run(&self, body: &str, env: &[(&str, &str)]) -> String {
        let lib = test_harness::root().join("tests/cluster/lib.sh");
        let script = format!(
            "set -euo pipefail\nsource {}\nclaim_cluster_for_this_run\n{body}\n",
            lib.display()
        );
        let output = Command::new("bash")
            .args(["-c", &script])
            .env("TB_CLUSTER_DIR", self.0.join("cluster"))
            .env("TB_CLUSTER_DOWN", self.0.join("cluster-down-stub.sh"))
            .env("STOPPED_MARKER", self.0.join("stopped"))
            .env_remove("KEEP_CLUSTER")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stderr).into_owned()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        let _ = std::fs::remove_dir_all(users_dir(&self.0));
    }
}

fn users_dir(scratch: &Path) -> PathBuf {
    PathBuf::from(format!("{}.users", scratch.join("cluster").display()))
}

/// This run recorded as the cluster's starter (what cluster-up.sh does when it starts one).
const STARTED_BY_THIS_RUN: &str = r#"echo "$TB_RUN_ID" >"$TB_STARTED_BY""#;

#[test]
fn a_run_stops_the_cluster_it_started() {
    let scratch = Scratch::new("own");
    scratch.run(STARTED_BY_THIS_RUN, &[]);
    assert!(scratch.stopped());
}

#[test]
fn a_run_never_stops_a_cluster_another_run_started() {
    let scratch = Scratch::new("other");
    scratch.run(r#"echo "ci.sh-1" >"$TB_STARTED_BY""#, &[]);
    assert!(!scratch.stopped());
}

#[test]
fn a_cluster_still_used_by_another_run_is_kept() {
    let scratch = Scratch::new("shared");
    // A live process (this test) holds a claim.
    let body = format!("{STARTED_BY_THIS_RUN}\ncluster_claim other-run {}", std::process::id());
    let log = scratch.run(&body, &[]);
    assert!(!scratch.stopped(), "{log}");
    assert!(log.contains("still used by other-run"), "{log}");
}

#[test]
fn a_demo_keeps_the_cluster_until_demo_down() {
    let scratch = Scratch::new("demo");
    let log = scratch.run(
        &format!("{STARTED_BY_THIS_RUN}\ncluster_claim demo-tradingbot-demo"),
        &[],
    );
    assert!(!scratch.stopped(), "{log}");
    assert!(log.contains("demo-tradingbot-demo"), "{log}");
}

#[test]
fn the_claim_of_a_finished_process_lapses() {
    let scratch = Scratch::new("lapsed");
    let mut finished = Command::new("true").spawn().unwrap();
    let pid = finished.id();
    finished.wait().unwrap();
    scratch.run(&format!("{STARTED_BY_THIS_RUN}\ncluster_claim gone-run {pid}"), &[]);
    assert!(scratch.stopped());
    assert!(!users_dir(&scratch.0).join("gone-run").exists());
}

#[test]
fn keep_cluster_keeps_it() {
    let scratch = Scratch::new("keep");
    scratch.run(STARTED_BY_THIS_RUN, &[("KEEP_CLUSTER", "1")]);
    assert!(!scratch.stopped());
}

#[test]
fn the_run_releases_its_own_claim() {
    let scratch = Scratch::new("release");
    scratch.run(r#"echo "someone-else" >"$TB_STARTED_BY""#, &[]);
    let left: Vec<_> = std::fs::read_dir(users_dir(&scratch.0))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "claims left: {left:?}");
}
