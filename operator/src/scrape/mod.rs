//! Scraping bots' `/metrics`, concurrently, one task per bot instance, each on its own interval
//! and with its own timeout (one slow bot never delays another). Every scrape stores an
//! [`Observation`]; the bot is reconciled (where guards and rollout gates are evaluated) after
//! every scrape that can change a decision: each one while something counts scrapes (a rollout,
//! a trip waiting to resume, a deletion, an account's totals), otherwise only when a scrape starts
//! or ends a run of failures, changes what the guards see at their levels (a silent bot's
//! staleness grows with its silence) or what the bot reports about itself, and at least once every
//! [`REFRESH`] anyway (see [`Relevance`]).

pub mod parse;
pub mod prometheus;

use crate::metrics::OperatorMetrics;
use kube::runtime::reflector::ObjectRef;
use parse::Sample;
use rust_decimal::Decimal;
use rust_decimal::prelude::FromPrimitive;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tradingbot_crds::bot_metrics as m;
use tradingbot_crds::guards::{self, GuardKind, GuardObservation};
use tradingbot_crds::spec::Guards;
use tradingbot_crds::{Instance, TradingBot, TradingMode};

/// One bot instance.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TargetKey {
    pub namespace: String,
    pub bot: String,
    pub instance: Instance,
}

/// Where and how often to scrape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The pod and the address scraped (`ip:port`): its series in Prometheus, when that is the
    /// guard source.
    pub pod: String,
    pub instance: String,
    pub url: String,
    pub interval: Duration,
    /// The errorRate guard's window (errors are counted over it).
    pub error_window: Duration,
}

/// The values the operator reads from a bot's metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BotSample {
    pub daily_loss: Option<Decimal>,
    pub drawdown_percent: Option<Decimal>,
    pub staleness_max: Option<Decimal>,
    pub volatility_max: Option<Decimal>,
    pub concentration: Option<Decimal>,
    pub errors_total: Option<f64>,
    pub cycles: Option<u64>,
    pub cycle_errors: Option<u64>,
    pub trading_mode: Option<TradingMode>,
    pub open_orders: Option<u64>,
    pub exposure: Option<Decimal>,
    /// In-process trips the bot reports as latched: (guard, level, unix time).
    pub latched: Vec<(String, TradingMode, i64)>,
    /// Orders refused, every reason (the canary analysis' OrderRejections).
    pub orders_rejected: Option<u64>,
    /// Trips the bot's own guards latched since it started (the analysis' GuardTrips).
    pub guard_trips: Option<u64>,
    /// Cycles timed by the cycle duration histogram, and their total in seconds.
    pub cycles_timed: Option<u64>,
    pub cycle_seconds_total: Option<Decimal>,
}

fn decimal(value: f64) -> Option<Decimal> {
    value
        .is_finite()
        .then(|| Decimal::from_f64(value).map(|d| d.round_dp(8)))
        .flatten()
}

impl BotSample {
    pub fn from_samples(samples: &[Sample]) -> Self {
        let single = |name: &str| samples.iter().find(|s| s.name == name).map(|s| s.value);
        let max = |name: &str| {
            samples
                .iter()
                .filter(|s| s.name == name && s.value.is_finite())
                .map(|s| s.value)
                .reduce(f64::max)
        };
        let sum = |name: &str| {
            let values: Vec<f64> = samples.iter().filter(|s| s.name == name).map(|s| s.value).collect();
            (!values.is_empty()).then(|| values.iter().sum())
        };
        let latched = samples
            .iter()
            .filter(|s| s.name == m::GUARD_LATCHED.name && s.value > 0.0)
            .filter_map(|s| {
                let level = s.label("level")?.parse().ok()?;
                Some((s.label("guard")?.to_string(), level, s.value as i64))
            })
            .collect();
        Self {
            daily_loss: single(m::DAILY_LOSS.name).and_then(decimal),
            drawdown_percent: single(m::DRAWDOWN.name).and_then(decimal),
            staleness_max: max(m::STALENESS.name).and_then(decimal),
            volatility_max: max(m::VOLATILITY.name).and_then(decimal),
            concentration: single(m::CONCENTRATION.name).and_then(decimal),
            errors_total: sum(m::ERRORS.name),
            cycles: single(m::CYCLES.name).map(|v| v as u64),
            cycle_errors: single(m::CYCLE_ERRORS.name).map(|v| v as u64),
            trading_mode: single(m::TRADING_MODE.name).and_then(TradingMode::from_gauge_value),
            open_orders: single(m::OPEN_ORDERS.name).map(|v| v as u64),
            exposure: single(m::EXPOSURE.name).and_then(decimal),
            latched,
            orders_rejected: sum(m::ORDERS_REJECTED.name).map(|v| v as u64),
            guard_trips: sum(m::GUARD_TRIPS.name).map(|v| v as u64),
            cycles_timed: single(&format!("{}_count", m::CYCLE_DURATION.name)).map(|v| v as u64),
            cycle_seconds_total: single(&format!("{}_sum", m::CYCLE_DURATION.name)).and_then(decimal),
        }
    }
}

/// What the operator knows about a bot instance's metrics.
#[derive(Debug, Clone)]
pub struct Observation {
    /// Successful scrapes so far (each is one "cycle" for automatic resume).
    pub ok_count: u64,
    /// When scraping this target started.
    pub since: Instant,
    pub last_attempt: Instant,
    pub last_ok: Option<Instant>,
    /// Wall-clock time of the last successful scrape (for messages that must not change
    /// between reconciles).
    pub last_ok_at: Option<k8s_openapi::jiff::Timestamp>,
    /// Why the latest attempt failed (None when it succeeded).
    pub last_error: Option<String>,
    /// The guard source is Prometheus, its latest query answered, and it held no series of
    /// this pod at any address (not merely stale or down ones).
    pub unheld: bool,
    /// From the last successful scrape.
    pub sample: Option<BotSample>,
    /// Errors the bot counted within the errorRate window (by the operator's own arithmetic on
    /// the counter, not the bot's guard).
    pub errors_in_window: Option<Decimal>,
}

impl Observation {
    /// Seconds since metrics were last read successfully (or since scraping started).
    pub fn silent_for(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.last_ok.unwrap_or(self.since))
    }

    /// What the guards see in the latest scrape: nothing when it failed (a failed scrape
    /// measures nothing).
    pub fn guard_observation(&self) -> GuardObservation {
        match self.sample.as_ref().filter(|_| self.last_error.is_none()) {
            Some(sample) => GuardObservation {
                daily_loss: sample.daily_loss,
                drawdown_percent: sample.drawdown_percent,
                market_data_staleness_seconds: sample.staleness_max,
                volatility: sample.volatility_max,
                concentration: sample.concentration,
                errors_in_window: self.errors_in_window,
            },
            None => GuardObservation::default(),
        }
    }
}

/// Which scrapes of a bot instance can change a decision about it (the reconciler says, after
/// each reconcile of the bot).
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Relevance {
    /// Every scrape (something counts scrapes or reads values continuously). The default: a bot
    /// not reconciled yet is looked at after each.
    #[default]
    Every,
    /// Only one whose [`Fingerprint`] under these levels differs from the last one the bot was
    /// reconciled after.
    GuardLevels(Box<QuietLevels>),
}

/// What a quiet bot's decisions compare its scrapes with.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QuietLevels {
    pub guards: Guards,
    /// Silent this long (no fresh data: failed scrapes, or Prometheus answering with an old
    /// scrape of the pod), the bot's market data counts as stale by the time it has been silent.
    pub unreachable_after: Duration,
}

/// What a decision about a quiet bot reads of a scrape: whether it failed, whether the bot
/// counts as unreachable, whether Prometheus has never held a series of it, which guard levels its values reach (as the guards see them: a silent
/// bot's staleness includes the time it has been silent), and what the bot reports about its
/// own state (its mode and latched trips; open orders only matter to a deletion, whose every
/// scrape counts anyway).
#[derive(Debug, Clone, PartialEq)]
pub struct Fingerprint {
    failed: bool,
    unreachable: bool,
    never_held: bool,
    breaches: Vec<(GuardKind, TradingMode)>,
    trading_mode: Option<TradingMode>,
    latched: Vec<(String, TradingMode, i64)>,
}

impl Fingerprint {
    pub fn of(observation: &Observation, levels: &QuietLevels, now: Instant) -> Self {
        let sample = observation.sample.as_ref().filter(|_| observation.last_error.is_none());
        let view = crate::reconcile::trading::view_of(observation, now, levels.unreachable_after, 0);
        let mut breaches: Vec<(GuardKind, TradingMode)> = guards::evaluate(&levels.guards, &view.observed)
            .into_iter()
            .map(|b| (b.guard, b.level))
            .collect();
        breaches.sort();
        Self {
            failed: observation.last_error.is_some(),
            unreachable: view.unreachable_for.is_some(),
            never_held: observation.unheld && observation.last_ok_at.is_none(),
            breaches,
            trading_mode: sample.and_then(|s| s.trading_mode),
            latched: sample.map(|s| s.latched.clone()).unwrap_or_default(),
        }
    }
}

/// A quiet bot is reconciled at least this often, whatever its scrapes say.
pub const REFRESH: Duration = Duration::from_secs(60);

/// Whether the scrape just stored asks for a reconcile, given the last one that did.
fn asks_for_reconcile(
    relevance: &Relevance,
    observation: &Observation,
    last_sent: Option<&(Fingerprint, Instant)>,
    now: Instant,
) -> Option<Fingerprint> {
    let Relevance::GuardLevels(levels) = relevance else {
        return Some(Fingerprint::of(observation, &QuietLevels::default(), now));
    };
    let fingerprint = Fingerprint::of(observation, levels, now);
    let unchanged =
        last_sent.is_some_and(|(sent, at)| *sent == fingerprint && now.saturating_duration_since(*at) < REFRESH);
    // A run of failures asks once, when it starts: until the bot turns unreachable or its
    // staleness reaches another level (both in the fingerprint) a repeated failure changes no
    // decision.
    (!unchanged).then_some(fingerprint)
}

struct Running {
    target: Target,
    task: JoinHandle<()>,
    relevance: Arc<RwLock<Relevance>>,
}

/// The scrape scheduler. Cheap to share.
pub struct Scraper {
    http: reqwest::Client,
    timeout: Duration,
    running: Mutex<HashMap<TargetKey, Running>>,
    observations: Arc<RwLock<HashMap<TargetKey, Observation>>>,
    trigger: mpsc::UnboundedSender<ObjectRef<TradingBot>>,
    metrics: Arc<OperatorMetrics>,
    /// Observations come from Prometheus instead of scraping the pods (see [`prometheus`]).
    prometheus: Option<Arc<prometheus::PrometheusSource>>,
}

impl Scraper {
    pub fn new(
        timeout: Duration,
        metrics: Arc<OperatorMetrics>,
    ) -> (Arc<Self>, mpsc::UnboundedReceiver<ObjectRef<TradingBot>>) {
        Self::build(timeout, metrics, None)
    }

    /// A scheduler that takes every observation from `source` (one query per interval for the
    /// whole fleet) instead of scraping each pod.
    pub fn with_prometheus(
        timeout: Duration,
        metrics: Arc<OperatorMetrics>,
        source: Arc<prometheus::PrometheusSource>,
    ) -> (Arc<Self>, mpsc::UnboundedReceiver<ObjectRef<TradingBot>>) {
        Self::build(timeout, metrics, Some(source))
    }

    fn build(
        timeout: Duration,
        metrics: Arc<OperatorMetrics>,
        prometheus: Option<Arc<prometheus::PrometheusSource>>,
    ) -> (Arc<Self>, mpsc::UnboundedReceiver<ObjectRef<TradingBot>>) {
        let (trigger, rx) = mpsc::unbounded_channel();
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .pool_max_idle_per_host(1)
            .build()
            .expect("an HTTP client without TLS always builds");
        let scraper = Self {
            http,
            timeout,
            running: Mutex::new(HashMap::new()),
            observations: Arc::new(RwLock::new(HashMap::new())),
            trigger,
            metrics,
            prometheus,
        };
        (Arc::new(scraper), rx)
    }

    /// Where this scheduler's observations come from.
    pub fn source(&self) -> crate::cli::GuardSource {
        match self.prometheus {
            Some(_) => crate::cli::GuardSource::Prometheus,
            None => crate::cli::GuardSource::Pods,
        }
    }

    pub fn observation(&self, key: &TargetKey) -> Option<Observation> {
        self.observations
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
    }

    /// Which of `key`'s scrapes ask for a reconcile from now on (nothing when it is not scraped).
    pub fn set_relevance(&self, key: &TargetKey, relevance: Relevance) {
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(current) = running.get(key) {
            let mut slot = current.relevance.write().unwrap_or_else(|p| p.into_inner());
            if *slot != relevance {
                *slot = relevance;
            }
        }
    }

    /// Scrape `key` at `target` (None stops scraping it). Unchanged targets keep their task.
    pub fn ensure(self: &Arc<Self>, key: TargetKey, target: Option<Target>) {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        match (running.get(&key), target) {
            (Some(current), Some(target)) if current.target == target => {}
            (_, None) => {
                if let Some(old) = running.remove(&key) {
                    old.task.abort();
                    self.observations
                        .write()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&key);
                }
            }
            (_, Some(target)) => {
                if let Some(old) = running.remove(&key) {
                    old.task.abort();
                }
                let relevance = Arc::new(RwLock::new(Relevance::Every));
                let task = tokio::spawn(self.clone().scrape_loop(key.clone(), target.clone(), relevance.clone()));
                running.insert(
                    key,
                    Running {
                        target,
                        task,
                        relevance,
                    },
                );
            }
        }
    }

    /// Stop scraping every instance of a bot.
    pub fn forget_bot(self: &Arc<Self>, namespace: &str, bot: &str) {
        for instance in [Instance::Prod, Instance::Canary] {
            self.ensure(
                TargetKey {
                    namespace: namespace.into(),
                    bot: bot.into(),
                    instance,
                },
                None,
            );
        }
    }

    pub fn targets(&self) -> usize {
        self.running.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    async fn scrape_loop(self: Arc<Self>, key: TargetKey, target: Target, relevance: Arc<RwLock<Relevance>>) {
        let mut state = LoopState {
            since: Instant::now(),
            history: VecDeque::new(),
            last_sent: None,
            last_scrape_id: None,
        };
        let mut ticker = tokio::time::interval(target.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut answers = self.prometheus.as_ref().map(|p| p.subscribe());
        loop {
            next_round(&mut ticker, &mut answers).await;
            let started = Instant::now();
            let result = self.fetch(&key, &target).await;
            if let Ok(fetched) = &result
                && fetched.scrape_id.is_some()
                && fetched.scrape_id == state.last_scrape_id
            {
                // Prometheus has not scraped the pod again: nothing new was measured.
                continue;
            }
            let observation = self.observe(&key, &target, &mut state, started, result);
            let asks = {
                let relevance = relevance.read().unwrap_or_else(|p| p.into_inner());
                asks_for_reconcile(&relevance, &observation, state.last_sent.as_ref(), started)
            };
            self.observations
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(key.clone(), observation);
            match asks {
                Some(fingerprint) => {
                    state.last_sent = Some((fingerprint, started));
                    let _ = self.trigger.send(ObjectRef::new(&key.bot).within(&key.namespace));
                }
                None => self.metrics.scrapes_unchanged.inc(),
            }
        }
    }

    /// The observation after one fetch at `started`, from the previous one.
    fn observe(
        &self,
        key: &TargetKey,
        target: &Target,
        state: &mut LoopState,
        started: Instant,
        result: Result<Fetched, String>,
    ) -> Observation {
        let mut observation = self.observation(key).unwrap_or(Observation {
            ok_count: 0,
            since: state.since,
            last_attempt: started,
            last_ok: None,
            last_ok_at: None,
            last_error: None,
            unheld: false,
            sample: None,
            errors_in_window: None,
        });
        observation.last_attempt = started;
        observation.unheld = result.is_err() && self.prometheus_holds_no_series_of(key, target);
        match result {
            Ok(fetched) => {
                // Measured `age` ago (Prometheus scraped the pod before this round read it).
                let measured = started.checked_sub(fetched.age).unwrap_or(started);
                observation.errors_in_window = fetched
                    .sample
                    .errors_total
                    .and_then(|now| errors_in_window(&mut state.history, measured, now, target.error_window));
                observation.ok_count += 1;
                observation.last_ok = Some(measured);
                observation.last_ok_at = Some(timestamp_before(fetched.age));
                observation.last_error = None;
                observation.sample = Some(fetched.sample);
                state.last_scrape_id = fetched.scrape_id;
            }
            Err(error) => {
                self.metrics
                    .scrape_failures
                    .with_label_values(&[&key.namespace, &key.bot])
                    .inc();
                tracing::debug!(tradingbot = %key.bot, namespace = %key.namespace, instance = %key.instance, %error, "scrape failed");
                observation.last_error = Some(error);
            }
        }
        observation
    }

    fn prometheus_holds_no_series_of(&self, key: &TargetKey, target: &Target) -> bool {
        let source = self.prometheus.as_ref();
        source.is_some_and(|s| s.holds_pod(&key.namespace, &target.pod) == Some(false))
    }

    /// The instance's metrics now: from Prometheus's latest answer, or scraped from the pod.
    async fn fetch(&self, key: &TargetKey, target: &Target) -> Result<Fetched, String> {
        if let Some(source) = &self.prometheus {
            let measured = source.sample_of(&key.namespace, &target.pod, &target.instance)?;
            return Ok(Fetched {
                sample: measured.sample,
                age: measured.age,
                scrape_id: Some(measured.scrape_id),
            });
        }
        let started = Instant::now();
        let result = self.scrape_once(&target.url).await;
        self.metrics.scrape_duration.observe(started.elapsed().as_secs_f64());
        result.map(|sample| Fetched {
            sample,
            age: Duration::ZERO,
            scrape_id: None,
        })
    }

    async fn scrape_once(&self, url: &str) -> Result<BotSample, String> {
        let response = self
            .http
            .get(url)
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("HTTP {}", response.status()));
        }
        let text = read_limited(response, MAX_METRICS_BODY).await?;
        let samples = parse::parse(&text);
        if samples.is_empty() {
            return Err("no samples in the response".into());
        }
        Ok(BotSample::from_samples(&samples))
    }
}

/// What one target's loop carries from round to round.
struct LoopState {
    since: Instant,
    /// The errorRate window's counter values.
    history: VecDeque<(Instant, f64)>,
    /// The fingerprint the bot was last reconciled after, and when.
    last_sent: Option<(Fingerprint, Instant)>,
    /// Prometheus's scrape last taken (None when scraping the pod).
    last_scrape_id: Option<u64>,
}

/// One fetched measurement.
struct Fetched {
    sample: BotSample,
    /// How old the data already was when read (0 for a scrape of the pod).
    age: Duration,
    /// Prometheus's scrape it comes from.
    scrape_id: Option<u64>,
}

/// Wait for the next round: the interval, or (from Prometheus) a new answer, whichever comes
/// first; the interval alone once the answers stop.
async fn next_round(ticker: &mut tokio::time::Interval, answers: &mut Option<tokio::sync::watch::Receiver<u64>>) {
    if let Some(rx) = answers {
        tokio::select! {
            _ = ticker.tick() => return,
            changed = rx.changed() => if changed.is_ok() { return },
        }
        *answers = None;
    }
    ticker.tick().await;
}

/// Wall-clock time `age` ago.
fn timestamp_before(age: Duration) -> k8s_openapi::jiff::Timestamp {
    let now = k8s_openapi::jiff::Timestamp::now();
    k8s_openapi::jiff::SignedDuration::try_from(age)
        .ok()
        .and_then(|age| now.checked_sub(age).ok())
        .unwrap_or(now)
}

/// The largest metrics body the operator reads from one bot (a bot's page is a few KiB; a target
/// that streams more is refused instead of costing the operator memory).
pub const MAX_METRICS_BODY: usize = 1 << 20;

/// The response body as text, refused once it exceeds `limit` bytes (announced or streamed).
async fn read_limited(mut response: reqwest::Response, limit: usize) -> Result<String, String> {
    let too_large = || format!("metrics body larger than {limit} bytes");
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    String::from_utf8(body).map_err(|_| "metrics body is not UTF-8".to_string())
}

/// Errors counted within `window`: the counter now minus its value at the window's start (a
/// counter that went down means the bot restarted; then all of its current count is recent).
fn errors_in_window(
    history: &mut VecDeque<(Instant, f64)>,
    now: Instant,
    total: f64,
    window: Duration,
) -> Option<Decimal> {
    history.push_back((now, total));
    while history.len() > 1
        && history
            .get(1)
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) >= window)
    {
        history.pop_front();
    }
    let (_, start) = *history.front()?;
    let counted = if total >= start { total - start } else { total };
    Decimal::from_f64(counted.max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A one-connection HTTP server answering `body`, announced with its length or chunked.
    async fn serve_once(body: Vec<u8>, announce_length: bool) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 1024];
            let _ = socket.read(&mut request).await;
            let head = if announce_length {
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                )
            } else {
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n".to_string()
            };
            let _ = socket.write_all(head.as_bytes()).await;
            if announce_length {
                let _ = socket.write_all(&body).await;
            } else {
                for part in body.chunks(64 * 1024) {
                    let _ = socket.write_all(format!("{:x}\r\n", part.len()).as_bytes()).await;
                    let _ = socket.write_all(part).await;
                    let _ = socket.write_all(b"\r\n").await;
                }
                let _ = socket.write_all(b"0\r\n\r\n").await;
            }
        });
        format!("http://{address}/metrics")
    }

    #[tokio::test]
    async fn a_metrics_body_over_the_limit_is_refused_announced_or_streamed() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (scraper, _rx) = Scraper::new(Duration::from_secs(5), Arc::new(OperatorMetrics::new()));
        let page = b"perps_bot_daily_loss 1\nperps_bot_trading_mode 0\n".to_vec();
        let url = serve_once(page, false).await;
        let sample = scraper.scrape_once(&url).await.unwrap();
        assert_eq!(sample.daily_loss, Some(dec!(1)));
        let huge = b"# padding\n".repeat(MAX_METRICS_BODY / 10 + 1);
        for announce_length in [true, false] {
            let url = serve_once(huge.clone(), announce_length).await;
            let error = scraper.scrape_once(&url).await.unwrap_err();
            assert_eq!(error, format!("metrics body larger than {MAX_METRICS_BODY} bytes"));
        }
    }

    #[test]
    fn sample_reads_the_contract_metrics() {
        let text = "perps_bot_daily_loss 612.5\nperps_bot_market_data_staleness_seconds{symbol=\"BTC-USD\"} 3\nperps_bot_market_data_staleness_seconds{symbol=\"ETH-USD\"} 41\nperps_bot_errors_total{kind=\"cycle\"} 2\nperps_bot_errors_total{kind=\"exchange\"} 5\nperps_bot_trading_mode 1\nperps_bot_guard_latched{guard=\"dailyLoss\",level=\"ReduceOnly\"} 1795219200\nperps_bot_guard_latched{guard=\"dailyLoss\",level=\"Halted\"} 0\n";
        let s = BotSample::from_samples(&parse::parse(text));
        assert_eq!(s.daily_loss, Some(dec!(612.5)));
        assert_eq!(s.staleness_max, Some(dec!(41)));
        assert_eq!(s.errors_total, Some(7.0));
        assert_eq!(s.trading_mode, Some(TradingMode::ReduceOnly));
        assert_eq!(
            s.latched,
            vec![("dailyLoss".to_string(), TradingMode::ReduceOnly, 1795219200)]
        );
    }

    #[test]
    fn sample_reads_what_the_canary_analysis_measures() {
        let text = "perps_bot_orders_rejected_total{reason=\"risk\"} 2\nperps_bot_orders_rejected_total{reason=\"exchange\"} 3\nperps_bot_guard_trips_total{guard=\"dailyLoss\",level=\"ReduceOnly\"} 1\nperps_bot_cycle_duration_seconds_bucket{le=\"0.5\"} 3\nperps_bot_cycle_duration_seconds_sum 1.25\nperps_bot_cycle_duration_seconds_count 4\n";
        let s = BotSample::from_samples(&parse::parse(text));
        assert_eq!(s.orders_rejected, Some(5));
        assert_eq!(s.guard_trips, Some(1));
        assert_eq!((s.cycles_timed, s.cycle_seconds_total), (Some(4), Some(dec!(1.25))));
        let empty = BotSample::from_samples(&parse::parse("perps_bot_cycles_total 1\n"));
        assert_eq!(
            (empty.orders_rejected, empty.guard_trips, empty.cycles_timed),
            (None, None, None)
        );
    }

    fn observation(daily_loss: &str, staleness: &str, failed: bool) -> Observation {
        let now = Instant::now();
        Observation {
            ok_count: 1,
            since: now,
            last_attempt: now,
            last_ok: Some(now),
            last_ok_at: None,
            last_error: failed.then(|| "connection refused".to_string()),
            unheld: false,
            sample: Some(BotSample {
                daily_loss: Some(daily_loss.parse().unwrap()),
                staleness_max: Some(staleness.parse().unwrap()),
                trading_mode: Some(TradingMode::Normal),
                cycles: Some(7),
                ..BotSample::default()
            }),
            errors_in_window: None,
        }
    }

    fn loss_levels() -> Relevance {
        let guards: Guards = serde_json::from_value(serde_json::json!({
            "dailyLoss": {"reduceOnlyAt": "100", "haltAt": "200"},
            "marketDataStalenessSeconds": {"reduceOnlyAt": 30},
        }))
        .unwrap();
        Relevance::GuardLevels(Box::new(QuietLevels {
            guards,
            unreachable_after: Duration::from_secs(30),
        }))
    }

    /// Feed `scrapes` through the trigger rule (each `step` apart, a successful one measured
    /// when it was taken); which asked for a reconcile.
    fn asked(relevance: &Relevance, scrapes: &[Observation], step: Duration) -> Vec<bool> {
        let start = Instant::now();
        let mut last_ok = None;
        let mut last_sent = None;
        scrapes
            .iter()
            .enumerate()
            .map(|(i, o)| {
                let at = start + step * i as u32;
                let mut o = o.clone();
                if o.last_error.is_none() {
                    last_ok = Some(at);
                }
                (o.last_attempt, o.last_ok) = (at, last_ok);
                let asks = asks_for_reconcile(relevance, &o, last_sent.as_ref(), at);
                if let Some(fingerprint) = asks.clone() {
                    last_sent = Some((fingerprint, at));
                }
                asks.is_some()
            })
            .collect()
    }

    #[test]
    fn a_quiet_bot_is_reconciled_only_when_a_level_or_its_own_state_changes() {
        let scrapes = [
            observation("0", "1", false),
            // Values move but stay under every level: nothing a decision reads changed.
            observation("40", "2.5", false),
            observation("99.99", "29", false),
            // The loss reaches ReduceOnly, then Halted, then falls back under both.
            observation("100", "3", false),
            observation("150", "3", false),
            observation("200", "3", false),
            observation("10", "3", false),
            // Staleness crosses its level.
            observation("10", "31", false),
        ];
        assert_eq!(
            asked(&loss_levels(), &scrapes, Duration::from_secs(2)),
            [true, false, false, true, false, true, true, true]
        );
        let mut reports_halted = observation("10", "3", false);
        if let Some(sample) = reports_halted.sample.as_mut() {
            sample.trading_mode = Some(TradingMode::Halted);
        }
        let scrapes = [observation("10", "3", false), reports_halted];
        assert_eq!(asked(&loss_levels(), &scrapes, Duration::from_secs(2)), [true, true]);
    }

    #[test]
    fn a_run_of_failures_asks_when_it_starts_turns_unreachable_and_ends_and_quiet_bots_every_refresh() {
        // Scrapes 2 s apart: one success, 17 failures (2 s .. 34 s), a success at 36 s. The bot
        // counts as unreachable once silent over 30 s (at 32 s), which also takes its staleness
        // (1 s reported + 32 s silent) over the 30 s level.
        let mut failing = vec![observation("0", "1", false)];
        failing.extend((0..17).map(|_| observation("0", "1", true)));
        failing.push(observation("0", "1", false));
        let asked_at: Vec<usize> = asked(&loss_levels(), &failing, Duration::from_secs(2))
            .iter()
            .enumerate()
            .filter_map(|(i, asks)| asks.then_some(i * 2))
            .collect();
        assert_eq!(asked_at, [0, 2, 32, 36]);
        // Learning, mid-run, that Prometheus never held a series of the bot changes the reason
        // its status gives (NoServiceMonitor).
        let mut never_held = observation("0", "1", true);
        never_held.unheld = true;
        let scrapes = [observation("0", "1", true), observation("0", "1", true), never_held];
        assert_eq!(
            asked(&loss_levels(), &scrapes, Duration::from_secs(2)),
            [true, false, true]
        );
        let same: Vec<Observation> = (0..5).map(|_| observation("0", "1", false)).collect();
        // 25 s apart: the third is 50 s after the first (no), the fourth 75 s (yes: REFRESH).
        assert_eq!(
            asked(&loss_levels(), &same, Duration::from_secs(25)),
            [true, false, false, true, false]
        );
        assert_eq!(
            asked(&Relevance::Every, &same, Duration::from_secs(2)),
            [true, true, true, true, true]
        );
    }

    #[test]
    fn a_quiet_bot_whose_data_only_ages_asks_when_it_turns_unreachable_and_its_staleness_crosses_a_level() {
        // Prometheus keeps answering with the same old scrape of the pod: every answer succeeds,
        // but what the guards see grows with the time the bot has been silent.
        let old = observation("0", "1", false);
        let start = old.last_ok.expect("measured");
        let mut last_sent = None;
        let asked: Vec<bool> = [0u64, 10, 20, 31, 40, 50]
            .iter()
            .map(|&seconds| {
                let at = start + Duration::from_secs(seconds);
                let asks = asks_for_reconcile(&loss_levels(), &old, last_sent.as_ref(), at);
                if let Some(fingerprint) = asks.clone() {
                    last_sent = Some((fingerprint, at));
                }
                asks.is_some()
            })
            .collect();
        // At 31 s it counts as unreachable, its staleness (1 + 31) past the level at 30.
        assert_eq!(asked, [true, false, false, true, false, false]);
    }

    #[test]
    fn error_window_counts_increases_and_survives_restarts() {
        let mut history = VecDeque::new();
        let t0 = Instant::now();
        let w = Duration::from_secs(60);
        assert_eq!(errors_in_window(&mut history, t0, 10.0, w), Some(dec!(0)));
        assert_eq!(
            errors_in_window(&mut history, t0 + Duration::from_secs(10), 13.0, w),
            Some(dec!(3))
        );
        // Outside the window the old increase no longer counts.
        assert_eq!(
            errors_in_window(&mut history, t0 + Duration::from_secs(100), 14.0, w),
            Some(dec!(1))
        );
        // A restart resets the counter.
        assert_eq!(
            errors_in_window(&mut history, t0 + Duration::from_secs(110), 2.0, w),
            Some(dec!(2))
        );
    }
}
