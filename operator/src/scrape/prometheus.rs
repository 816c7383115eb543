//! Guard observations from the user's Prometheus instead of the operator's own scrapes: one
//! PromQL query per interval reads every bot's guard metrics (Prometheus already scrapes the bots
//! through their ServiceMonitors), and each bot instance's observation is taken from the latest
//! answer, as soon as it arrives. Series are matched to pods by their `namespace`, `pod` and
//! `instance` target labels (what a ServiceMonitor gives every target; the instance is the
//! address scraped, so a replacement pod of the same name is never read as its predecessor);
//! of several jobs scraping one target, the freshest alone counts.
//!
//! The age of the data is Prometheus's own (its evaluation time minus its last scrape of the
//! pod) plus the time since the answer arrived, so no wall clock is compared with another. The
//! same scrape read again is no new measurement. What counts as a failed observation, exactly
//! like a failed scrape: no series for the pod (or the query failing with nothing left from
//! before), `up == 0`, data older than the allowed age, or a metric every bot always exports
//! missing (relabelling or a sample limit dropped it: a guard could never trip).

use super::BotSample;
use crate::metrics::OperatorMetrics;
use serde::Deserialize;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tradingbot_crds::bot_metrics as m;
use tradingbot_crds::exposition::Sample;

/// Where and how often to ask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrometheusSettings {
    /// Base URL of the Prometheus HTTP API (`http://prometheus.monitoring:9090`).
    pub url: String,
    pub interval: Duration,
    /// Of one query (the whole fleet's answer).
    pub timeout: Duration,
    /// A pod Prometheus last scraped longer ago than this counts as unreachable.
    pub max_age: Duration,
    /// Only bots of these namespaces (all when empty).
    pub namespaces: Vec<String>,
}

/// The label a query adds to the series that carry when Prometheus last scraped a pod.
const SCRAPED_AT_LABEL: &str = "tradingbot_series";
const SCRAPED_AT_VALUE: &str = "scraped_at";

/// The metrics the operator's decisions read (see `BotSample::from_samples`).
fn guard_metric_names() -> Vec<String> {
    let mut names: Vec<String> = [
        m::DAILY_LOSS,
        m::DRAWDOWN,
        m::STALENESS,
        m::VOLATILITY,
        m::CONCENTRATION,
        m::ERRORS,
        m::CYCLES,
        m::CYCLE_ERRORS,
        m::TRADING_MODE,
        m::OPEN_ORDERS,
        m::EXPOSURE,
        m::GUARD_LATCHED,
        m::ORDERS_REJECTED,
        m::GUARD_TRIPS,
    ]
    .iter()
    .map(|d| d.name.to_string())
    .collect();
    names.push(format!("{}_count", m::CYCLE_DURATION.name));
    names.push(format!("{}_sum", m::CYCLE_DURATION.name));
    names
}

/// The one query: every guard metric and `up` of every pod target (of the watched namespaces),
/// and when Prometheus last scraped each (`timestamp(up)`, told apart by a label of its own: a
/// set operation matches series on their labels without the name).
pub fn query(namespaces: &[String]) -> String {
    let mut matchers = String::from("pod!=\"\"");
    if !namespaces.is_empty() {
        matchers.push_str(&format!(",namespace=~\"{}\"", namespaces.join("|")));
    }
    let mut names = guard_metric_names();
    names.push("up".into());
    format!(
        "{{__name__=~\"{}\",{matchers}}} or label_replace(timestamp(up{{{matchers}}}), \"{SCRAPED_AT_LABEL}\", \"{SCRAPED_AT_VALUE}\", \"\", \"\")",
        names.join("|")
    )
}

/// What the latest answer says about one target (a pod's metrics port) in one scrape job.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TargetSeries {
    pub samples: Vec<Sample>,
    pub up: Option<f64>,
    /// Prometheus's last scrape of the target, and when it evaluated the query (both unix
    /// seconds on Prometheus's clock: their difference is the data's age, whatever the
    /// operator's clock says).
    pub scraped_at: Option<f64>,
    pub evaluated_at: f64,
}

/// (namespace, pod, instance) → job → series. `instance` is the scraped address (`ip:port`),
/// so a replaced pod of the same name (a new IP) is never read as its predecessor.
pub type Answer = HashMap<(String, String, String), HashMap<String, TargetSeries>>;

#[derive(Deserialize)]
struct Response {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    result: Vec<Series>,
}

#[derive(Deserialize)]
struct Series {
    metric: HashMap<String, String>,
    /// `[unix seconds, "value"]`.
    value: (f64, String),
}

fn parse_value(text: &str) -> Option<f64> {
    match text {
        "NaN" => Some(f64::NAN),
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        other => other.parse().ok(),
    }
}

fn check_response(body: &str) -> Result<Vec<Series>, String> {
    let response: Response = serde_json::from_str(body).map_err(|e| format!("not a Prometheus API answer: {e}"))?;
    if response.status != "success" {
        return Err(format!(
            "Prometheus answered {}: {}",
            response.status,
            response.error.unwrap_or_default()
        ));
    }
    let data = response.data.ok_or("Prometheus answered without data")?;
    if data.result_type != "vector" {
        return Err(format!("Prometheus answered a {}, not a vector", data.result_type));
    }
    Ok(data.result)
}

/// The series of an instant-query answer, by target and job.
pub fn parse_answer(body: &str) -> Result<Answer, String> {
    let mut answer: Answer = HashMap::new();
    for series in check_response(body)? {
        let label = |name: &str| series.metric.get(name).cloned();
        let (Some(namespace), Some(pod), Some(instance)) = (label("namespace"), label("pod"), label("instance")) else {
            continue;
        };
        let Some(value) = parse_value(&series.value.1) else {
            continue;
        };
        let target = answer
            .entry((namespace, pod, instance))
            .or_default()
            .entry(label("job").unwrap_or_default())
            .or_default();
        target.evaluated_at = series.value.0;
        if series.metric.get(SCRAPED_AT_LABEL).map(String::as_str) == Some(SCRAPED_AT_VALUE) {
            target.scraped_at = Some(value);
            continue;
        }
        let Some(name) = series.metric.get("__name__") else {
            continue;
        };
        if name == "up" {
            target.up = Some(value);
            continue;
        }
        let labels = series
            .metric
            .iter()
            .filter(|(k, _)| k.as_str() != "__name__")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        target.samples.push(Sample {
            name: name.clone(),
            labels,
            value,
        });
    }
    Ok(answer)
}

/// The metrics every bot exports from its start (unlabelled gauges and counters): one missing
/// means Prometheus drops it (relabelling, a sample limit), and a guard could never trip.
const ALWAYS_EXPORTED: [m::MetricDef; 5] = [m::DAILY_LOSS, m::DRAWDOWN, m::CONCENTRATION, m::TRADING_MODE, m::CYCLES];

/// One observation taken from Prometheus.
#[derive(Debug, Clone, PartialEq)]
pub struct Measured {
    pub sample: BotSample,
    /// How old the data already is (since Prometheus scraped the pod).
    pub age: Duration,
    /// Which scrape of Prometheus's it is (its time in ms): the same one read twice is not a
    /// new measurement.
    pub scrape_id: u64,
}

/// The latest answer (or why there is none).
#[derive(Debug, Default)]
struct Latest {
    answer: Answer,
    /// The pods (namespace, name) the answer holds any series of, at any address.
    pods: HashSet<(String, String)>,
    /// When it arrived.
    received: Option<Instant>,
    /// Why the last query failed (the answer above is from the one before).
    error: Option<String>,
}

/// The answers of the query, refreshed every interval by one task.
pub struct PrometheusSource {
    settings: PrometheusSettings,
    latest: RwLock<Latest>,
    /// Bumped on every answer: each bot instance is evaluated when one arrives.
    answers: watch::Sender<u64>,
}

impl PrometheusSource {
    /// Start asking every `settings.interval`, until `stop` turns true.
    pub fn spawn(
        settings: PrometheusSettings,
        http: reqwest::Client,
        metrics: Arc<OperatorMetrics>,
        stop: watch::Receiver<bool>,
    ) -> Arc<Self> {
        let source = Arc::new(Self::new(settings));
        tokio::spawn(source.clone().poll(http, metrics, stop));
        source
    }

    fn new(settings: PrometheusSettings) -> Self {
        Self {
            settings,
            latest: RwLock::new(Latest::default()),
            answers: watch::channel(0).0,
        }
    }

    /// Changes whenever an answer arrives.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.answers.subscribe()
    }

    async fn poll(
        self: Arc<Self>,
        http: reqwest::Client,
        metrics: Arc<OperatorMetrics>,
        mut stop: watch::Receiver<bool>,
    ) {
        let url = format!("{}/api/v1/query", self.settings.url.trim_end_matches('/'));
        let query = query(&self.settings.namespaces);
        let mut ticker = tokio::time::interval(self.settings.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let answer = self.ask(&http, &url, &query).await;
            let outcome = if answer.is_ok() { "ok" } else { "error" };
            metrics.prometheus_queries.with_label_values(&[outcome]).inc();
            self.keep(answer);
        }
    }

    fn keep(&self, answer: Result<Answer, String>) {
        {
            let mut latest = self.latest.write().unwrap_or_else(|p| p.into_inner());
            match answer {
                Ok(answer) => {
                    *latest = Latest {
                        pods: answer.keys().map(|(ns, pod, _)| (ns.clone(), pod.clone())).collect(),
                        answer,
                        received: Some(Instant::now()),
                        error: None,
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "Prometheus guard query failed");
                    latest.error = Some(error);
                }
            }
        }
        self.answers.send_modify(|n| *n = n.wrapping_add(1));
    }

    async fn ask(&self, http: &reqwest::Client, url: &str, query: &str) -> Result<Answer, String> {
        let response = http
            .get(url)
            .query(&[("query", query)])
            .timeout(self.settings.timeout)
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        let status = response.status();
        let body = super::read_limited(response, MAX_ANSWER).await?;
        if !status.is_success() && !body.contains("\"status\"") {
            return Err(format!("GET {url}: HTTP {status}"));
        }
        parse_answer(&body)
    }

    /// Whether Prometheus holds any series of pod `namespace/pod` (at any address): None while
    /// its latest query failed or none has answered yet, so "no" is only ever Prometheus's word.
    pub fn holds_pod(&self, namespace: &str, pod: &str) -> Option<bool> {
        let latest = self.latest.read().unwrap_or_else(|p| p.into_inner());
        if latest.error.is_some() || latest.received.is_none() {
            return None;
        }
        Some(latest.pods.contains(&(namespace.to_string(), pod.to_string())))
    }

    /// The latest observation of the pod `namespace/pod` scraped at `instance` (`ip:port`).
    pub fn sample_of(&self, namespace: &str, pod: &str, instance: &str) -> Result<Measured, String> {
        let latest = self.latest.read().unwrap_or_else(|p| p.into_inner());
        let key = (namespace.to_string(), pod.to_string(), instance.to_string());
        let Some(jobs) = latest.answer.get(&key) else {
            return Err(match &latest.error {
                Some(error) => format!("Prometheus query failing: {error}"),
                None => format!("Prometheus has no series of pod {namespace}/{pod} at {instance}"),
            });
        };
        // Several jobs scraping one target: the freshest one alone (never their sum).
        let series = jobs
            .values()
            .filter(|s| s.scraped_at.is_some())
            .max_by(|a, b| a.scraped_at.unwrap_or(0.0).total_cmp(&b.scraped_at.unwrap_or(0.0)))
            .ok_or_else(|| format!("Prometheus has no scrape time of pod {namespace}/{pod}"))?;
        if series.up == Some(0.0) {
            return Err(format!("Prometheus cannot scrape pod {namespace}/{pod} (up == 0)"));
        }
        let scraped_at = series.scraped_at.unwrap_or_default();
        let since_answer = latest.received.map_or(Duration::ZERO, |r| r.elapsed());
        let age = Duration::from_secs_f64((series.evaluated_at - scraped_at).clamp(0.0, 1e9)) + since_answer;
        if age > self.settings.max_age {
            return Err(format!(
                "Prometheus last scraped pod {namespace}/{pod} {:.0} s ago (more than {:.0} s)",
                age.as_secs_f64(),
                self.settings.max_age.as_secs_f64()
            ));
        }
        if let Some(missing) = ALWAYS_EXPORTED
            .iter()
            .find(|metric| !series.samples.iter().any(|s| s.name == metric.name))
        {
            return Err(format!(
                "Prometheus has no {} of pod {namespace}/{pod} (dropped by relabelling or a sample limit?)",
                missing.name
            ));
        }
        Ok(Measured {
            sample: BotSample::from_samples(&series.samples),
            age,
            scrape_id: (scraped_at * 1000.0) as u64,
        })
    }
}

/// The largest answer read (a fleet's guard series are a few hundred bytes per bot).
const MAX_ANSWER: usize = 64 << 20;

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn source(answer: &str) -> PrometheusSource {
        let source = PrometheusSource::new(PrometheusSettings {
            url: "http://prometheus:9090".into(),
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(10),
            max_age: Duration::from_secs(60),
            namespaces: vec![],
        });
        source.keep(parse_answer(answer));
        source
    }

    /// A series line of an answer evaluated at 1000.5.
    fn series(name: Option<&str>, pod: &str, job: &str, extra: &str, value: &str) -> String {
        let name = name.map(|n| format!(r#""__name__":"{n}","#)).unwrap_or_default();
        format!(
            r#"{{"metric":{{{name}"namespace":"trading","pod":"{pod}","instance":"10.88.0.{}:9102","job":"{job}"{extra}}},"value":[1000.5,"{value}"]}}"#,
            pod.len()
        )
    }

    /// A healthy target: every always-exported metric, up, scraped at `scraped_at`.
    fn target(pod: &str, job: &str, scraped_at: &str, up: &str, errors: &str) -> Vec<String> {
        let mut lines: Vec<String> = ALWAYS_EXPORTED
            .iter()
            .map(|m| {
                series(
                    Some(m.name),
                    pod,
                    job,
                    "",
                    if m.name == "perps_bot_daily_loss" { "612.5" } else { "0" },
                )
            })
            .collect();
        lines.push(series(
            Some("perps_bot_errors_total"),
            pod,
            job,
            r#","kind":"exchange""#,
            errors,
        ));
        lines.push(series(Some("up"), pod, job, "", up));
        lines.push(series(
            None,
            pod,
            job,
            r#","tradingbot_series":"scraped_at""#,
            scraped_at,
        ));
        lines
    }

    fn answer(targets: Vec<Vec<String>>) -> String {
        let all: Vec<String> = targets.into_iter().flatten().collect();
        format!(
            r#"{{"status":"success","data":{{"resultType":"vector","result":[{}]}}}}"#,
            all.join(",")
        )
    }

    fn instance(pod: &str) -> String {
        format!("10.88.0.{}:9102", pod.len())
    }

    #[test]
    fn the_answer_becomes_each_targets_observation_with_its_age() {
        let source = source(&answer(vec![target("alpha", "bots", "995", "1", "3")]));
        let measured = source.sample_of("trading", "alpha", &instance("alpha")).unwrap();
        assert_eq!(measured.sample.daily_loss, Some(dec!(612.5)));
        assert_eq!(measured.sample.errors_total, Some(3.0));
        assert!(measured.age >= Duration::from_millis(5500) && measured.age < Duration::from_secs(7));
        assert_eq!(measured.scrape_id, 995_000);
        // Another address of the same pod name (a replacement pod) has no series.
        assert!(source.sample_of("trading", "alpha", "10.88.9.9:9102").is_err());
    }

    #[test]
    fn two_jobs_scraping_one_target_are_never_added_up() {
        let source = source(&answer(vec![
            target("alpha", "bots", "990", "1", "3"),
            target("alpha", "servicemonitor", "998", "1", "3"),
        ]));
        let measured = source.sample_of("trading", "alpha", &instance("alpha")).unwrap();
        assert_eq!(measured.sample.errors_total, Some(3.0), "one job's counters, not both");
        assert_eq!(measured.scrape_id, 998_000, "the freshest job");
    }

    #[test]
    fn down_stale_missing_and_relabelled_targets_are_failed_observations() {
        let mut relabelled = target("cut", "bots", "999", "1", "0");
        relabelled.retain(|l| !l.contains("perps_bot_drawdown_percent"));
        let source = source(&answer(vec![
            target("down", "bots", "999", "0", "0"),
            target("old", "bots", "900", "1", "0"),
            relabelled,
        ]));
        let error = |pod: &str| source.sample_of("trading", pod, &instance(pod)).unwrap_err();
        assert!(error("down").contains("up == 0"), "{}", error("down"));
        assert!(error("old").contains("s ago"), "{}", error("old"));
        assert!(error("nobody").contains("no series"), "{}", error("nobody"));
        assert!(error("cut").contains("perps_bot_drawdown_percent"), "{}", error("cut"));
    }

    #[test]
    fn only_an_answering_prometheus_says_it_holds_no_series_of_a_pod() {
        let source = PrometheusSource::new(PrometheusSettings {
            url: "http://prometheus:9090".into(),
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(10),
            max_age: Duration::from_secs(60),
            namespaces: vec![],
        });
        assert_eq!(source.holds_pod("trading", "alpha"), None, "before any answer");
        source.keep(parse_answer(&answer(vec![target("alpha", "bots", "0", "0", "0")])));
        // Held even when down or old, and whatever its address.
        assert_eq!(source.holds_pod("trading", "alpha"), Some(true));
        assert_eq!(source.holds_pod("trading", "nobody"), Some(false));
        assert_eq!(source.holds_pod("other", "alpha"), Some(false));
        source.keep(Err("GET http://prometheus:9090/api/v1/query: connection refused".into()));
        assert_eq!(source.holds_pod("trading", "nobody"), None, "while the query fails");
    }

    #[test]
    fn a_failing_query_keeps_the_last_answer_until_it_ages_out() {
        let source = source(&answer(vec![target("alpha", "bots", "995", "1", "0")]));
        source.keep(Err("GET http://prometheus:9090/api/v1/query: connection refused".into()));
        assert!(source.sample_of("trading", "alpha", &instance("alpha")).is_ok());
        let failing = source.sample_of("trading", "nobody", "10.0.0.1:1").unwrap_err();
        assert!(failing.contains("connection refused"), "{failing}");
    }

    #[test]
    fn refusals_and_odd_answers_are_errors_that_say_why() {
        let refused = r#"{"status":"error","errorType":"bad_data","error":"parse error at char 3"}"#;
        assert!(parse_answer(refused).unwrap_err().contains("parse error at char 3"));
        assert!(
            parse_answer("<html>")
                .unwrap_err()
                .contains("not a Prometheus API answer")
        );
        let matrix = r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
        assert!(parse_answer(matrix).unwrap_err().contains("matrix"));
    }

    #[test]
    fn the_query_selects_every_guard_metric_and_when_each_pod_was_scraped() {
        let q = query(&["a".into(), "b".into()]);
        for name in guard_metric_names() {
            assert!(q.contains(&name), "{name} missing from {q}");
        }
        assert!(q.contains(r#"namespace=~"a|b""#), "{q}");
        assert!(
            q.contains(
                r#"label_replace(timestamp(up{pod!="",namespace=~"a|b"}), "tradingbot_series", "scraped_at", "", "")"#
            ),
            "{q}"
        );
    }
}
