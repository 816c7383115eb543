//! The table, the statistics and docs/BENCHMARKS.md.

use std::time::Duration;

/// One line of the table.
pub struct Row {
    pub metric: String,
    pub measured: String,
    pub baseline: String,
    pub ratio: String,
    pub target: String,
    /// Whether the target is met (None when there is no target).
    pub met: Option<bool>,
}

impl Row {
    pub fn new(metric: impl Into<String>, measured: impl Into<String>) -> Self {
        Self {
            metric: metric.into(),
            measured: measured.into(),
            baseline: "-".into(),
            ratio: "-".into(),
            target: "-".into(),
            met: None,
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

    pub fn target(mut self, target: impl Into<String>, met: bool) -> Self {
        self.target = target.into();
        self.met = Some(met);
        self
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
                    Some(true) => "yes".into(),
                    Some(false) => "NO".into(),
                    None => "-".into(),
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

/// docs/BENCHMARKS.md: the table, the machine, the date, and what bounds each figure.
pub fn write_markdown(table: &str, notes: &[String]) -> anyhow::Result<()> {
    let path = test_harness::root().join("docs/BENCHMARKS.md");
    let explanations = include_str!("explanations.md");
    let text = format!(
        "# Benchmarks\n\nProduced by `make bench` on {}, {}. Timings are distributions over repeated trials or ratios\n\
         against the baseline named in each row; they describe this machine (a shared 2-core VM running\n\
         the whole local cluster, the operator, the bots and the benchmark itself), not a promise.\n\n{table}\n\
         ## Run notes\n\n{}\n\n{explanations}",
        today(),
        machine(),
        notes.iter().map(|n| format!("- {n}")).collect::<Vec<_>>().join("\n")
    );
    std::fs::write(path, text)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&samples, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&samples, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&samples[..1], 99.0), Duration::from_millis(1));
    }
}
