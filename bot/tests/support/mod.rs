//! Shared by the simulator suites: a simulator with a funded key and its credentials folder,
//! the `perps-bot` binary run with a clean environment (stopped by pid when dropped), the
//! bot's metrics.json, and the exchange's own record of the bot's orders.

#![allow(dead_code)]

use exchange_sim::{GeneratedKey, KeyAlgorithm, SimConfig, Simulator, generate_key};
use perps_bot::coinbase::{Credentials, RestClient, RestOptions};
use rust_decimal::Decimal;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_perps-bot");
/// The client order id prefix of a bot run by hand.
pub const LOCAL: &str = tradingbot_crds::names::LOCAL_CLIENT_ORDER_PREFIX;

/// A simulator, a key holding `balances`, and a folder with the key file.
pub struct Exchange {
    pub sim: Simulator,
    pub key: GeneratedKey,
    pub dir: tempfile::TempDir,
}

impl Exchange {
    pub async fn start(tick: Duration, balances: &[(&str, Decimal)]) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let sim = Simulator::start(SimConfig {
            tick,
            ..SimConfig::default()
        })
        .await
        .expect("the simulator starts");
        let key = generate_key(KeyAlgorithm::Es256);
        sim.register_key(
            key.key_spec()
                .with_balances(balances.iter().map(|(c, v)| (c.to_string(), *v))),
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("credentials")).unwrap();
        std::fs::write(dir.path().join("credentials/cdp_api_key.json"), key.cdp_key_json()).unwrap();
        Self { sim, key, dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The environment a bot needs to trade on this exchange (nothing else is inherited).
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("COINBASE_API_BASE".into(), self.sim.api_url()),
            ("COINBASE_WS_URL".into(), self.sim.ws_url()),
            (
                "COINBASE_CREDENTIALS_DIR".into(),
                self.path("credentials").display().to_string(),
            ),
        ]
    }

    /// Total (available plus hold) of `currency` on the account, as the exchange says.
    pub async fn balance(&self, currency: &str) -> Decimal {
        let accounts = perps_bot::coinbase::broker::all_accounts(&self.rest()).await.unwrap();
        accounts
            .iter()
            .filter(|a| a.currency.as_deref() == Some(currency))
            .map(|a| {
                a.available_balance.value.opt("available").unwrap().unwrap_or_default()
                    + a.hold.value.opt("hold").unwrap().unwrap_or_default()
            })
            .sum()
    }

    pub fn rest(&self) -> RestClient {
        let credentials = Credentials::parse(&self.key.name, &self.key.private_key_pem, "test").unwrap();
        RestClient::new(
            RestOptions::new(self.sim.api_url(), "test"),
            Some(Arc::new(credentials)),
        )
        .unwrap()
    }

    /// Every order on the account whose client order id starts with `prefix`, as the
    /// exchange's history returns them.
    pub async fn orders_of(&self, prefix: &str) -> Vec<Value> {
        let rest = self.rest();
        let mut orders = Vec::new();
        let mut cursor = String::new();
        loop {
            let mut query = vec![("limit", "1000".to_string())];
            if !cursor.is_empty() {
                query.push(("cursor", cursor.clone()));
            }
            let page: Value =
                serde_json::from_slice(&rest.get("/orders/historical/batch", &query).await.unwrap()).unwrap();
            orders.extend(
                page["orders"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|o| o["client_order_id"].as_str().unwrap_or_default().starts_with(prefix))
                    .cloned(),
            );
            match page["cursor"].as_str() {
                Some(next) if page["has_next"] == true && !next.is_empty() => cursor = next.to_string(),
                _ => return orders,
            }
        }
    }

    /// The orders of `prefix` from the exchange's history: `(product, side) -> (orders,
    /// filled base quantity)`.
    pub async fn filled_by(&self, prefix: &str) -> BTreeMap<(String, String), (usize, Decimal)> {
        let mut totals: BTreeMap<(String, String), (usize, Decimal)> = BTreeMap::new();
        for order in self.orders_of(prefix).await {
            let key = (
                order["product_id"].as_str().unwrap().to_string(),
                order["side"].as_str().unwrap().to_string(),
            );
            let entry = totals.entry(key).or_default();
            entry.0 += 1;
            entry.1 += dec(&order["filled_size"]);
        }
        totals
    }

    /// The net cash flow of `prefix`'s fills as the exchange records them: what its sells
    /// brought in, less what its buys cost, less all fees.
    pub async fn cash_flow_of(&self, prefix: &str) -> Decimal {
        self.orders_of(prefix)
            .await
            .iter()
            .map(|o| {
                let (value, fees) = (dec(&o["filled_value"]), dec(&o["total_fees"]));
                if o["side"] == "SELL" {
                    value - fees
                } else {
                    -value - fees
                }
            })
            .sum()
    }

    /// A deposit (`amount` > 0) or withdrawal (`amount` < 0) of `currency` on the account.
    pub fn transfer(&self, currency: &str, amount: Decimal) {
        self.sim.transfer(&self.key.name, currency, amount).unwrap();
    }

    /// A market order for the key under `client_order_id` (history for a bot identity).
    pub fn place(&self, client_order_id: &str, product: &str, side: &str, size: Decimal) -> String {
        self.sim
            .place_market_order(&exchange_sim::AdminOrder {
                key_name: self.key.name.clone(),
                client_order_id: client_order_id.into(),
                product_id: product.into(),
                side: side.into(),
                base_size: size,
            })
            .unwrap()
    }
}

/// `perps-bot` running with only the given environment; killed by pid when dropped.
pub struct BotProcess {
    child: Child,
    pub log: PathBuf,
}

impl BotProcess {
    pub fn start(args: &[&str], env: &[(String, String)], cwd: &Path, log: &Path) -> Self {
        let file = std::fs::File::create(log).unwrap();
        let child = Command::new(BIN)
            .args(args)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(cwd)
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .stdin(Stdio::null())
            .spawn()
            .expect("perps-bot starts");
        Self {
            child,
            log: log.to_path_buf(),
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then wait (blocking the calling worker) for the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        // SAFETY: kill(2) on the pid of the child we spawned.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        self.wait(Duration::from_secs(60)).expect("the bot stops after SIGTERM")
    }

    pub fn wait(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for BotProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Run `perps-bot` to completion with only `env`.
pub fn run(args: &[&str], env: &[(String, String)], cwd: &Path) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .current_dir(cwd)
        .output()
        .expect("perps-bot runs")
}

pub fn describe(output: &std::process::Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// metrics.json as the bot last wrote it.
pub fn metrics_json(path: &Path) -> Option<Value> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// Wait (polling, generous deadline) until `check` holds; panics naming `what` otherwise.
pub async fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn dec(value: &Value) -> Decimal {
    match value {
        Value::String(s) => s.parse().unwrap(),
        Value::Number(n) => n.to_string().parse().unwrap(),
        other => panic!("not a decimal: {other}"),
    }
}

/// The sum of every series of metric `name` in a Prometheus text page.
pub fn total(text: &str, name: &str) -> Option<f64> {
    let values: Vec<f64> = text
        .lines()
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}
