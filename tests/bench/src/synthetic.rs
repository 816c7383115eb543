//! A synthetic fleet of bot metrics endpoints: one HTTP server on this host answering as many
//! bots, each on an address of its own, so the operator's scrape path can be measured at a fleet
//! size this machine could never run as pods.
//!
//! A local route makes a whole prefix this host's own (a Linux "AnyIP" route), so pods reach
//! every address of it through their gateway and one socket bound to the wildcard address
//! answers all of them; the Host header of a request names the bot asked. The route is removed
//! when the fleet is dropped, also when the bench fails.
//!
//! Each bot answers a page with every metric of the bot's contract (the same families a real
//! bot exports), its daily loss and trading mode set by the bench.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::get;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tradingbot_crds::bot_metrics::{self, MetricDef};

/// The metrics port every synthetic bot declares (`spec.metrics.port`).
pub const PORT: u16 = 19102;
/// 10.201.0.0/20: outside the pod, Service and node ranges of the local cluster.
const PREFIX: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 0);
const PREFIX_LEN: u32 = 20;
/// Addresses in the prefix a bot can have (the network and broadcast addresses excluded).
pub const CAPACITY: usize = (1 << (32 - PREFIX_LEN)) - 2;

/// The address of synthetic bot `index`.
pub fn address(index: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(PREFIX) + 1 + index as u32)
}

/// The bot a Host header (`ip:port` or `ip`) asks for.
fn index_of(host: &str) -> Option<usize> {
    let ip = host.rsplit_once(':').map_or(host, |(ip, _)| ip);
    let ip: Ipv4Addr = ip.parse().ok()?;
    let offset = u32::from(ip).checked_sub(u32::from(PREFIX) + 1)? as usize;
    (offset < CAPACITY).then_some(offset)
}

/// What one synthetic bot reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reported {
    /// `perps_bot_daily_loss`, as the decimal text the page shows.
    pub daily_loss: String,
    /// `perps_bot_trading_mode`: 0 Normal, 1 ReduceOnly, 2 Halted.
    pub mode: u8,
}

impl Default for Reported {
    fn default() -> Self {
        Self {
            daily_loss: "0".into(),
            mode: 0,
        }
    }
}

struct Shared {
    reported: Mutex<Vec<Reported>>,
    scrapes: Vec<AtomicU64>,
    /// Every line of the page but the two the bench sets.
    page: String,
}

/// The fleet's server and its route; both go when dropped.
pub struct SyntheticFleet {
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
    _route: LocalRoute,
}

impl SyntheticFleet {
    /// Answer as `bots` bots on addresses `address(0..bots)`.
    pub async fn start(bots: usize) -> anyhow::Result<Self> {
        anyhow::ensure!(
            bots <= CAPACITY,
            "{bots} synthetic bots do not fit in {PREFIX}/{PREFIX_LEN} ({CAPACITY} addresses)"
        );
        // The operator keeps a connection open to every bot it scrapes.
        ensure_open_files(bots as u64 + 1024)?;
        let route = LocalRoute::add(&format!("{PREFIX}/{PREFIX_LEN}"))?;
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::UNSPECIFIED, PORT)).await?;
        let shared = Arc::new(Shared {
            reported: Mutex::new(vec![Reported::default(); bots]),
            scrapes: (0..bots).map(|_| AtomicU64::new(0)).collect(),
            page: static_page(),
        });
        let app = Router::new().route("/metrics", get(metrics)).with_state(shared.clone());
        let server = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                eprintln!("bench: the synthetic fleet's server stopped: {error}");
            }
        });
        Ok(Self {
            shared,
            server,
            _route: route,
        })
    }

    /// What bot `index` reports as its daily loss from now on.
    pub fn set_loss(&self, index: usize, loss: &str) {
        self.update(|all| {
            if let Some(one) = all.get_mut(index) {
                one.daily_loss = loss.to_string();
            }
        });
    }

    /// What bot `index` reports as its trading mode from now on.
    pub fn set_mode(&self, index: usize, mode: u8) {
        self.update(|all| {
            if let Some(one) = all.get_mut(index) {
                one.mode = mode;
            }
        });
    }

    /// Every bot reports `mode` from now on.
    pub fn set_all_modes(&self, mode: u8) {
        self.update(|all| all.iter_mut().for_each(|one| one.mode = mode));
    }

    fn update(&self, change: impl FnOnce(&mut Vec<Reported>)) {
        change(&mut self.shared.reported.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// Requests answered so far, per bot.
    pub fn scrapes(&self) -> Vec<u64> {
        self.shared.scrapes.iter().map(|s| s.load(Ordering::Relaxed)).collect()
    }

    /// The size of one bot's page.
    pub fn page_bytes(&self) -> usize {
        render(&self.shared.page, &Reported::default()).len()
    }
}

impl Drop for SyntheticFleet {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn metrics(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Result<String, StatusCode> {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .ok_or(StatusCode::BAD_REQUEST)?;
    let index = index_of(host)
        .filter(|i| *i < shared.scrapes.len())
        .ok_or(StatusCode::NOT_FOUND)?;
    shared.scrapes[index].fetch_add(1, Ordering::Relaxed);
    let reported = shared
        .reported
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(index)
        .cloned()
        .unwrap_or_default();
    Ok(render(&shared.page, &reported))
}

fn render(page: &str, reported: &Reported) -> String {
    format!(
        "{page}{} {}\n{} {}\n",
        bot_metrics::DAILY_LOSS.name,
        reported.daily_loss,
        bot_metrics::TRADING_MODE.name,
        reported.mode
    )
}

/// A label value of the kind a real bot gives.
fn label_value(label: &str) -> &'static str {
    match label {
        "symbol" => "BTC-USD",
        "kind" => "exchange",
        "guard" => "dailyLoss",
        "level" => "ReduceOnly",
        "side" => "buy",
        "reason" => "risk",
        "result" => "done",
        "file" => "metrics",
        "version" => "0.0.0-synthetic",
        "profile" => "dev",
        "instance" => "prod",
        _ => "x",
    }
}

/// The value a healthy, idle bot reports for `metric`.
fn idle_value(metric: &MetricDef) -> &'static str {
    if [
        bot_metrics::BUILD_INFO,
        bot_metrics::MODE_KNOWN,
        bot_metrics::LEASE_HELD,
    ]
    .contains(metric)
    {
        "1"
    } else {
        "0"
    }
}

/// HELP, TYPE and a sample of every contract metric, the daily loss's and mode's samples left
/// to [`render`]; the cycle histogram with a real bot's bucket count.
fn static_page() -> String {
    let mut page = String::new();
    for metric in bot_metrics::ALL {
        let kind = if *metric == bot_metrics::CYCLE_DURATION {
            "histogram"
        } else if metric.name.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        let _ = writeln!(page, "# HELP {} {}", metric.name, metric.help);
        let _ = writeln!(page, "# TYPE {} {kind}", metric.name);
        if [bot_metrics::DAILY_LOSS, bot_metrics::TRADING_MODE].contains(metric) {
            continue;
        }
        if kind == "histogram" {
            for le in [
                "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf",
            ] {
                let _ = writeln!(page, "{}_bucket{{le=\"{le}\"}} 0", metric.name);
            }
            let _ = writeln!(page, "{}_sum 0\n{}_count 0", metric.name, metric.name);
            continue;
        }
        let labels: Vec<String> = metric
            .labels
            .iter()
            .map(|l| format!("{l}=\"{}\"", label_value(l)))
            .collect();
        let labels = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{}}}", labels.join(","))
        };
        let _ = writeln!(page, "{}{labels} {}", metric.name, idle_value(metric));
    }
    page
}

/// Raise this process's open-file limit to at least `wanted` (up to the hard limit).
fn ensure_open_files(wanted: u64) -> anyhow::Result<()> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        anyhow::bail!("getrlimit(RLIMIT_NOFILE): {}", std::io::Error::last_os_error());
    }
    if limit.rlim_cur >= wanted {
        return Ok(());
    }
    anyhow::ensure!(
        limit.rlim_max >= wanted,
        "the synthetic fleet needs {wanted} open files; the hard limit is {}",
        limit.rlim_max
    );
    limit.rlim_cur = wanted;
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        anyhow::bail!(
            "setrlimit(RLIMIT_NOFILE, {wanted}): {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// A route making every address of a prefix local to this host, removed on drop.
struct LocalRoute {
    prefix: String,
}

impl LocalRoute {
    fn add(prefix: &str) -> anyhow::Result<Self> {
        // `replace`: a route left by a bench that was killed is taken over, not refused.
        ip(&["route", "replace", "local", prefix, "dev", "lo", "table", "local"])?;
        Ok(Self {
            prefix: prefix.to_string(),
        })
    }
}

impl Drop for LocalRoute {
    fn drop(&mut self) {
        if let Err(error) = ip(&["route", "del", "local", &self.prefix, "dev", "lo", "table", "local"]) {
            eprintln!("bench: removing the synthetic fleet's route {}: {error:#}", self.prefix);
        }
    }
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new("ip").args(args).output()?;
    anyhow::ensure!(
        output.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_map_back_to_their_bot() {
        assert_eq!(address(0), Ipv4Addr::new(10, 201, 0, 1));
        assert_eq!(index_of("10.201.0.1:19102"), Some(0));
        assert_eq!(index_of(&format!("{}:{PORT}", address(2999))), Some(2999));
        assert_eq!(index_of(&address(CAPACITY - 1).to_string()), Some(CAPACITY - 1));
        assert_eq!(index_of("10.201.0.0"), None);
        assert_eq!(index_of("10.202.0.1:19102"), None);
        assert_eq!(index_of("bot.example:19102"), None);
    }

    #[test]
    fn the_page_parses_and_carries_what_the_bench_sets() {
        let reported = Reported {
            daily_loss: "150.5".into(),
            mode: 1,
        };
        let page = render(&static_page(), &reported);
        let samples = tradingbot_crds::exposition::parse(&page);
        let value = |name: &str| samples.iter().find(|s| s.name == name).map(|s| s.value);
        assert_eq!(value(bot_metrics::DAILY_LOSS.name), Some(150.5));
        assert_eq!(value(bot_metrics::TRADING_MODE.name), Some(1.0));
        assert_eq!(value(bot_metrics::LEASE_HELD.name), Some(1.0));
        for metric in bot_metrics::ALL {
            assert!(page.contains(metric.name), "{} missing", metric.name);
        }
    }
}
