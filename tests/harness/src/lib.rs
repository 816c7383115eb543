//! Test support for suites that run against a real Kubernetes cluster.
//!
//! * [`cluster`] makes sure a cluster is reachable: the one named by `KUBECONFIG` when set,
//!   otherwise the local cluster from `tests/cluster/` (started with `cluster-up.sh` if needed).
//! * [`Cluster::namespace`] gives each test its own namespace, deleted when dropped.
//! * [`Cluster::kubectl`] runs the cluster's kubectl (v1.20.2, matching the API server).
//! * [`HostProcess`] runs a program on the host and kills it (by pid) when dropped.
//! * [`eventually`] polls a condition with a generous deadline.
//! * [`ClusterSettings`] are the local cluster's addresses and paths (from `cluster.env`).
//! * [`IptablesRule`] is a firewall rule that is removed when dropped, also on a panic.
//! * [`audited_writes`] reads the API server's audit log, refusing one that cannot vouch for
//!   the window asked about.

mod audit;
mod iptables;
mod settings;

pub use audit::{AuditLog, AuditLogError, AuditedWrite, audit_now, audited_writes, try_audited_writes};
pub use iptables::{IptablesRule, RULE_COMMENT_PREFIX, remove_rules_of_dead_tests};
pub use settings::ClusterSettings;

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ObjectMeta, PostParams};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Where the local cluster keeps its state by default (see tests/cluster/lib.sh; `TB_CLUSTER_DIR`
/// overrides it).
pub const LOCAL_CLUSTER_DIR: &str = "/var/tmp/tradingbot-cluster";

/// The local cluster's settings (`$TB_CLUSTER_DIR/cluster.env`, written by cluster-up.sh).
pub fn local_settings() -> anyhow::Result<ClusterSettings> {
    ClusterSettings::load(&cluster_dir().join("cluster.env"))
}

/// How pods reach processes on the host: the pod bridge's gateway, from the cluster's settings.
pub fn host_from_pods() -> String {
    local_settings()
        .unwrap_or_else(|e| panic!("{e:#}"))
        .pod_gateway()
        .to_string()
}

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root exists")
}

/// The local cluster's state directory.
pub fn cluster_dir() -> PathBuf {
    std::env::var_os("TB_CLUSTER_DIR").map_or_else(|| PathBuf::from(LOCAL_CLUSTER_DIR), PathBuf::from)
}

/// A reachable cluster.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub kubeconfig: PathBuf,
    pub kubectl_path: PathBuf,
}

static ENSURED: OnceLock<Result<Cluster, String>> = OnceLock::new();

/// The cluster tests run on; started once per test binary when it is not up.
pub fn cluster() -> Cluster {
    ENSURED
        .get_or_init(|| ensure_cluster().map_err(|e| format!("{e:#}")))
        .clone()
        .unwrap_or_else(|e| panic!("no Kubernetes cluster for the tests: {e}"))
}

fn ensure_cluster() -> anyhow::Result<Cluster> {
    if let Some(kubeconfig) = std::env::var_os("KUBECONFIG")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        && kubeconfig != cluster_dir().join("kubeconfig")
    {
        let kubectl = which_kubectl();
        let cluster = Cluster {
            kubeconfig,
            kubectl_path: kubectl,
        };
        cluster
            .kubectl_result(&["get", "--raw", "/readyz"])
            .context("KUBECONFIG names a cluster that is not ready")?;
        return Ok(cluster);
    }
    let dir = cluster_dir();
    let cluster = Cluster {
        kubeconfig: dir.join("kubeconfig"),
        kubectl_path: dir.join("bin/kubectl"),
    };
    claim_local_cluster(&dir);
    if cluster.kubectl_result(&["get", "--raw", "/readyz"]).is_err() {
        let script = root().join("tests/cluster/cluster-up.sh");
        let status = Command::new(&script)
            .status()
            .with_context(|| format!("running {}", script.display()))?;
        if !status.success() {
            bail!("{} failed ({status})", script.display());
        }
    }
    Ok(cluster)
}

/// The shared hold of the CRD lock (see `TB_CRD_LOCK` in tests/cluster/lib.sh), released when
/// dropped; `None` when the lock file cannot be opened (no local cluster directory: nothing runs
/// `make demo-down` against this cluster from here).
fn crd_lock_shared() -> Option<std::fs::File> {
    let dir = cluster_dir();
    let path = format!("{}.crd.lock", dir.to_string_lossy().trim_end_matches('/'));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .ok()?;
    file.lock_shared().expect("shared lock of the CRD lock file");
    Some(file)
}

/// Record that this test process uses the local cluster, so a script run that started the
/// cluster does not stop it while this process runs (see `cluster_claim` in
/// tests/cluster/lib.sh; the claim lapses when this process is gone).
fn claim_local_cluster(dir: &Path) {
    let users = PathBuf::from(format!("{}.users", dir.display()));
    let pid = std::process::id();
    if std::fs::create_dir_all(&users).is_ok() {
        let _ = std::fs::write(users.join(format!("cargo-test-{pid}")), format!("{pid}\n"));
    }
}

fn which_kubectl() -> PathBuf {
    let local = cluster_dir().join("bin/kubectl");
    if local.exists() {
        local
    } else {
        PathBuf::from("kubectl")
    }
}

impl Cluster {
    /// A kube client for this cluster (make one per test: clients belong to a runtime).
    pub async fn client(&self) -> kube::Client {
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.kubeconfig).expect("readable kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .expect("usable kubeconfig");
        kube::Client::try_from(config).expect("a client")
    }

    /// A kube client that acts as ServiceAccount `namespace/name` (impersonated by the admin
    /// credentials): every request is authorised, and checked for escalation, as that account's.
    pub async fn client_as_service_account(&self, namespace: &str, name: &str) -> kube::Client {
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.kubeconfig).expect("readable kubeconfig");
        let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .expect("usable kubeconfig");
        config.auth_info.impersonate = Some(format!("system:serviceaccount:{namespace}:{name}"));
        config.auth_info.impersonate_groups = Some(vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{namespace}"),
            "system:authenticated".into(),
        ]);
        kube::Client::try_from(config).expect("a client")
    }

    /// Run kubectl; `Err` carries stderr when it exits non-zero.
    pub fn kubectl_result(&self, args: &[&str]) -> anyhow::Result<String> {
        let output = self.kubectl_output(args, None)?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            bail!(
                "kubectl {} failed: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr),
                String::from_utf8_lossy(&output.stdout)
            )
        }
    }

    /// Run kubectl with `stdin` as input (e.g. `apply -f -`).
    pub fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> anyhow::Result<String> {
        let output = self.kubectl_output(args, Some(stdin))?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            bail!(
                "kubectl {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr)
            )
        }
    }

    /// Run kubectl and panic with its output when it fails.
    pub fn kubectl(&self, args: &[&str]) -> String {
        self.kubectl_result(args).unwrap_or_else(|e| panic!("{e:#}"))
    }

    fn kubectl_output(&self, args: &[&str], stdin: Option<&str>) -> anyhow::Result<Output> {
        let mut command = Command::new(&self.kubectl_path);
        command
            .env("KUBECONFIG", &self.kubeconfig)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if stdin.is_some() {
            command.stdin(Stdio::piped());
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("running {}", self.kubectl_path.display()))?;
        if let Some(text) = stdin {
            use std::io::Write;
            child.stdin.take().expect("piped stdin").write_all(text.as_bytes())?;
        }
        Ok(child.wait_with_output()?)
    }

    /// Install (or update) the TradingBot CRD from the committed YAML and wait until served. A
    /// CRD still being deleted (for example by `make demo-down`) is waited for first; see
    /// [`Cluster::let_go_of_a_deleted_crd`].
    pub fn install_crd(&self) {
        self.let_go_of_a_deleted_crd();
        for (file, crd) in [
            ("crds/tradingbot.crd.yaml", "crd/tradingbots.trading.gpttrader.io"),
            (
                "crds/tradingaccount.crd.yaml",
                "crd/tradingaccounts.trading.gpttrader.io",
            ),
        ] {
            self.apply_crd(file, crd);
        }
    }

    /// Server-side apply one committed CRD file and wait until `crd` is served.
    fn apply_crd(&self, file: &str, crd: &str) {
        let path = root().join(file);
        // Server-side apply: only the fields in the committed YAML are ours, so what others set
        // on the same CRD (the chart's `helm.sh/resource-policy: keep`, applied concurrently by
        // the upgrade flow) stays. Tests install it concurrently: an apply that loses the race
        // to create it (AlreadyExists) or to update it (Conflict) succeeds when tried again.
        let apply = [
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=test-harness",
            "-f",
            path.to_str().expect("utf-8 path"),
        ];
        let mut attempt = 1;
        while let Err(e) = self.kubectl_result(&apply) {
            let text = format!("{e:#}");
            let raced = text.contains("AlreadyExists") || text.contains("the object has been modified");
            assert!(raced && attempt < 5, "{text}");
            attempt += 1;
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        self.wait_crd_established(crd);
    }

    /// Wait (up to 60 s) until the CRD `crd` (`crd/<name>`) reports `Established=True`.
    ///
    /// Not `kubectl wait --for=condition=Established`: on a CRD the API server has only just
    /// created, `.status.conditions` is still null, and kubectl then fails at once
    /// (`.status.conditions accessor error: <nil> is of the type <nil>`) instead of waiting.
    pub fn wait_crd_established(&self, crd: &str) {
        let established = [
            "get",
            crd,
            "-o",
            r#"jsonpath={.status.conditions[?(@.type=="Established")].status}"#,
        ];
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let answer = self.kubectl_result(&established);
            if matches!(&answer, Ok(status) if status.trim() == "True") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{crd} was not Established within 60 s; last answer: {answer:?}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// When the CRD is being deleted, wait for the deletion to finish. TradingBots keep it
    /// waiting on their finalizers; only those our own tests left behind (in a namespace
    /// labelled `tradingbot-test=true` that is itself being deleted, so its test and operator are
    /// gone) are let go by removing the finalizer. Anyone else's TradingBots are never touched:
    /// if they hold the CRD, this panics naming them.
    fn let_go_of_a_deleted_crd(&self) {
        let crd = "crd/tradingbots.trading.gpttrader.io";
        let deleting = self
            .kubectl_result(&["get", crd, "-o", "jsonpath={.metadata.deletionTimestamp}"])
            .unwrap_or_default();
        if deleting.trim().is_empty() {
            return;
        }
        let abandoned = self.abandoned_test_namespaces();
        let bots = self
            .kubectl_result(&[
                "get",
                "tradingbots",
                "-A",
                "-o",
                "jsonpath={range .items[*]}{.metadata.namespace}/{.metadata.name}{\"\\n\"}{end}",
            ])
            .unwrap_or_default();
        for (ns, name) in bots.lines().filter_map(|l| l.split_once('/')) {
            if abandoned.iter().any(|a| a == ns) {
                let patch = r#"{"metadata":{"finalizers":null}}"#;
                let _ = self.kubectl_result(&["-n", ns, "patch", "tradingbot", name, "--type", "merge", "-p", patch]);
            }
        }
        if self
            .kubectl_result(&["wait", "--for=delete", crd, "--timeout=180s"])
            .is_err()
        {
            let left = self
                .kubectl_result(&["get", "tradingbots", "-A", "--no-headers"])
                .unwrap_or_default();
            panic!(
                "the TradingBot CRD is being deleted and TradingBots this test run does not own still hold it; \
                 not touching them:\n{left}"
            );
        }
    }

    /// Test namespaces (label `tradingbot-test=true`) that are being deleted.
    fn abandoned_test_namespaces(&self) -> Vec<String> {
        self.kubectl_result(&[
            "get",
            "namespaces",
            "-l",
            "tradingbot-test=true",
            "-o",
            "jsonpath={range .items[?(@.status.phase==\"Terminating\")]}{.metadata.name}{\"\\n\"}{end}",
        ])
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
    }

    /// A fresh namespace for one test, deleted when the returned value is dropped.
    pub async fn namespace(&self, prefix: &str) -> TestNamespace {
        let client = self.client().await;
        let suffix: u32 = rand::random();
        let name = format!(
            "t-{}-{:06x}",
            prefix.chars().take(30).collect::<String>(),
            suffix & 0xff_ffff
        );
        let api: Api<Namespace> = Api::all(client);
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([("tradingbot-test".to_string(), "true".to_string())].into()),
                ..Default::default()
            },
            ..Default::default()
        };
        {
            // Shared with other tests, exclusive for `make demo-down`'s CRD removal (TB_CRD_LOCK
            // in tests/cluster/lib.sh): this namespace is seen by it or created after it began.
            let _crd_lock = crd_lock_shared();
            api.create(&PostParams::default(), &namespace)
                .await
                .expect("namespace created");
        }
        // The namespace's default ServiceAccount is made asynchronously; pods need it.
        let sa = "serviceaccount/default";
        eventually(Duration::from_secs(60), "default ServiceAccount", || {
            let ok = self.kubectl_result(&["-n", &name, "get", sa]).is_ok();
            async move { ok.then_some(()) }
        })
        .await;
        TestNamespace {
            name,
            cluster: self.clone(),
        }
    }

    /// The container images, built from the workspace binaries as they are now and loaded into
    /// this cluster: `tests/images/build-images.sh --no-cargo` rebuilds an image whose binary
    /// changed (content hash) and loads what the cluster does not have yet. Once per process.
    pub fn require_images(&self) {
        static IMAGES: OnceLock<Result<(), String>> = OnceLock::new();
        let outcome = IMAGES.get_or_init(|| {
            let script = root().join("tests/images/build-images.sh");
            let output = Command::new(&script)
                .arg("--no-cargo")
                .env("KUBECONFIG", &self.kubeconfig)
                .output()
                .map_err(|e| format!("running {}: {e}", script.display()))?;
            if output.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "{} --no-cargo failed (build the binaries first: `make images`):\n{}{}",
                    script.display(),
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                ))
            }
        });
        if let Err(e) = outcome {
            panic!("{e}");
        }
    }

    /// The local cluster's settings (panics when this is not the local cluster).
    pub fn settings(&self) -> ClusterSettings {
        local_settings().unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// The name of the cluster's only node, from the API.
    pub fn node_name(&self) -> String {
        let names = self.kubectl(&["get", "nodes", "-o", "jsonpath={.items[*].metadata.name}"]);
        let names: Vec<&str> = names.split_whitespace().collect();
        assert!(names.len() == 1, "expected one node, found {names:?}");
        names[0].to_string()
    }
}

/// A namespace owned by one test.
pub struct TestNamespace {
    pub name: String,
    cluster: Cluster,
}

impl TestNamespace {
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// kubectl in this namespace.
    pub fn kubectl(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        self.cluster.kubectl(&all)
    }

    pub fn kubectl_result(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        self.cluster.kubectl_result(&all)
    }

    /// `kubectl apply -f -` of a YAML document in this namespace.
    pub fn apply(&self, yaml: &str) -> anyhow::Result<String> {
        self.cluster
            .kubectl_stdin(&["-n", &self.name, "apply", "-f", "-"], yaml)
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if std::env::var_os("KEEP_TEST_NAMESPACES").is_some() {
            eprintln!("keeping namespace {}", self.name);
            return;
        }
        // TradingBots and TradingAccounts carry a finalizer their operator removes: delete them
        // while the operator (usually in this namespace) still runs, and strip what is left so
        // the namespace can go (a namespace left Terminating keeps the CRD in use for good).
        let ns = self.name.as_str();
        for kind in ["tradingbots", "tradingaccounts"] {
            if self
                .cluster
                .kubectl_result(&["-n", ns, "delete", kind, "--all", "--timeout=60s"])
                .is_ok()
            {
                continue;
            }
            let names = self
                .cluster
                .kubectl_result(&["-n", ns, "get", kind, "-o", "name"])
                .unwrap_or_default();
            for name in names.split_whitespace() {
                let patch = r#"{"metadata":{"finalizers":null}}"#;
                let _ = self
                    .cluster
                    .kubectl_result(&["-n", ns, "patch", name, "--type", "merge", "-p", patch]);
            }
        }
        // Do not wait: deletion of pods takes their grace period.
        let _ = self
            .cluster
            .kubectl_result(&["delete", "namespace", ns, "--wait=false"]);
    }
}

/// Poll `check` every 200 ms until it yields `Some`, or panic after `timeout` naming `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A program running on the host for the duration of a test; killed (by pid) when dropped.
pub struct HostProcess {
    child: std::process::Child,
    pub name: String,
}

impl HostProcess {
    /// Start `program` with `args`; its stdout/stderr go to `target/test-logs/<name>.log`.
    pub fn start(name: &str, program: &Path, args: &[&str], envs: &[(&str, &str)]) -> anyhow::Result<Self> {
        let logs = root().join("target/test-logs");
        std::fs::create_dir_all(&logs)?;
        let log = std::fs::File::create(logs.join(format!("{name}.log")))?;
        let child = Command::new(program)
            .args(args)
            .envs(envs.iter().copied())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        Ok(Self {
            child,
            name: name.to_string(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send a signal (e.g. `libc::SIGTERM`).
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) with a pid we spawned.
        unsafe {
            libc::kill(self.child.id() as i32, signal);
        }
    }

    /// Wait for exit up to `timeout`; `None` if still running.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
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

    pub fn log(&self) -> String {
        std::fs::read_to_string(root().join(format!("target/test-logs/{}.log", self.name))).unwrap_or_default()
    }
}

impl Drop for HostProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The python of the project's venv (with helm-python-sdk), created on first use.
pub fn python() -> PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let script = root().join("tests/cluster/python-env.sh");
            let output = Command::new(&script)
                .output()
                .expect("tests/cluster/python-env.sh runs");
            assert!(
                output.status.success(),
                "python-env.sh failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            PathBuf::from(
                String::from_utf8_lossy(&output.stdout)
                    .trim()
                    .lines()
                    .last()
                    .unwrap_or_default(),
            )
        })
        .clone()
}

/// Debian's Prometheus binary (tests/cluster/prometheus.sh fetches and caches it on first use);
/// panics with the script's output when it cannot be provided.
pub fn prometheus() -> PathBuf {
    static PROMETHEUS: OnceLock<PathBuf> = OnceLock::new();
    PROMETHEUS
        .get_or_init(|| {
            let script = root().join("tests/cluster/prometheus.sh");
            let output = Command::new(&script)
                .output()
                .expect("tests/cluster/prometheus.sh runs");
            assert!(
                output.status.success(),
                "prometheus.sh failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            let path = PathBuf::from(
                String::from_utf8_lossy(&output.stdout)
                    .trim()
                    .lines()
                    .last()
                    .unwrap_or_default(),
            );
            assert!(path.is_file(), "prometheus.sh printed {path:?}, which is not a file");
            path
        })
        .clone()
}

/// Render the Helm chart (real Helm via helm-python-sdk) into one YAML stream.
pub fn render_chart(release: &str, namespace: &str, values: &serde_json::Value) -> String {
    let output = Command::new(python())
        .arg(root().join("tests/chart/render.py"))
        .args([
            "--name",
            release,
            "--namespace",
            namespace,
            "--values-json",
            &values.to_string(),
        ])
        .output()
        .expect("render.py runs");
    assert!(
        output.status.success(),
        "chart render failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// An operator deployed from the chart into a test namespace, watching only that namespace.
pub struct OperatorDeployment {
    pub release: String,
    pub namespace: String,
}

impl TestNamespace {
    /// Deploy the operator with the chart (CRDs not templated: the test installs them), watching
    /// this namespace; `values` are merged over the defaults. Waits until it is ready.
    pub fn deploy_operator(&self, values: serde_json::Value) -> OperatorDeployment {
        let mut merged = serde_json::json!({
            "watchNamespaces": [self.name],
            "crds": {"install": false},
            "image": {"repository": "tradingbot-operator", "tag": "dev", "pullPolicy": "Never"},
            "botImage": "perps-bot:dev",
            "botImagePullPolicy": "Never",
            "logFormat": "json",
        });
        merge_json(&mut merged, values);
        let manifests = render_chart("tbo", &self.name, &merged);
        self.apply(&manifests).expect("operator manifests apply");
        let deployment = OperatorDeployment {
            release: "tbo".into(),
            namespace: self.name.clone(),
        };
        // One Deployment, or one per shard (the chart's naming).
        let shards = merged["shards"].as_u64().unwrap_or(1);
        let deployments: Vec<String> = match shards {
            0 | 1 => vec!["deployment/tbo-tradingbot-operator".into()],
            n => (0..n)
                .map(|i| format!("deployment/tbo-tradingbot-operator-shard-{i}"))
                .collect(),
        };
        for deployment_ref in &deployments {
            self.wait_rolled_out(deployment_ref);
        }
        deployment
    }

    /// Wait until `deployment_ref` is rolled out; panics with its pods and log otherwise.
    fn wait_rolled_out(&self, deployment_ref: &str) {
        if let Err(error) = self.kubectl_result(&["rollout", "status", deployment_ref, "--timeout=180s"]) {
            // What a person would look at next, so a failure here can be diagnosed from the log.
            let describe = self
                .kubectl_result(&["describe", "pods", "-l", "app.kubernetes.io/instance=tbo"])
                .unwrap_or_else(|e| format!("{e:#}"));
            let logs = self
                .kubectl_result(&["logs", deployment_ref, "--tail=200", "--all-containers"])
                .unwrap_or_else(|e| format!("{e:#}"));
            panic!("{error:#}\n--- operator pods ---\n{describe}\n--- operator log ---\n{logs}");
        }
    }

    /// Names of pods matching a label selector.
    pub fn pods(&self, selector: &str) -> Vec<String> {
        self.kubectl(&[
            "get",
            "pods",
            "-l",
            selector,
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ])
        .split_whitespace()
        .map(str::to_string)
        .collect()
    }

    /// Pods matching `selector` that still have a running container. A pod whose containers
    /// have all exited counts as stopped even while its object lingers: the kubelet here may
    /// take over a minute to remove a terminated pod's object, and what a test waits for after
    /// scaling an operator to zero is that no operator process runs any more.
    pub fn pods_still_running(&self, selector: &str) -> Vec<String> {
        let list: serde_json::Value =
            serde_json::from_str(&self.kubectl(&["get", "pods", "-l", selector, "-o", "json"]))
                .expect("kubectl get pods -o json prints JSON");
        let items = list["items"].as_array().cloned().unwrap_or_default();
        items
            .iter()
            .filter(|pod| {
                let statuses = pod["status"]["containerStatuses"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                // No status yet (just scheduled) or any container not terminated: still running.
                statuses.is_empty() || statuses.iter().any(|c| c["state"].get("terminated").is_none())
            })
            .map(|pod| pod["metadata"]["name"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// Scale a Deployment to zero and wait (up to 3 minutes) until none of its pods matching
    /// `selector` runs a container any more.
    pub async fn scale_to_zero(&self, deployment: &str, selector: &str) {
        self.kubectl(&["scale", deployment, "--replicas=0"]);
        eventually(
            Duration::from_secs(180),
            &format!("{deployment}: no running pod"),
            || {
                let left = self.pods_still_running(selector);
                async move { left.is_empty().then_some(()) }
            },
        )
        .await;
    }

    /// SIGKILL the first container of a pod through containerd (the pod itself stays; the
    /// kubelet restarts the container).
    pub fn kill_container(&self, pod: &str) {
        let id = self.kubectl(&[
            "get",
            "pod",
            pod,
            "-o",
            "jsonpath={.status.containerStatuses[0].containerID}",
        ]);
        let id = id.trim().trim_start_matches("containerd://");
        assert!(!id.is_empty(), "pod {pod} has no running container");
        let socket = self.cluster.settings().containerd_socket();
        let status = Command::new("ctr")
            .args([
                "--address",
                socket.to_str().unwrap_or_default(),
                "-n",
                "k8s.io",
                "tasks",
                "kill",
                "--signal",
                "SIGKILL",
                id,
            ])
            .status()
            .expect("ctr runs");
        assert!(status.success(), "ctr tasks kill failed for {pod}");
    }

    /// Events (events.k8s.io) about `name` in this namespace as (type, reason, note).
    pub fn events_for(&self, name: &str) -> Vec<(String, String, String)> {
        self.events_result(name).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// [`TestNamespace::events_for`], or why the Events could not be listed.
    fn events_result(&self, name: &str) -> anyhow::Result<Vec<(String, String, String)>> {
        let json = self.kubectl_result(&["get", "events.v1.events.k8s.io", "-o", "json"])?;
        let value: serde_json::Value = serde_json::from_str(&json).context("the Events as JSON")?;
        Ok(value["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter(|e| e["regarding"]["name"] == name)
                    .map(|e| {
                        (
                            e["type"].as_str().unwrap_or_default().to_string(),
                            e["reason"].as_str().unwrap_or_default().to_string(),
                            e["note"].as_str().unwrap_or_default().to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Wait (up to 30 s) until an Event about `name` matches `wanted`, naming `what` when none
    /// does; the Events about `name` seen then. See [`TestNamespace::wait_for_events`].
    pub async fn wait_for_event(
        &self,
        name: &str,
        what: &str,
        wanted: impl Fn(&(String, String, String)) -> bool,
    ) -> Vec<(String, String, String)> {
        self.wait_for_events(name, what, |events| events.iter().any(&wanted))
            .await
    }

    /// Wait (up to 30 s) until the Events about `name` (as [`TestNamespace::events_for`] lists
    /// them) satisfy `wanted`, naming `what` when they do not; those Events. Events are waited
    /// for, never read once: the operator publishes a reconcile's Events after its status write,
    /// so a test that has just seen the status can be ahead of them.
    pub async fn wait_for_events(
        &self,
        name: &str,
        what: &str,
        wanted: impl Fn(&[(String, String, String)]) -> bool,
    ) -> Vec<(String, String, String)> {
        let wanted = &wanted;
        eventually(Duration::from_secs(30), &format!("Events about {name}: {what}"), || {
            // A list that fails (the API server busy for a moment) is tried again.
            let events = self.events_result(name).ok();
            async move { events.filter(|events| wanted(events)) }
        })
        .await
    }

    /// A TradingBot as JSON.
    pub fn tradingbot(&self, name: &str) -> serde_json::Value {
        serde_json::from_str(&self.kubectl(&["get", "tb", name, "-o", "json"])).expect("TradingBot JSON")
    }
}

/// The sum of every sample of `name` in a Prometheus exposition (None if absent).
pub fn metric(text: &str, name: &str) -> Option<f64> {
    let values: Vec<f64> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// Merge `overlay` into `base` (objects recursively, anything else replaced).
pub fn merge_json(base: &mut serde_json::Value, overlay: serde_json::Value) {
    match (base, overlay) {
        (serde_json::Value::Object(base), serde_json::Value::Object(overlay)) => {
            for (key, value) in overlay {
                merge_json(base.entry(key).or_insert(serde_json::Value::Null), value);
            }
        }
        (base, overlay) => *base = overlay,
    }
}
