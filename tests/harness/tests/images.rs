//! tests/images/build-images.sh is content-addressed: an image is rebuilt when its binary
//! changes (not when a list of tags says it exists), loaded into the cluster when the cluster
//! does not have it yet or containerd lost it, and left alone otherwise. Runs the real script on
//! copies of the workspace binaries, with a tag suffix so the real images are never replaced,
//! and removes its images afterwards.

use std::path::{Path, PathBuf};
use std::process::Command;

const SUFFIX: &str = "-imagetest";
const BINARIES: [&str; 3] = ["perps-bot", "tradingbot-operator", "exchange-sim"];

struct Fixture {
    dir: PathBuf,
    cluster: test_harness::Cluster,
}

impl Fixture {
    fn new() -> Self {
        let cluster = test_harness::cluster();
        let dir = std::env::temp_dir().join(format!("images-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        let built = test_harness::root().join("target/debug");
        for binary in BINARIES {
            let from = built.join(binary);
            assert!(from.exists(), "{} is not built (cargo build)", from.display());
            std::fs::copy(&from, dir.join("bin").join(binary)).unwrap();
        }
        Self { dir, cluster }
    }

    /// Run the script; its log (stderr).
    fn build(&self) -> String {
        let output = Command::new(test_harness::root().join("tests/images/build-images.sh"))
            .arg("--no-cargo")
            .env("IMAGES_BIN_DIR", self.dir.join("bin"))
            .env("IMAGES_OUT", self.dir.join("out"))
            .env("IMAGES_TAG_SUFFIX", SUFFIX)
            .output()
            .unwrap();
        let log = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "{log}");
        log
    }

    /// Make `binary` different (one byte appended: a new build).
    fn change(&self, binary: &str) {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.join("bin").join(binary))
            .unwrap();
        file.write_all(b"\0").unwrap();
    }

    fn ctr(&self, args: &[&str]) -> String {
        let socket = self.cluster.settings().containerd_socket();
        let output = Command::new("ctr")
            .arg("--address")
            .arg(&socket)
            .args(["-n", "k8s.io"])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn test_images(&self) -> Vec<String> {
        self.ctr(&["images", "ls", "-q"])
            .lines()
            .filter(|l| l.ends_with(SUFFIX))
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for image in self.test_images() {
            self.ctr(&["images", "rm", &image]);
        }
        let records = test_harness::cluster_dir().join("images");
        for entry in std::fs::read_dir(&records).into_iter().flatten().flatten() {
            if entry.file_name().to_string_lossy().contains(SUFFIX) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn lines_with<'a>(log: &'a str, needle: &str) -> Vec<&'a str> {
    log.lines().filter(|l| l.contains(needle)).collect()
}

#[test]
fn images_follow_their_binaries_not_a_list() {
    let fixture = Fixture::new();
    let first = fixture.build();
    assert_eq!(lines_with(&first, "build-images: building").len(), 5, "{first}");
    assert_eq!(fixture.test_images().len(), 5, "all five loaded");

    let again = fixture.build();
    assert_eq!(lines_with(&again, "up to date").len(), 5, "{again}");
    assert_eq!(lines_with(&again, "already loaded").len(), 5, "{again}");

    fixture.change("tradingbot-operator");
    let changed = fixture.build();
    let rebuilt = lines_with(&changed, "build-images: building");
    assert_eq!(rebuilt.len(), 1, "{changed}");
    assert!(
        rebuilt[0].contains(&format!("tradingbot-operator:dev{SUFFIX}")),
        "{changed}"
    );
    assert_eq!(lines_with(&changed, "build-images: loaded").len(), 1, "{changed}");

    // The cluster lost an image (e.g. a fresh cluster): it is loaded again.
    let lost = format!("docker.io/library/exchange-sim:dev{SUFFIX}");
    fixture.ctr(&["images", "rm", &lost]);
    let reloaded = fixture.build();
    assert_eq!(lines_with(&reloaded, "build-images: loaded").len(), 1, "{reloaded}");
    assert!(
        lines_with(&reloaded, "build-images: loaded")[0].contains(&lost),
        "{reloaded}"
    );
    assert!(Path::new(&fixture.dir.join("out/images.txt")).exists());
}
