//! The table, the statistics and docs/BENCHMARKS.md.

use std::collections::BTreeMap;
use std::time::Duration;

/// Whether a row meets its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Met {
    /// The row has no target.
    NoTarget,
    Yes,
    No,
    /// The measurement itself failed (timed-out trials, an operator restart, no audit log):
    /// never "met".
    Invalid,
}

/// One line of the table.
pub struct Row {
    pub metric: String,
    pub measured: String,
    pub baseline: String,
    pub ratio: String,
    pub target: String,
    pub met: Met,
}

impl Row {
    pub fn new(metric: impl Into<String>, measured: impl Into<String>) -> Self {
        Self {
            metric: metric.into(),
            measured: measured.into(),
            baseline: "-".into(),
            ratio: "-".into(),
            target: "-".into(),
            met: Met::NoTarget,
        }
    }

    /// A row whose measurement cannot be trusted: it says why instead of showing a figure.
    pub fn invalid(metric: impl Into<String>, why: impl std::fmt::Display) -> Self {
        Self {
            measured: format!("INVALID: {why}"),
            met: Met::Invalid,
            ..Self::new(metric, "")
        }
    }

    pub fn baseline(mut self, baseline: impl Into<String>) -> Self {
        self.baseline = baseline.into();
        self
    }

    pub fn ratio(mut self, ratio: f64) -> Self {
        self.ratio = format!("{ratio:.2}x");
        self
    }

    /// The target and whether it is met; a row already invalid stays invalid.
    pub fn target(mut self, target: impl Into<String>, met: bool) -> Self {
        self.target = target.into();
        if self.met != Met::Invalid {
            self.met = if met { Met::Yes } else { Met::No };
        }
        self
    }

    /// Mark the row invalid when `problem` is set (its figures stay visible after the reason).
    pub fn invalid_if(mut self, problem: Option<String>) -> Self {
        if let Some(why) = problem {
            self.measured = format!("INVALID ({why}): {}", self.measured);
            self.met = Met::Invalid;
        }
        self
    }
}

/// Trials that produced a sample and trials that timed out.
#[derive(Debug, Clone)]
pub struct Trials<T> {
    pub samples: Vec<T>,
    pub timed_out: usize,
}

impl<T> Default for Trials<T> {
    fn default() -> Self {
        Self {
            samples: Vec::new(),
            timed_out: 0,
        }
    }
}

impl<T> Trials<T> {
    pub fn attempted(&self) -> usize {
        self.samples.len() + self.timed_out
    }

    /// ", k of n timed out" when any did (shown next to the distribution).
    pub fn timeouts_text(&self) -> String {
        if self.timed_out == 0 {
            String::new()
        } else {
            format!(", {} of {} timed out", self.timed_out, self.attempted())
        }
    }
}

/// Percentile (nearest rank) of a sample.
pub fn percentile(samples: &[Duration], p: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

pub fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

pub fn distribution(samples: &[Duration]) -> String {
    format!(
        "p50 {} / p95 {} / p99 {} (n={})",
        ms(percentile(samples, 50.0)),
        ms(percentile(samples, 95.0)),
        ms(percentile(samples, 99.0)),
        samples.len()
    )
}

/// Percentile (nearest rank) of signed values.
pub fn percentile_f64(samples: &[f64], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

/// A distribution of signed intervals in milliseconds (the difference of two observed events;
/// shown as measured, negative ones counted).
pub fn distribution_ms(samples: &[f64]) -> String {
    let negative = samples.iter().filter(|v| **v < 0.0).count();
    let note = if negative > 0 {
        format!(", {negative} negative")
    } else {
        String::new()
    };
    format!(
        "p50 {:.0} ms / p95 {:.0} ms / p99 {:.0} ms (n={}{note})",
        percentile_f64(samples, 50.0),
        percentile_f64(samples, 95.0),
        percentile_f64(samples, 99.0),
        samples.len()
    )
}

pub fn median_f64(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

pub fn table(rows: &[Row]) -> String {
    let header = ["metric", "measured", "baseline", "ratio", "target", "met"];
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            [
                r.metric.clone(),
                r.measured.clone(),
                r.baseline.clone(),
                r.ratio.clone(),
                r.target.clone(),
                match r.met {
                    Met::Yes => "yes".into(),
                    Met::No => "NO".into(),
                    Met::Invalid => "NO (invalid)".into(),
                    Met::NoTarget => "-".into(),
                },
            ]
        })
        .collect();
    let mut out = format!(
        "| {} |\n|{}|\n",
        header.join(" | "),
        header.iter().map(|_| "---").collect::<Vec<_>>().join("|")
    );
    for row in cells {
        out.push_str(&format!("| {} |\n", row.join(" | ")));
    }
    out
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").parse::<u64>().unwrap_or(0))
        })
        .map_or_else(|| "unknown".into(), |kb| format!("{:.1} GiB", kb as f64 / 1_048_576.0));
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cores} cores ({cpu}), {memory} RAM, Linux {}", kernel.trim())
}

fn today() -> String {
    let output = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output();
    output
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// The facts a full run records (`RunLog::fact`), which explanations.md may quote.
pub const FACTS: &[&str] = &[
    "kubectl_startup",
    "scrape_interval",
    "bot_cycle",
    "kubernetes_version",
    "floor_retry",
    "reconcile_concurrency",
];

/// What one run found out besides the table: notes (one line each) and the facts the
/// explanations quote (`{name}` in explanations.md), all from this run or the parameters it ran
/// with.
#[derive(Debug, Default)]
pub struct RunLog {
    pub notes: Vec<String>,
    pub facts: BTreeMap<&'static str, String>,
}

impl RunLog {
    pub fn note(&mut self, note: String) {
        self.notes.push(note);
    }

    pub fn fact(&mut self, name: &'static str, value: impl Into<String>) {
        debug_assert!(FACTS.contains(&name), "{name} is not in FACTS");
        self.facts.insert(name, value.into());
    }
}

/// The commit measured, and whether the working tree differed from it.
fn commit() -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(test_harness::root())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let head = git(&["rev-parse", "HEAD"]).unwrap_or_else(|| "an unknown commit (no git)".into());
    let changed = git(&[
        "status",
        "--porcelain",
        "--",
        "bot",
        "operator",
        "crds",
        "charts",
        "tests/bench",
    ])
    .unwrap_or_default();
    let changed = changed_paths(&changed);
    if changed.is_empty() {
        format!("commit `{head}`")
    } else {
        format!(
            "commit `{head}` plus uncommitted changes to {}",
            changed.iter().map(|p| format!("`{p}`")).collect::<Vec<_>>().join(", ")
        )
    }
}

/// The paths of `git status --porcelain` lines (`XY path`), also when the output was trimmed and
/// the first line lost its leading blank (` M a` read as `M a`).
fn changed_paths(porcelain: &str) -> Vec<&str> {
    porcelain
        .lines()
        .filter_map(|l| l.trim_start().split_once(' '))
        .map(|(_, path)| path.trim_start())
        .collect()
}

/// What a placeholder says when a part of the run failed before measuring it.
const NOT_MEASURED: &str = "(not measured: its part of this run failed, see the table)";

/// Fill `{name}` placeholders from `facts`; a placeholder without a fact is an error (a figure
/// the run did not produce must not appear), unless a part of the run failed (`some_failed`):
/// then it says so in place of the figure.
pub fn fill(template: &str, facts: &BTreeMap<&'static str, String>, some_failed: bool) -> anyhow::Result<String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| anyhow::anyhow!("unclosed {{ in the explanations"))?;
        let name = &after[..close];
        match facts.get(name) {
            Some(value) => out.push_str(value),
            None if some_failed => out.push_str(NOT_MEASURED),
            None => anyhow::bail!("the explanations quote {{{name}}}, which this run did not measure"),
        }
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Text fit for one cell of the table: one line, no column separator, at most 300 characters.
pub fn table_cell(text: &str) -> String {
    let line: String = text
        .chars()
        .map(|c| match c {
            '|' => '/',
            c if c.is_control() => ' ',
            c => c,
        })
        .collect();
    match line.char_indices().nth(300) {
        Some((end, _)) => format!("{}…", &line[..end]),
        None => line,
    }
}

/// docs/BENCHMARKS.md: the commit, the machine, the date, the table, the run notes, and what
/// bounds each figure.
pub fn write_markdown(table: &str, run: &RunLog, some_failed: bool) -> anyhow::Result<()> {
    let path = test_harness::root().join("docs/BENCHMARKS.md");
    let explanations = fill(include_str!("explanations.md"), &run.facts, some_failed)?;
    let text = format!(
        "# Benchmarks\n\nProduced by `make bench` from {} on {}, {}. Timings are distributions over repeated\n\
         trials or ratios against the baseline named in each row; they describe this machine, which also runs the\n\
         whole local cluster, the operator, the bots and the benchmark itself, not a promise. A row whose\n\
         measurement failed (timed-out trials, an operator restart, no audit log, a part of the run that\n\
         stopped with an error) says INVALID and is never met.\n\n\
         {table}\n## Run notes\n\n{}\n\n{explanations}",
        commit(),
        today(),
        machine(),
        run.notes
            .iter()
            .map(|n| format!("- {n}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    std::fs::write(path, text)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_paths_keep_their_first_letter() {
        let trimmed = "M operator/src/context.rs\n M operator/src/lib.rs\nMM bot/x.rs\n?? tests/bench/new.rs";
        assert_eq!(
            changed_paths(trimmed),
            [
                "operator/src/context.rs",
                "operator/src/lib.rs",
                "bot/x.rs",
                "tests/bench/new.rs"
            ]
        );
    }

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&samples, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&samples, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&samples[..1], 99.0), Duration::from_millis(1));
    }

    #[test]
    fn negative_intervals_are_shown_not_clamped() {
        let text = distribution_ms(&[-12.0, 5.0, 7.0]);
        assert!(text.starts_with("p50 5 ms"), "{text}");
        assert!(text.contains("1 negative"), "{text}");
        assert_eq!(percentile_f64(&[-12.0, 5.0, 7.0], 1.0), -12.0);
    }

    #[test]
    fn a_row_with_timeouts_or_a_failed_measurement_is_never_met() {
        let row = Row::new("x", "1 ms")
            .invalid_if(Some("2 of 10 timed out".into()))
            .target("< 2 ms", true);
        assert_eq!(row.met, Met::Invalid);
        assert!(row.measured.starts_with("INVALID (2 of 10 timed out)"));
        assert_eq!(Row::invalid("y", "no audit log").met, Met::Invalid);
        assert!(table(&[row]).contains("NO (invalid)"));
    }

    #[test]
    fn the_explanations_quote_only_facts_a_full_run_records() {
        let facts = FACTS.iter().map(|f| (*f, "x".to_string())).collect();
        fill(include_str!("explanations.md"), &facts, false).unwrap();
    }

    #[test]
    fn explanations_quote_only_facts_of_the_run() {
        let mut facts = BTreeMap::new();
        facts.insert("scrape", "2 s".to_string());
        assert_eq!(fill("every {scrape} here", &facts, false).unwrap(), "every 2 s here");
        assert!(fill("{missing}", &facts, false).is_err());
        // A part that failed leaves its figures out, saying so.
        assert_eq!(fill("{missing}", &facts, true).unwrap(), NOT_MEASURED);
    }

    #[test]
    fn a_failure_fits_one_table_cell() {
        assert_eq!(table_cell("a | b\ncaused by: c"), "a / b caused by: c");
        let long = "é".repeat(400);
        assert_eq!(table_cell(&long).chars().count(), 301);
    }
}
