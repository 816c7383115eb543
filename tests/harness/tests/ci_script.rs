//! tests/ci.sh refuses to run when a suite script it lists is missing or not executable (a
//! suite that silently does not run is a skip). Each case copies ci.sh and lib.sh into a
//! scratch tree without the suite scripts, runs it, and checks it failed naming the script
//! before doing anything else.

use std::path::{Path, PathBuf};
use std::process::Command;

struct Tree(PathBuf);

impl Tree {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("ci-script-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for sub in ["tests/cluster", "tests/chart", "tests/argocd"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let root = test_harness::root();
        for file in ["tests/ci.sh", "tests/cluster/lib.sh"] {
            std::fs::copy(root.join(file), dir.join(file)).unwrap();
        }
        Self(dir)
    }

    fn suite(&self, path: &str, executable: bool) {
        let file = self.0.join(path);
        std::fs::write(&file, "#!/bin/sh\necho suite ran\n").unwrap();
        let mode = if executable { "755" } else { "644" };
        Command::new("chmod").arg(mode).arg(&file).status().unwrap();
    }

    fn run(&self) -> (bool, String) {
        let output = Command::new("bash")
            .arg(self.0.join("tests/ci.sh"))
            .env("TB_CLUSTER_DIR", self.0.join("cluster"))
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn fails_naming(tree: &Tree, script: &str, problem: &str) {
    let (ok, stderr) = tree.run();
    assert!(!ok, "ci.sh succeeded:\n{stderr}");
    assert!(stderr.contains(&format!("suite script {script} {problem}")), "{stderr}");
    assert!(
        !stderr.contains("==> format and lints"),
        "it stopped before any step:\n{stderr}"
    );
    assert!(!Path::new(&tree.0.join("cluster")).exists(), "nothing was started");
}

#[test]
fn a_missing_suite_script_fails_the_run() {
    let tree = Tree::new("missing");
    tree.suite("tests/argocd/test.sh", true);
    fails_naming(&tree, "tests/chart/test.sh", "is missing");
}

#[test]
fn a_suite_script_that_is_not_executable_fails_the_run() {
    let tree = Tree::new("not-executable");
    tree.suite("tests/chart/test.sh", true);
    tree.suite("tests/argocd/test.sh", false);
    fails_naming(&tree, "tests/argocd/test.sh", "is not executable");
}

#[test]
fn ignored_tests_are_found_in_a_cargo_test_log() {
    let tree = Tree::new("ignored");
    let log = tree.0.join("cargo-test.log");
    std::fs::write(
        &log,
        "test result: ok. 5 passed; 0 failed; 0 ignored; 0 measured\n\
         test result: ok. 3 passed; 0 failed; 2 ignored; 0 measured; 0 filtered out\n",
    )
    .unwrap();
    let output = Command::new("bash")
        .args(["-c", "source tests/cluster/lib.sh; ignored_tests \"$1\"", "-"])
        .arg(&log)
        .current_dir(&tree.0)
        .output()
        .unwrap();
    let found = String::from_utf8_lossy(&output.stdout);
    assert_eq!(found.lines().count(), 1, "{found}");
    assert!(found.contains("2 ignored"), "{found}");
}
