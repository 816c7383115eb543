//! Host firewall rules a test adds (e.g. to make a pod's port unreachable), removed when the
//! guard is dropped, also when the test panics. Every rule carries a comment naming the test
//! process (`tradingbot-test:pid=<pid>`), so a rule left behind by a process that died without
//! unwinding (SIGKILL, abort) is removed by the next guard made on this host and by
//! `tests/cluster/cluster-down.sh`.

use anyhow::{Context, bail};
use std::process::Command;

/// The comment prefix on every rule a test adds.
pub const RULE_COMMENT_PREFIX: &str = "tradingbot-test:pid=";

/// One iptables rule, present while this value lives.
#[derive(Debug)]
pub struct IptablesRule {
    table: String,
    chain: String,
    /// The match and target, including our comment.
    spec: Vec<String>,
}

impl IptablesRule {
    /// Insert `spec` (match and target, e.g. `["-d", "10.1.2.3/32", "-j", "DROP"]`) at the top
    /// of `chain` in `table`.
    pub fn insert(table: &str, chain: &str, spec: &[&str]) -> anyhow::Result<Self> {
        remove_rules_of_dead_tests(table)?;
        let mut full: Vec<String> = spec.iter().map(|s| s.to_string()).collect();
        full.extend(
            ["-m", "comment", "--comment", &own_comment()]
                .iter()
                .map(|s| s.to_string()),
        );
        let rule = Self {
            table: table.to_string(),
            chain: chain.to_string(),
            spec: full,
        };
        rule.iptables("-I")?;
        Ok(rule)
    }

    /// Drop forwarded TCP traffic to `ip:port` (e.g. a pod's metrics port, seen from other pods
    /// and the host).
    pub fn drop_tcp_to(ip: &str, port: u16) -> anyhow::Result<Self> {
        let destination = format!("{ip}/32");
        let port = port.to_string();
        Self::insert(
            "filter",
            "FORWARD",
            &["-d", &destination, "-p", "tcp", "--dport", &port, "-j", "DROP"],
        )
    }

    /// Whether the rule is in the table now (`iptables -C`).
    pub fn present(&self) -> bool {
        self.iptables("-C").is_ok()
    }

    fn iptables(&self, action: &str) -> anyhow::Result<()> {
        let mut args = vec!["-w", "-t", &self.table, action, &self.chain];
        args.extend(self.spec.iter().map(String::as_str));
        run_iptables(&args)
    }
}

impl Drop for IptablesRule {
    fn drop(&mut self) {
        if let Err(error) = self.iptables("-D") {
            eprintln!("could not remove iptables rule {self:?}: {error:#}");
        }
    }
}

fn own_comment() -> String {
    format!("{RULE_COMMENT_PREFIX}{}", std::process::id())
}

fn run_iptables(args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new("iptables")
        .args(args)
        .output()
        .context("running iptables (tests that change the firewall run as root)")?;
    if !output.status.success() {
        bail!(
            "iptables {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Delete every rule in `table` whose comment names a test process that no longer runs.
pub fn remove_rules_of_dead_tests(table: &str) -> anyhow::Result<()> {
    let output = Command::new("iptables")
        .args(["-w", "-t", table, "-S"])
        .output()
        .context("running iptables -S")?;
    if !output.status.success() {
        bail!(
            "iptables -t {table} -S failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Some(pid) = test_pid_of_rule(line) else {
            continue;
        };
        if process_alive(pid) {
            continue;
        }
        let Some(rest) = line.strip_prefix("-A ") else {
            continue;
        };
        // iptables-nft quotes the comment; ours has no spaces, so the words are the arguments.
        let words: Vec<&str> = rest.split_whitespace().map(|w| w.trim_matches('"')).collect();
        let mut args = vec!["-w", "-t", table, "-D"];
        args.extend(words);
        // Another test process may be removing the same rule at the same time.
        let _ = run_iptables(&args);
    }
    Ok(())
}

/// The test pid in a rule's comment (`iptables -S` line), if it is one of ours.
fn test_pid_of_rule(line: &str) -> Option<u32> {
    let at = line.find(RULE_COMMENT_PREFIX)? + RULE_COMMENT_PREFIX.len();
    let digits: String = line[at..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

fn process_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_test_pid_in_a_rule() {
        let line = "-A FORWARD -d 10.88.0.5/32 -p tcp -m tcp --dport 9102 -m comment --comment tradingbot-test:pid=4242 -j DROP";
        assert_eq!(test_pid_of_rule(line), Some(4242));
        assert_eq!(test_pid_of_rule("-A FORWARD -j KUBE-FORWARD"), None);
    }
}
