//! An [`IptablesRule`] is gone once its guard is dropped, also when the test holding it panics,
//! and a rule left by a test process that died without unwinding is removed by the next guard.
//! Real iptables (the tests run as root, like the cluster); the rules drop traffic to
//! TEST-NET-3 addresses nothing uses.

use std::process::Command;
use test_harness::{IptablesRule, RULE_COMMENT_PREFIX};

fn rule_listed(needle: &str) -> bool {
    let output = Command::new("iptables")
        .args(["-w", "-S", "FORWARD"])
        .output()
        .expect("iptables runs");
    String::from_utf8_lossy(&output.stdout).contains(needle)
}

#[test]
fn the_rule_is_removed_when_the_test_panics() {
    let outcome = std::panic::catch_unwind(|| {
        let rule = IptablesRule::drop_tcp_to("203.0.113.7", 9).unwrap();
        assert!(rule.present(), "the rule is in place while the guard lives");
        assert!(rule_listed("203.0.113.7/32"));
        panic!("the test fails while the rule is in place");
    });
    assert!(outcome.is_err(), "the closure panicked");
    assert!(!rule_listed("203.0.113.7/32"), "the rule was removed on unwinding");
}

#[test]
fn the_rule_is_removed_when_dropped() {
    let rule = IptablesRule::drop_tcp_to("203.0.113.8", 9).unwrap();
    assert!(rule_listed("203.0.113.8/32"));
    drop(rule);
    assert!(!rule_listed("203.0.113.8/32"));
}

#[test]
fn a_rule_left_by_a_dead_test_process_is_removed_by_the_next_guard() {
    // A process that has exited: its pid names a test that can no longer clean up.
    let mut finished = Command::new("true").spawn().unwrap();
    let dead = finished.id();
    finished.wait().unwrap();
    let comment = format!("{RULE_COMMENT_PREFIX}{dead}");
    let status = Command::new("iptables")
        .args([
            "-w",
            "-I",
            "FORWARD",
            "-d",
            "203.0.113.9/32",
            "-p",
            "tcp",
            "--dport",
            "9",
            "-j",
            "DROP",
            "-m",
            "comment",
            "--comment",
            &comment,
        ])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(rule_listed(&comment));
    let _fresh = IptablesRule::drop_tcp_to("203.0.113.10", 9).unwrap();
    assert!(!rule_listed(&comment), "the dead test's rule is gone");
    assert!(rule_listed("203.0.113.10/32"), "the new rule is in place");
}
