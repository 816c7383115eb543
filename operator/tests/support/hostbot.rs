//! perps-bot run as a process on the host for one bot identity, with a service account token
//! of its own (optionally bound to a pod, as the kubelet's are): instances the test starts,
//! stops and skews at will, trading on the in-process exchange simulator.

use super::sim::PodExchange;
use exchange_sim::GeneratedKey;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use std::path::PathBuf;
use test_harness::{HostProcess, TestNamespace, root};

/// A token of `service_account`, bound to the pod `bound_to` (name, uid) when given: such a
/// token stops working once that pod object is gone.
pub async fn service_account_token(
    ns: &TestNamespace,
    service_account: &str,
    bound_to: Option<(&str, &str)>,
) -> String {
    let client = ns.cluster().client().await;
    let api: Api<ServiceAccount> = Api::namespaced(client, &ns.name);
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: Vec::new(),
            expiration_seconds: Some(3600),
            bound_object_ref: bound_to.map(|(name, uid)| BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(name.into()),
                uid: Some(uid.into()),
            }),
        },
        ..Default::default()
    };
    let issued = api
        .create_token_request(service_account, &PostParams::default(), &request)
        .await
        .expect("TokenRequest");
    issued.status.expect("a token").token
}

/// A kubeconfig using `token` against the local cluster, in the test's log folder.
pub fn kubeconfig(name: &str, token: &str) -> PathBuf {
    let settings = test_harness::cluster().settings();
    let dir = root().join("target/test-logs");
    std::fs::create_dir_all(&dir).expect("log folder");
    let path = dir.join(format!("{name}.kubeconfig"));
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    server: {}\n    certificate-authority: {}\nusers:\n- name: bot\n  user:\n    token: {token}\ncontexts:\n- name: bot\n  context: {{cluster: local, user: bot}}\ncurrent-context: bot\n",
        settings.apiserver_url(),
        settings.ca_file().display()
    );
    std::fs::write(&path, text).expect("kubeconfig written");
    path
}

/// A free TCP port on loopback (for a host bot's /metrics).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// One perps-bot process for the prod identity of TradingBot `bot`.
pub struct HostBot {
    pub process: HostProcess,
    pub metrics_port: u16,
    /// How the simulator's order log names this process (`X-Client-Instance`).
    pub client_instance: String,
}

pub struct HostBotOptions<'a> {
    pub name: &'a str,
    pub bot: &'a str,
    /// POD_NAME and POD_UID the process reports (in its Lease holder and order log entries).
    pub pod: &'a str,
    pub pod_uid: &'a str,
    pub token: &'a str,
    pub key: &'a GeneratedKey,
    /// Seconds added to the wall clock this process writes into its Lease.
    pub clock_offset_seconds: i64,
    /// Profile overrides (a `--config` file's YAML).
    pub config: &'a str,
}

impl HostBot {
    /// Start it: demo profile on the simulator, with `options.config` over it.
    pub fn start(ns: &TestNamespace, exchange: &PodExchange, options: HostBotOptions<'_>) -> Self {
        let dir = root().join("target/test-logs").join(options.name);
        let credentials = dir.join("credentials");
        std::fs::create_dir_all(&credentials).expect("credentials folder");
        std::fs::write(credentials.join("cdp_api_key.json"), options.key.cdp_key_json()).expect("key file");
        let config = dir.join("config.yaml");
        std::fs::write(&config, options.config).expect("config file");
        let kubeconfig = kubeconfig(options.name, options.token);
        let metrics_port = free_port();
        let metrics_addr = format!("127.0.0.1:{metrics_port}");
        let offset = options.clock_offset_seconds.to_string();
        let binary = root().join("target/debug/perps-bot");
        let (metrics_file, state_file) = (dir.join("metrics.json"), dir.join("guard-state.json"));
        let args = [
            "--profile",
            "demo",
            "--dry-run=false",
            "--symbols",
            "BTC-USD,ETH-USD,SOL-USD",
            "--interval",
            "0.3",
            "--config",
            config.to_str().unwrap(),
            "--metrics-file",
            metrics_file.to_str().unwrap(),
            "--state-file",
            state_file.to_str().unwrap(),
        ];
        let api_url = exchange.sim.api_url();
        let envs = [
            ("KUBECONFIG", kubeconfig.to_str().unwrap()),
            ("TRADINGBOT_NAME", options.bot),
            ("TRADINGBOT_NAMESPACE", ns.name.as_str()),
            ("TRADINGBOT_INSTANCE", "prod"),
            ("POD_NAME", options.pod),
            ("POD_UID", options.pod_uid),
            ("PERPS_BOT_METRICS_ADDR", metrics_addr.as_str()),
            ("COINBASE_API_BASE", api_url.as_str()),
            ("COINBASE_CREDENTIALS_DIR", credentials.to_str().unwrap()),
            ("PERPS_BOT_TEST_CLOCK_OFFSET_SECONDS", offset.as_str()),
            ("RUST_LOG", "info"),
        ];
        let process = HostProcess::start(options.name, &binary, &args, &envs).expect("perps-bot starts");
        Self {
            process,
            metrics_port,
            client_instance: format!("{}/{}/prod/{}/{}", ns.name, options.bot, options.pod, options.pod_uid),
        }
    }

    pub async fn metrics(&self) -> Option<String> {
        super::http_get(&format!("http://127.0.0.1:{}/metrics", self.metrics_port)).await
    }

    /// A metric's value right now (None when unreachable or absent).
    pub async fn metric(&self, name: &str) -> Option<f64> {
        test_harness::metric(&self.metrics().await?, name)
    }
}
