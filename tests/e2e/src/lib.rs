//! The end-to-end suite's toolbox. A [`Flow`] is one user flow in its own namespace, with the
//! operator installed from the chart and (optionally) the exchange simulator running as a pod.
//! Flows drive the system with the exact commands the docs give ([`Flow::sh`], a [`Shell`]);
//! [`docs`] reads those commands from the docs, and the documentation test
//! (tests/docs_commands.rs) runs every one of them.

pub mod docs;
pub mod shell;

pub use shell::{Failed, Shell};

use exchange_sim::{GeneratedKey, KeyAlgorithm, generate_key};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;
use test_harness::{TestNamespace, eventually, root};

/// The exchange simulator running as a pod, with the keys it knows.
pub struct SimPod {
    /// `host:port` of its Service (reachable from the host and from pods).
    pub address: String,
    pub keys: BTreeMap<String, GeneratedKey>,
}

impl SimPod {
    pub fn api_url(&self) -> String {
        format!("http://{}/api/v3/brokerage", self.address)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.address)
    }
}

pub struct Flow {
    pub ns: TestNamespace,
    pub sim: Option<SimPod>,
    pub shell: Shell,
    scratch: tempfile_dir::Dir,
}

/// A scratch folder removed on drop (std only).
mod tempfile_dir {
    use std::path::{Path, PathBuf};

    pub struct Dir(PathBuf);

    impl Dir {
        pub fn new(prefix: &str) -> Self {
            let suffix: u64 = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            let path = std::env::temp_dir().join(format!("{prefix}-{suffix:x}"));
            std::fs::create_dir_all(&path).expect("scratch folder");
            Self(path)
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Which keys the simulator pod registers: (name, balances, derivatives).
pub type KeyPlan<'a> = &'a [(&'a str, &'a [(&'a str, &'a str)], bool)];

impl Flow {
    /// A namespace with the CRD, the images, (optionally) the simulator pod with `keys`, a
    /// credentials Secret per key, and the operator from the chart (`operator_values` merged).
    pub async fn start(prefix: &str, keys: Option<KeyPlan<'_>>, operator_values: Value) -> Flow {
        let cluster = test_harness::cluster();
        // The namespace first: while a test namespace is active, `make demo-down` keeps the CRD.
        let ns = cluster.namespace(prefix).await;
        cluster.install_crd();
        cluster.require_images();
        let scratch = tempfile_dir::Dir::new(&format!("e2e-{prefix}"));
        let mut flow = Flow {
            shell: Shell::new(ns.cluster()),
            ns,
            sim: None,
            scratch,
        };
        flow.var("NS", &flow.ns.name.clone());
        flow.var("OPNS", &flow.ns.name.clone());
        flow.var("RELEASE", "tbo");
        let mut values = operator_values;
        if let Some(keys) = keys {
            let sim = flow.start_sim(keys).await;
            test_harness::merge_json(
                &mut values,
                json!({"exchange": {"defaultApiBaseUrl": sim.api_url(), "defaultWsUrl": sim.ws_url()}}),
            );
            flow.sim = Some(sim);
        }
        flow.ns.deploy_operator(values);
        flow
    }

    async fn start_sim(&mut self, plan: KeyPlan<'_>) -> SimPod {
        let mut keys = BTreeMap::new();
        let mut specs = Vec::new();
        for (name, balances, derivatives) in plan {
            let key = generate_key(KeyAlgorithm::Es256);
            let mut spec = serde_json::to_value(key.key_spec()).expect("key spec serialises");
            spec["balances"] = balances
                .iter()
                .map(|(c, v)| (c.to_string(), json!(v)))
                .collect::<serde_json::Map<_, _>>()
                .into();
            if *derivatives {
                spec["derivatives"] = json!(true);
                spec["portfolio_type"] = json!("INTX");
            }
            specs.push(spec);
            keys.insert(name.to_string(), key);
        }
        let keys_file = self.scratch.path().join("keys.json");
        std::fs::write(&keys_file, serde_json::to_string(&specs).unwrap()).unwrap();
        self.ns.kubectl(&[
            "create",
            "secret",
            "generic",
            "exchange-sim-keys",
            &format!("--from-file=keys.json={}", keys_file.display()),
        ]);
        self.ns.kubectl(&[
            "apply",
            "-f",
            root().join("docs/examples/exchange-sim.yaml").to_str().unwrap(),
        ]);
        self.ns
            .kubectl(&["rollout", "status", "deployment/exchange-sim", "--timeout=120s"]);
        let ip = self
            .ns
            .kubectl(&["get", "service", "exchange-sim", "-o", "jsonpath={.spec.clusterIP}"]);
        let address = format!("{}:8080", ip.trim());
        let health = format!("http://{address}/healthz");
        eventually(Duration::from_secs(30), "the simulator Service", || {
            let url = health.clone();
            async move { get(&url).await }
        })
        .await;
        let sim = SimPod { address, keys };
        // Credentials Secrets named after the keys, with the documented command.
        for name in sim.keys.keys() {
            let file = self.key_file(&sim, name);
            self.var("KEY_FILE", file.to_str().unwrap());
            if name == "coinbase-prod" {
                self.sh("kubectl -n $NS create secret generic coinbase-prod --from-file=cdp_api_key.json=$KEY_FILE");
            } else {
                self.ns.kubectl(&[
                    "create",
                    "secret",
                    "generic",
                    name,
                    &format!("--from-file=cdp_api_key.json={}", file.display()),
                ]);
            }
        }
        // Jobs find the simulator through this optional ConfigMap.
        self.ns.kubectl(&[
            "create",
            "configmap",
            "exchange-endpoints",
            &format!("--from-literal=COINBASE_API_BASE={}", sim.api_url()),
        ]);
        self.var("SIM", &sim.address);
        sim
    }

    fn key_file(&self, sim: &SimPod, name: &str) -> PathBuf {
        let path = self.scratch.path().join(format!("{name}.json"));
        std::fs::write(&path, sim.keys[name].cdp_key_json()).unwrap();
        path
    }

    pub fn scratch(&self) -> PathBuf {
        self.scratch.path().to_path_buf()
    }

    pub fn var(&mut self, name: &str, value: &str) {
        self.shell.var(name, value);
    }

    /// Run a documented command exactly as written (see [`Shell`]). Panics with the output when
    /// it fails.
    pub fn sh(&self, command: &str) -> String {
        self.shell.sh(command)
    }

    pub fn sh_result(&self, command: &str) -> Result<String, Failed> {
        self.shell.run(command)
    }

    /// Run a documented command until its output satisfies `accept`; a failing run fails the
    /// flow at once (see [`Shell::sh_until`]).
    pub async fn sh_until(
        &self,
        command: &str,
        what: &str,
        timeout: Duration,
        accept: impl Fn(&str) -> bool,
    ) -> String {
        self.shell.sh_until(command, what, timeout, accept).await
    }

    /// Wait until the bot's metrics answer through the API server's service proxy (a Service
    /// with a ready endpoint), so the documented metrics command can run.
    pub async fn wait_metrics_served(&self, bot: &str, timeout: Duration) {
        eventually(timeout, &format!("{bot}'s metrics through the API server"), || {
            let served = self.bot_metric(bot, "perps_bot_cycles_total").is_some();
            async move { served.then_some(()) }
        })
        .await;
    }

    /// POST to the simulator's admin API (faults, balances).
    pub async fn admin(&self, path: &str, body: Value) {
        let sim = self.sim.as_ref().expect("this flow runs the simulator");
        let _ = rustls::crypto::ring::default_provider().install_default();
        let response = reqwest::Client::new()
            .post(format!("http://{}{path}", sim.address))
            .json(&body)
            .send()
            .await
            .expect("admin request");
        assert!(response.status().is_success(), "admin {path}: {}", response.status());
    }

    /// One metric of the bot's `/metrics` (through the API server's service proxy).
    pub fn bot_metric(&self, bot: &str, name: &str) -> Option<f64> {
        let raw = self
            .ns
            .cluster()
            .kubectl_result(&[
                "get",
                "--raw",
                &format!(
                    "/api/v1/namespaces/{}/services/{bot}-metrics:metrics/proxy/metrics",
                    self.ns.name
                ),
            ])
            .ok()?;
        raw.lines()
            .find(|l| l.split(['{', ' ']).next() == Some(name))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }

    pub async fn wait_phase(&self, bot: &str, phase: &str, timeout: Duration) {
        let jsonpath = "jsonpath={.status.phase}".to_string();
        eventually(timeout, &format!("{bot} {phase}"), || {
            let got = self
                .ns
                .kubectl_result(&["get", "tb", bot, "-o", &jsonpath])
                .unwrap_or_default();
            async move { (got.trim() == phase).then_some(()) }
        })
        .await;
    }
}

/// Buy `orders` × 0.001 BTC through the bot's own order tool in its pod, so the position is the
/// bot's own (a bot only counts and sells what it bought). Small orders, each retried while the
/// simulator's book is too thin for the bot's slippage guard (the book moves every tick).
pub async fn buy_for_the_bot(ns: &TestNamespace, bot: &str, orders: usize) {
    let buy = [
        "exec",
        bot,
        "--",
        "/usr/local/bin/perps-bot",
        "orders",
        "place",
        "--symbol",
        "BTC-USD",
        "--side",
        "buy",
        "--quantity",
        "0.001",
    ];
    for n in 1..=orders {
        eventually(Duration::from_secs(60), &format!("buy {n} of {orders} placed"), || {
            let placed = match ns.kubectl_result(&buy) {
                Ok(out) => {
                    assert!(out.contains("order_id"), "{out}");
                    Some(())
                }
                Err(e) if format!("{e:#}").contains("slippage_guard") => None,
                Err(e) => panic!("{e:#}"),
            };
            async move { placed }
        })
        .await;
    }
}

pub async fn get(url: &str) -> Option<String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let response = reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(3))
        .send()
        .await
        .ok()?;
    response.status().is_success().then_some(())?;
    response.text().await.ok()
}

/// Wait until the acknowledgement of `trip` on `bot` is accepted, after the annotation was set
/// to `value`. The operator may have judged it on a scrape from before the recovery; as the
/// runbook says, a refused acknowledgement is retried with a new value (`<trip>@<anything>`):
/// each refusal of the current value sets the next one. A wait on the operator's answers, not
/// on time.
pub async fn accept_trip(ns: &TestNamespace, bot: &str, trip: &str, value: &str) {
    let mut attempt = 0;
    let mut current = value.to_string();
    eventually(
        Duration::from_secs(90),
        &format!("the acknowledgement of {trip} accepted"),
        || {
            let got = ns
                .kubectl_result(&[
                    "get",
                    "tb",
                    bot,
                    "-o",
                    "jsonpath={.status.lastAck.result} {.status.lastAck.value}",
                ])
                .unwrap_or_default();
            let (result, answered) = got.trim().split_once(' ').unwrap_or_default();
            let accepted = result == "Accepted" && answered == current;
            if result == "Refused" && answered == current {
                attempt += 1;
                current = format!("{trip}@retry-{attempt}");
                let annotation = format!("trading.gpttrader.io/ack-trip={current}");
                ns.kubectl(&["annotate", "tb", bot, "--overwrite", &annotation]);
            }
            async move { accepted.then_some(()) }
        },
    )
    .await;
}
