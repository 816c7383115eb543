//! Every command the documentation gives users (README.md, docs/*.md, docs/argocd/*.md; see
//! `e2e::docs` for what counts as a command) is run here, as written, and must exit 0: against
//! a demo started with `make demo` in namespaces of this test's own, then `make demo-down`.
//!
//! How it proves it: documented commands run only through [`Docs::sh`] / [`Docs::sh_until`],
//! which refuse a command the docs do not show and record every successful run (the
//! `e2e::shell` ledger). At the end, every documented command must be in the ledger or in
//! [`NOT_RUN_HERE`] (with the reason it cannot run inside a test). So:
//!
//! * a new documented command fails this test until a phase below runs it: add
//!   `docs.sh("<the command, as in the docs>")` to the phase whose state it needs (or a new
//!   phase), with the variables it uses set (`docs.var`); a server (a command that keeps
//!   running) goes through `docs.spawn(...)`, is checked while it runs, then `confirm()`ed;
//! * a command changed in the docs fails the phase still running the old text;
//! * a command that cannot run here goes into [`NOT_RUN_HERE`] with its reason (kept short:
//!   an entry no doc shows any more fails the test too).
//!
//! What the commands do is checked where it matters (outputs below); the user flows
//! (flows.rs) check the behaviour behind them in depth.

use e2e::buy_for_the_bot;
use e2e::docs::{DocCommand, documented_commands, key};
use e2e::shell::{Shell, ledger};
use exchange_sim::{GeneratedKey, KeyAlgorithm, generate_key};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use test_harness::{Cluster, TestNamespace, eventually, root};

const MINUTE: Duration = Duration::from_secs(60);
const ROLLOUT_WAIT: Duration = Duration::from_secs(300);

/// Documented commands no test can run, and why. ci.sh runs the ones it names (checked).
const NOT_RUN_HERE: &[(&str, &str)] = &[
    (
        "make test",
        "it is the suite this test belongs to: CI runs it (tests/ci.sh)",
    ),
    ("make lint", "tests/ci.sh runs it as its first step"),
    (
        "make crds",
        "tests/ci.sh runs it and fails when it changes a committed file",
    ),
    (
        "make fmt",
        "it rewrites source files in place; `make lint` (tests/ci.sh) checks the same formatting",
    ),
    (
        "make cluster-down",
        "it would stop the cluster this suite (and anyone else's run) uses; tests/ci.sh stops the cluster it started with the same script",
    ),
    (
        "make bench",
        "it runs for about 15 minutes on 2 cores and rewrites docs/BENCHMARKS.md, which names the commit it measured",
    ),
    (
        "argocd app get <app>",
        "it needs an Argo CD server and an Application; the health script it reports is tested by tests/argocd/test.sh, run here",
    ),
];

/// The documented commands, and a shell that runs only those.
struct Docs {
    documented: BTreeMap<String, DocCommand>,
    shell: Shell,
}

impl Docs {
    fn new(cluster: &Cluster) -> Self {
        let documented = documented_commands(&root()).into_iter().map(|c| (c.key(), c)).collect();
        Self {
            documented,
            shell: Shell::new(cluster),
        }
    }

    fn var(&mut self, name: &str, value: &str) {
        self.shell.var(name, value);
    }

    fn documented(&self, command: &str) {
        assert!(
            self.documented.contains_key(&key(command)),
            "this test runs `{command}`, which no doc shows (any more?): run the documented command instead"
        );
    }

    /// Run a documented command as written; it must exit 0.
    fn sh(&self, command: &str) -> String {
        self.documented(command);
        self.shell.sh(command)
    }

    /// Run a documented command that must answer with exit `code`; returns its stderr.
    fn sh_fails(&self, command: &str, code: i32) -> String {
        self.documented(command);
        self.shell.sh_fails(command, code)
    }

    /// Run a documented command from `dir`.
    fn sh_in(&self, dir: &std::path::Path, command: &str) -> String {
        self.documented(command);
        self.shell.in_dir(dir).sh(command)
    }

    /// Start a documented command that keeps running (a server); see `Background::confirm`.
    fn spawn(&self, dir: &std::path::Path, command: &str, log: &std::path::Path) -> e2e::shell::Background {
        self.documented(command);
        self.shell.in_dir(dir).spawn(command, log)
    }

    /// Run a documented command until its output is what `accept` wants; every run must exit 0.
    async fn sh_until(&self, command: &str, what: &str, timeout: Duration, accept: impl Fn(&str) -> bool) -> String {
        self.documented(command);
        self.shell.sh_until(command, what, timeout, accept).await
    }

    /// Every documented command ran, or is in NOT_RUN_HERE.
    fn check_every_command_ran(&self) {
        let ran = ledger();
        let excused: Vec<String> = NOT_RUN_HERE.iter().map(|(c, _)| key(c)).collect();
        let missing: Vec<String> = self
            .documented
            .iter()
            .filter(|(k, _)| !ran.contains(*k) && !excused.contains(k))
            .map(|(_, c)| format!("{}:{}: {}", c.file, c.line, c.text))
            .collect();
        assert!(
            missing.is_empty(),
            "documented commands this test does not run (add them to a phase of tests/e2e/tests/docs_commands.rs, \
             or, if they cannot run in a test, to NOT_RUN_HERE with the reason):\n{}",
            missing.join("\n")
        );
    }
}

/// NOT_RUN_HERE stays small and true: each entry is documented, has a reason, and what it says
/// tests/ci.sh runs is a line of tests/ci.sh.
#[test]
fn commands_not_run_here_are_documented_and_accounted_for() {
    let documented: Vec<String> = documented_commands(&root()).iter().map(DocCommand::key).collect();
    let ci = std::fs::read_to_string(root().join("tests/ci.sh")).unwrap();
    for (command, reason) in NOT_RUN_HERE {
        assert!(
            documented.contains(&key(command)),
            "NOT_RUN_HERE names `{command}`, which no doc shows: remove it"
        );
        assert!(reason.len() > 20, "`{command}` needs a reason");
        if reason.starts_with("tests/ci.sh runs it") {
            assert!(
                ci.lines().any(|l| l.trim() == *command),
                "the reason for `{command}` says tests/ci.sh runs it, but tests/ci.sh has no such line"
            );
        }
    }
    assert!(
        NOT_RUN_HERE.len() <= 8,
        "NOT_RUN_HERE is for the few commands that cannot run in a test"
    );
}

/// The parser finds what the docs show (a guard against it silently finding nothing).
#[test]
fn the_docs_show_commands_of_every_kind() {
    let commands = documented_commands(&root());
    assert!(commands.len() > 100, "{} commands", commands.len());
    assert!(commands.iter().any(|c| c.text.contains('\n')), "a multi-line command");
    for file in [
        "README.md",
        "docs/RUNBOOK.md",
        "docs/MONITORING_PLAYBOOK.md",
        "docs/argocd/README.md",
    ] {
        assert!(commands.iter().any(|c| c.file == file), "commands in {file}");
    }
}

/// The demo this test started, removed by `make demo-down` even when the test fails midway.
struct DemoGuard {
    env: Vec<(String, String)>,
    done: bool,
}

impl Drop for DemoGuard {
    fn drop(&mut self) {
        if !self.done {
            let _ = Command::new(root().join("tests/demo/demo-down.sh"))
                .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .env("KEEP_CLUSTER", "1")
                .status();
        }
    }
}

#[tokio::test]
async fn every_documented_command_runs() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cluster = test_harness::cluster();
    let mut docs = Docs::new(&cluster);
    // Dropped last to first: the demo (demo-down) before its namespaces.
    let op_ns = cluster.namespace("docs-system").await;
    let demo_ns = cluster.namespace("docs-demo").await;
    let argocd_ns = cluster.namespace("docs-argocd").await;
    let mut demo = DemoGuard {
        env: vec![
            ("DEMO_NS".into(), demo_ns.name.clone()),
            ("DEMO_OPERATOR_NS".into(), op_ns.name.clone()),
        ],
        done: false,
    };
    for (k, v) in demo.env.clone() {
        docs.var(&k, &v);
    }
    docs.var("NS", &demo_ns.name);
    docs.var("OPNS", &op_ns.name);
    docs.var("REASON", "runbook walkthrough");
    docs.var("REQUEST_ID", "runbook-walkthrough-1");
    docs.var("ARGOCD_NS", &argocd_ns.name);

    let sim = make_demo(&mut docs).await;
    demo_commands(&docs, &demo_ns).await;
    rollout_actions(&mut docs, &demo_ns).await;
    let scratch = Scratch::new("docs");
    make_targets(&mut docs, &scratch);
    new_bots_and_keys(&mut docs, &demo_ns, &sim, &scratch).await;
    daily_checklist(&mut docs, &demo_ns).await;
    recovery_flow(&docs, &demo_ns).await;
    guard_trips(&mut docs, &demo_ns, &sim).await;
    operator_commands(&docs, &demo_ns, &op_ns, &sim).await;
    gitops_and_finalizer(&mut docs, &demo_ns, &op_ns, &scratch).await;
    monitoring_commands(&mut docs, &demo_ns).await;
    account_playbook(&mut docs, &demo_ns, &sim).await;
    argocd_commands(&docs, &argocd_ns);
    bot_cli(&docs, &scratch).await;
    api_names(&docs);
    make_demo_down(&docs, &mut demo, argocd_ns, &[&demo_ns.name, &op_ns.name]).await;
    docs.check_every_command_ran();
}

/// A scratch folder removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(prefix: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The simulator the demo runs, reached from this host at its Service address.
struct DemoSim {
    address: String,
}

impl DemoSim {
    /// POST to its admin API (keys, balances, product flags, faults).
    async fn admin(&self, path: &str, body: Value) -> Value {
        let response = reqwest::Client::new()
            .post(format!("http://{}{path}", self.address))
            .json(&body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("admin {path}: {e}"));
        assert!(response.status().is_success(), "admin {path}: {}", response.status());
        response.json().await.unwrap_or(Value::Null)
    }

    /// Register a key holding `balances` and return it.
    async fn key(&self, balances: &[(&str, &str)], derivatives: bool) -> GeneratedKey {
        let key = generate_key(KeyAlgorithm::Es256);
        let mut spec = serde_json::to_value(key.key_spec()).unwrap();
        spec["balances"] = balances.iter().map(|(c, v)| (c.to_string(), json!(v))).collect();
        if derivatives {
            spec["derivatives"] = json!(true);
            spec["portfolio_type"] = json!("INTX");
        }
        self.admin("/admin/keys", spec).await;
        key
    }
}

/// `make demo` in this test's namespaces; also checks that the commands the demo prints are the
/// README's.
async fn make_demo(docs: &mut Docs) -> DemoSim {
    let mut shell = docs.shell.clone();
    shell.var("DEMO_WATCH_SECONDS", "0");
    docs.documented("make demo");
    let transcript = shell.sh("make demo");
    for step in ["[1/7]", "[4/7]", "[6/7]", "[7/7] Try next", "make demo-down"] {
        assert!(transcript.contains(step), "the demo prints {step}:\n{transcript}");
    }
    let address = transcript
        .lines()
        .find_map(|l| l.strip_prefix("simulator: http://"))
        .and_then(|l| l.split_whitespace().next())
        .expect("the demo prints the simulator's address")
        .to_string();
    docs.var("SIM", &address);
    let printed: Vec<String> = transcript
        .split("[7/7] Try next")
        .nth(1)
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("kubectl ") || l.starts_with("curl "))
        .map(key)
        .collect();
    let mut readme: Vec<String> = documented_commands(&root())
        .iter()
        .filter(|c| c.file == "README.md" && (c.text.contains("$DEMO_NS") || c.text.contains("$SIM")))
        .map(DocCommand::key)
        .collect();
    readme.sort();
    let mut sorted = printed.clone();
    sorted.sort();
    assert_eq!(sorted, readme, "the demo prints the README's commands");
    DemoSim { address }
}

/// The README's demo commands, in the order the demo suggests them.
async fn demo_commands(docs: &Docs, demo_ns: &TestNamespace) {
    eventually(Duration::from_secs(240), "both demo bots Running", || {
        let phases = demo_ns
            .kubectl_result(&["get", "tb", "-o", "jsonpath={.items[*].status.phase}"])
            .unwrap_or_default();
        async move { (phases.matches("Running").count() == 2).then_some(()) }
    })
    .await;
    plugin_on_the_demo(docs).await;
    docs.sh(r#"kubectl -n $DEMO_NS patch tb dev-bot --type merge -p '{"spec":{"reduceOnly":true}}'"#);
    docs.sh_until(
        "kubectl -n $DEMO_NS get tb -o wide",
        "dev-bot ReduceOnly",
        MINUTE,
        |t| t.lines().any(|l| l.starts_with("dev-bot") && l.contains("ReduceOnly")),
    )
    .await;
    let shock = docs.sh(r#"curl -s -X POST http://$SIM/admin/faults -H 'content-type: application/json' -d '{"price_shock":{"product_id":"BTC-USD","percent":-10}}'"#);
    assert!(shock.contains("frozen_products"), "{shock}");
    docs.sh(r#"kubectl -n $DEMO_NS patch tb btc-canary --type merge -p '{"spec":{"image":"perps-bot:v2"}}'"#);
    let phase = r#"kubectl -n $DEMO_NS get tb btc-canary -o jsonpath='{.status.rollout.phase}{"\n"}'"#;
    let log = std::env::temp_dir().join(format!("docs-get-w-{}.log", std::process::id()));
    let mut watch = docs.spawn(&root(), "kubectl tradingbot get btc-canary -n $DEMO_NS -w", &log);
    docs.sh_until(phase, "the canary awaiting promotion", ROLLOUT_WAIT, |p| {
        p.trim() == "AwaitingPromotion"
    })
    .await;
    eventually(MINUTE, "the live table showing the canary", || {
        let shown = watch.log().contains("AwaitingPromotion");
        async move { shown.then_some(()) }
    })
    .await;
    watch.confirm();
    drop(watch);
    let _ = std::fs::remove_file(log);
    let promoted = docs.sh(r#"kubectl tradingbot promote btc-canary -n $DEMO_NS --reason "canary looks good""#);
    assert!(promoted.contains("promote accepted"), "{promoted}");
    docs.sh_until(phase, "the promotion", ROLLOUT_WAIT, |p| p.trim() == "Promoted")
        .await;
}

/// The demo's plugin commands, on its dev bot: the fleet, a brake set and released, the bot in
/// full, the audit trail.
async fn plugin_on_the_demo(docs: &Docs) {
    let fleet = docs.sh("kubectl tradingbot get -n $DEMO_NS");
    assert!(fleet.contains("dev-bot") && fleet.contains("btc-canary"), "{fleet}");
    let halted = docs.sh(r#"kubectl tradingbot halt dev-bot -n $DEMO_NS --reason "trying the brake""#);
    assert!(halted.contains("emergency brake Halted set by"), "{halted}");
    let status = docs.sh("kubectl tradingbot status dev-bot -n $DEMO_NS");
    assert!(
        status.contains("Brake:       Halted") && status.contains("trying the brake"),
        "{status}"
    );
    let resumed = docs.sh(r#"kubectl tradingbot resume dev-bot -n $DEMO_NS --reason "done trying""#);
    assert!(resumed.contains("mode Normal"), "{resumed}");
    let history = docs.sh("kubectl tradingbot history dev-bot -n $DEMO_NS");
    assert!(
        history.contains("BrakeSet") && history.contains("BrakeReleased"),
        "{history}"
    );
}

/// The runbook's rollout actions, on the demo's canary bot (promoted to v2 by the demo): undo,
/// retry, pause and unpause, abort, retry, promote at once, undo to a revision, retry, promote,
/// and the history of all of it.
async fn rollout_actions(docs: &mut Docs, demo_ns: &TestNamespace) {
    docs.var("BOT", "btc-canary");
    let undo = r#"kubectl tradingbot undo $BOT -n $NS --reason "$REASON""#;
    let retry = r#"kubectl tradingbot retry $BOT -n $NS --reason "$REASON""#;
    let log = std::env::temp_dir().join(format!("docs-bot-w-{}.log", std::process::id()));
    let mut watch = docs.spawn(&root(), "kubectl tradingbot get $BOT -n $NS -w", &log);
    assert!(docs.sh(undo).contains("prod goes back to perps-bot:dev"));
    wait_rollout(docs, "RolledBack").await;
    eventually(MINUTE, "the live table showing the rollback", || {
        let shown = watch.log().contains("RolledBack");
        async move { shown.then_some(()) }
    })
    .await;
    watch.confirm();
    drop(watch);
    let _ = std::fs::remove_file(log);
    docs.sh(retry);
    wait_rollout(docs, "CanaryRunning").await;
    docs.sh(r#"kubectl tradingbot pause $BOT -n $NS --reason "$REASON""#);
    docs.sh(r#"kubectl tradingbot unpause $BOT -n $NS --reason "$REASON""#);
    docs.sh(r#"kubectl tradingbot abort $BOT -n $NS --reason "$REASON""#);
    wait_rollout(docs, "Aborted").await;
    docs.sh(retry);
    wait_rollout(docs, "CanaryRunning").await;
    docs.sh(r#"kubectl tradingbot promote $BOT -n $NS --full --reason "$REASON""#);
    wait_rollout(docs, "Promoted").await;
    let bot = demo_ns.tradingbot("btc-canary");
    let revision = bot["status"]["rolloutHistory"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["version"] == "perps-bot:dev" && r["outcome"] == "Promoted")
        .map(|r| r["revision"].to_string())
        .expect("the undo's revision");
    docs.var("REVISION", &revision);
    docs.sh(r#"kubectl tradingbot undo $BOT -n $NS --to-revision $REVISION --reason "$REASON""#);
    wait_rollout(docs, "RolledBack").await;
    docs.sh(retry);
    wait_rollout(docs, "AwaitingPromotion").await;
    docs.sh(r#"kubectl tradingbot promote $BOT -n $NS --reason "$REASON""#);
    wait_rollout(docs, "Promoted").await;
    let history = docs.sh("kubectl tradingbot history $BOT -n $NS");
    for part in ["Aborted", "RolledBack", "undo to revision", "runbook walkthrough"] {
        assert!(history.contains(part), "history lacks {part}:\n{history}");
    }
}

/// Wait, with the runbook's command, until the rollout of `$BOT` is in `phase`.
async fn wait_rollout(docs: &Docs, phase: &str) {
    let command =
        r#"kubectl -n $NS get tb $BOT -o jsonpath='{.status.rollout.phase}{"\t"}{.status.rollout.message}{"\n"}'"#;
    docs.sh_until(command, phase, ROLLOUT_WAIT, |p| p.starts_with(phase))
        .await;
}

/// The README's make targets that can run inside a test (the rest: NOT_RUN_HERE).
fn make_targets(docs: &mut Docs, scratch: &Scratch) {
    docs.sh("make cluster-up");
    docs.sh("make images");
    // The plugin's install target, into the test's folder (a debug build: the suite built it).
    let bin = scratch.0.join("bin");
    docs.var("PLUGIN_DIR", bin.to_str().unwrap());
    docs.var("PLUGIN_PROFILE", "dev");
    docs.sh("make plugin");
    let help = Command::new(bin.join("kubectl-tradingbot"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&help.stdout).contains("Exit codes:"),
        "the installed plugin runs"
    );
}

/// Keys in the simulator, a key Secret made the documented way, a prod bot, and the two Jobs.
async fn new_bots_and_keys(docs: &mut Docs, demo_ns: &TestNamespace, sim: &DemoSim, scratch: &Scratch) {
    let guarded = sim.key(&[("USD", "10000"), ("BTC", "1")], false).await;
    let literal = format!("--from-literal=cdp_api_key.json={}", guarded.cdp_key_json());
    demo_ns.kubectl(&["create", "secret", "generic", "coinbase-guarded", &literal]);
    // The Jobs find the simulator through this optional ConfigMap (docs/examples/jobs/).
    let api = format!(
        "--from-literal=COINBASE_API_BASE=http://{}/api/v3/brokerage",
        sim.address
    );
    demo_ns.kubectl(&["create", "configmap", "exchange-endpoints", &api]);
    demo_ns.apply(&guarded_bot().to_string()).unwrap();

    let prod = sim.key(&[("USD", "2500")], true).await;
    let key_file = scratch.0.join("cdp_api_key.json");
    std::fs::write(&key_file, prod.cdp_key_json()).unwrap();
    docs.var("KEY_FILE", key_file.to_str().unwrap());
    docs.var("BOT", "prod-perps");
    docs.sh("kubectl -n $NS create secret generic coinbase-prod --from-file=cdp_api_key.json=$KEY_FILE");
    docs.sh("kubectl -n $NS apply -f docs/examples/prod.yaml");
    wait_phase(demo_ns, "prod-perps", "Running").await;
    assert!(docs.sh("kubectl -n $NS get tb $BOT -o wide").contains("prod-perps"));

    docs.sh("kubectl -n $NS apply -f docs/examples/jobs/account-snapshot.yaml");
    docs.sh("kubectl -n $NS wait --for=condition=complete job/account-snapshot --timeout=180s");
    let snapshot = docs.sh("kubectl -n $NS logs job/account-snapshot");
    assert!(
        snapshot.contains("can_trade") && snapshot.contains("2500"),
        "{snapshot}"
    );
    docs.sh("kubectl -n $NS delete job account-snapshot");
    docs.sh("kubectl -n $NS apply -f docs/examples/jobs/dev-fast.yaml");
    docs.sh("kubectl -n $NS wait --for=condition=complete job/dev-fast --timeout=180s");
    assert!(
        docs.sh("kubectl -n $NS logs job/dev-fast")
            .contains("perps-bot stopped")
    );
}

/// A live bot on the simulator (its key holds 1 BTC, but a bot only counts and sells what it
/// bought itself: see `buy_for_the_bot`), with loss levels a -15% shock on 0.009 BTC crosses
/// (the simulator's BTC is near 95,000).
fn guarded_bot() -> Value {
    json!({
        "apiVersion": "trading.gpttrader.io/v1alpha1", "kind": "TradingBot",
        "metadata": {"name": "guarded"},
        "spec": {
            "profile": "demo", "symbols": ["BTC-USD"], "dryRun": false,
            "exchange": {"credentialsSecret": "coinbase-guarded"},
            "guards": {"dailyLoss": {"reduceOnlyAt": "30", "haltAt": "60"}, "resume": "Manual"},
            "rollout": {"strategy": "Direct"},
            "metrics": {"scrapeIntervalSeconds": 1},
            "env": [{"name": "PERPS_BOT_INTERVAL", "value": "1"}],
        },
    })
}

const METRICS: &str = r#"kubectl get --raw /api/v1/namespaces/$NS/services/$BOT-metrics:metrics/proxy/metrics | grep -E '^perps_bot_(trading_mode|cycles_total|cycle_errors_total|daily_loss|market_data_staleness_seconds)'"#;
const MODE: &str = r#"kubectl -n $NS get tb $BOT -o jsonpath='{.status.mode}{"\t"}{.status.modeReason}{"\n"}'"#;
const TRIPS: &str = r#"kubectl -n $NS get tb $BOT -o jsonpath='{range .status.trips[*]}{.id}{"\t"}{.guard}{"\t"}{.level}{"\t"}{.value}{" >= "}{.threshold}{"\n"}{end}'"#;
const LAST_ACK: &str =
    r#"kubectl -n $NS get tb $BOT -o jsonpath='{.status.lastAck.result}{": "}{.status.lastAck.message}{"\n"}'"#;
const RELEASE: &str = r#"kubectl -n $NS patch tb $BOT --type merge -p '{"spec":{"reduceOnly":false,"halted":false}}'"#;
const ACK: &str = "kubectl -n $NS annotate tb $BOT --overwrite trading.gpttrader.io/ack-trip=$TRIP_ID";

/// The value of `name` in the metrics command's output.
fn value(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .reduce(f64::max)
}

async fn wait_phase(ns: &TestNamespace, bot: &str, phase: &str) {
    eventually(Duration::from_secs(240), &format!("{bot} {phase}"), || {
        let got = ns
            .kubectl_result(&["get", "tb", bot, "-o", "jsonpath={.status.phase}"])
            .unwrap_or_default();
        async move { (got.trim() == phase).then_some(()) }
    })
    .await;
}

/// Wait until the bot's metrics answer through the API server's service proxy.
async fn wait_metrics_served(ns: &TestNamespace, bot: &str) {
    let path = format!(
        "/api/v1/namespaces/{}/services/{bot}-metrics:metrics/proxy/metrics",
        ns.name
    );
    eventually(MINUTE, &format!("{bot}'s metrics through the API server"), || {
        let ok = ns.cluster().kubectl_result(&["get", "--raw", &path]).is_ok();
        async move { ok.then_some(()) }
    })
    .await;
}

/// The runbook's daily checklist, on the guarded bot.
async fn daily_checklist(docs: &mut Docs, demo_ns: &TestNamespace) {
    docs.var("BOT", "guarded");
    wait_phase(demo_ns, "guarded", "Running").await;
    wait_metrics_served(demo_ns, "guarded").await;
    assert!(docs.sh("kubectl get tb -A -o wide").contains("guarded"));
    assert!(docs.sh("kubectl tradingbot get -A").contains("guarded"));
    let status = docs.sh("kubectl tradingbot status $BOT -n $NS");
    assert!(status.contains("Metrics of prod (pod guarded"), "{status}");
    assert!(docs.sh("kubectl -n $NS describe tb $BOT").contains("guarded"));
    assert!(docs.sh(MODE).starts_with("Normal"));
    docs.sh("kubectl -n $NS get events --field-selector involvedObject.name=$BOT");
    docs.sh_until(METRICS, "three cycles", MINUTE, |o| {
        value(o, "perps_bot_cycles_total").is_some_and(|c| c >= 3.0)
    })
    .await;
    let ready = docs.sh("kubectl get --raw /api/v1/namespaces/$NS/services/$BOT-metrics:metrics/proxy/readyz");
    assert_eq!(ready.trim(), "ready");
}

/// The runbook's recovery flow: flatten by hand, restrict, confirm, investigate, release.
async fn recovery_flow(docs: &Docs, demo_ns: &TestNamespace) {
    // A bot only ever sells what it bought: give it a position of its own to reduce.
    buy_for_the_bot(demo_ns, "guarded", 2).await;
    let preview = docs.sh("kubectl -n $NS exec $BOT -- /usr/local/bin/perps-bot orders preview --symbol BTC-USD --side sell --quantity 0.001");
    assert!(preview.contains("order_total"), "{preview}");
    let placed = docs.sh("kubectl -n $NS exec $BOT -- /usr/local/bin/perps-bot orders place --symbol BTC-USD --side sell --quantity 0.001 --reduce-only");
    assert!(placed.contains("order_id"), "{placed}");
    brakes_and_flatten(docs).await;
    docs.sh(r#"kubectl -n $NS patch tb $BOT --type merge -p '{"spec":{"reduceOnly":true}}'"#);
    docs.sh(r#"kubectl -n $NS patch tb $BOT --type merge -p '{"spec":{"halted":true}}'"#);
    docs.sh_until(METRICS, "the bot Halted", MINUTE, |o| {
        value(o, "perps_bot_trading_mode") == Some(2.0)
    })
    .await;
    assert!(docs.sh("kubectl -n $NS logs $BOT --tail=50").contains("perps-bot"));
    docs.sh("kubectl -n $NS get pods -l trading.gpttrader.io/bot=$BOT -o wide");
    // Release: the brake (set again by hand first, to release it with the plugin), then Git's switches.
    docs.sh("kubectl -n $NS annotate tb $BOT trading.gpttrader.io/brake-");
    docs.sh(BRAKE_BY_HAND);
    let resumed = docs.sh(r#"kubectl tradingbot resume $BOT -n $NS --reason "$REASON""#);
    assert!(resumed.contains("still Halted: spec.halted (Git owns it"), "{resumed}");
    docs.sh(RELEASE);
    docs.sh_until(MODE, "Normal again", MINUTE, |o| o.starts_with("Normal"))
        .await;
    who_did_what(docs);
}

const BRAKE_BY_HAND: &str = "kubectl -n $NS annotate tb $BOT --overwrite trading.gpttrader.io/brake=Halted";

/// The recovery flow with the plugin: brakes, flatten (the bot's answer), and the annotations.
async fn brakes_and_flatten(docs: &Docs) {
    let reduced = docs.sh(r#"kubectl tradingbot reduce-only $BOT -n $NS --reason "$REASON""#);
    assert!(reduced.contains("emergency brake ReduceOnly set by"), "{reduced}");
    let flat = docs.sh(r#"kubectl tradingbot flatten $BOT -n $NS --reason "$REASON""#);
    assert!(flat.contains(": done"), "{flat}");
    docs.sh("kubectl -n $NS annotate tb $BOT --overwrite trading.gpttrader.io/flatten=$REQUEST_ID");
    docs.sh("kubectl -n $NS exec $BOT -- /usr/local/bin/perps-bot flatten");
    docs.sh(r#"kubectl tradingbot halt $BOT -n $NS --reason "$REASON""#);
    docs.sh(BRAKE_BY_HAND);
    docs.sh_until(BRAKE, "the brake after a sync check", MINUTE, |o| {
        o.starts_with("Halted\tHalted")
    })
    .await;
}

const BRAKE: &str = r#"kubectl -n $NS get tb $BOT -o jsonpath='{.metadata.annotations.trading\.gpttrader\.io/brake}{"\t"}{.status.mode}{"\n"}'"#;

/// The runbook's "who halted this bot, and why?".
fn who_did_what(docs: &Docs) {
    let history = docs.sh("kubectl tradingbot history $BOT -n $NS");
    for part in ["BrakeSet", "BrakeReleased", "kubectl-annotate", "runbook walkthrough"] {
        assert!(history.contains(part), "history lacks {part}:\n{history}");
    }
    docs.sh(r#"kubectl -n $NS get tb $BOT -o jsonpath='{.status.brake.mode}{" by "}{.status.brake.by}{": "}{.status.brake.reason}{" (since "}{.status.brake.since}{")"}{"\n"}'"#);
    let trail = docs.sh(r#"kubectl -n $NS get tb $BOT -o jsonpath='{range .status.history[*]}{.time}{"\t"}{.kind}{"\t"}{.what}{"\t"}{.who}{"\t"}{.why}{"\n"}{end}'"#);
    assert!(
        trail
            .lines()
            .any(|l| l.contains("\tBrakeSet\t") && l.contains("runbook walkthrough")),
        "{trail}"
    );
    let log = docs.sh("kubectl -n $NS logs $BOT | grep mode_changed");
    assert!(log.contains("emergency brake"), "{log}");
}

/// A loss trip to Halted: list it, acknowledge (refused while the loss lasts), recover, retry
/// the acknowledgement, lift to ReduceOnly, release.
async fn guard_trips(docs: &mut Docs, demo_ns: &TestNamespace, sim: &DemoSim) {
    // A position of the bot's own (0.009 BTC with what is left of the first) for the shock to
    // cost more than the Halted level.
    buy_for_the_bot(demo_ns, "guarded", 8).await;
    sim.admin("/admin/products/BTC-USD", json!({"cancel_only": true})).await;
    sim.admin(
        "/admin/faults",
        json!({"price_shock": {"product_id": "BTC-USD", "percent": -15}}),
    )
    .await;
    docs.sh_until(MODE, "Halted by the loss guard", MINUTE, |o| o.starts_with("Halted"))
        .await;
    let trips = docs.sh(TRIPS);
    let halted = trips
        .lines()
        .find(|l| l.split('\t').nth(2) == Some("Halted"))
        .and_then(|l| l.split('\t').next())
        .unwrap_or_else(|| panic!("a Halted trip in:\n{trips}"))
        .to_string();
    docs.var("TRIP_ID", &halted);
    docs.sh("kubectl -n $NS get events --field-selector involvedObject.name=$BOT");
    docs.sh(ACK);
    docs.sh_until(LAST_ACK, "the refusal", MINUTE, |o| o.starts_with("Refused"))
        .await;
    // The plugin's answer while the loss lasts: refused, exit 4, the trip named.
    let refused = docs.sh_fails(r#"kubectl tradingbot ack $BOT $TRIP_ID -n $NS --reason "$REASON""#, 4);
    assert!(refused.contains("refused: ") && refused.contains(&halted), "{refused}");
    sim.admin(
        "/admin/faults",
        json!({"price_shock": {"product_id": "BTC-USD", "percent": 20}}),
    )
    .await;
    sim.admin("/admin/products/BTC-USD", json!({"cancel_only": false}))
        .await;
    eventually(MINUTE, "the loss gone", || {
        let loss = bot_metric(demo_ns, "guarded", "perps_bot_daily_loss");
        async move { (loss == Some(0.0)).then_some(()) }
    })
    .await;
    docs.sh("kubectl -n $NS annotate tb $BOT --overwrite trading.gpttrader.io/ack-trip=$TRIP_ID@2");
    e2e::accept_trip(demo_ns, "guarded", &halted, &format!("{halted}@2")).await;
    docs.sh(r#"kubectl -n $NS patch tb $BOT --type merge -p '{"spec":{"halted":false,"reduceOnly":true}}'"#);
    // The rest with the plugin: every latched trip, one after the other (exit 4 while one is
    // refused because the operator judged a scrape from before the recovery: run it again), or,
    // when the loss latched only the Halted trip, the plugin's answer that none is left.
    let ack = r#"kubectl tradingbot ack $BOT -n $NS --reason "$REASON""#;
    if docs.sh(TRIPS).trim().is_empty() {
        assert!(docs.sh_fails(ack, 4).contains("has no latched trip"));
    } else {
        docs.documented(ack);
        let deadline = std::time::Instant::now() + 3 * MINUTE;
        while let Err(failed) = docs.shell.run(ack) {
            assert_eq!(failed.status, "exit status: 4", "only a refusal is retried: {failed:?}");
            assert!(
                std::time::Instant::now() < deadline,
                "every trip acknowledged with the plugin: still failing: {failed:?}"
            );
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
    assert!(docs.sh(TRIPS).trim().is_empty(), "no trip left");
    docs.sh(RELEASE);
    docs.sh_until(MODE, "Normal", MINUTE, |o| o.starts_with("Normal")).await;
}

/// One metric of a bot, read through the API server (not a documented command).
fn bot_metric(ns: &TestNamespace, bot: &str, name: &str) -> Option<f64> {
    let path = format!(
        "/api/v1/namespaces/{}/services/{bot}-metrics:metrics/proxy/metrics",
        ns.name
    );
    let text = ns.cluster().kubectl_result(&["get", "--raw", &path]).ok()?;
    test_harness::metric(&text, name)
}

/// The operator's commands, after upgrading the demo's operator to two replicas (leader
/// election, so its Lease exists).
async fn operator_commands(docs: &Docs, demo_ns: &TestNamespace, op_ns: &TestNamespace, sim: &DemoSim) {
    let values = json!({
        "watchNamespaces": [demo_ns.name], "crds": {"install": false}, "replicaCount": 2,
        "exchange": {
            "defaultApiBaseUrl": format!("http://{}/api/v3/brokerage", sim.address),
            "defaultWsUrl": format!("ws://{}/ws", sim.address),
        },
    });
    // The manifests name their namespaces (the operator's, and Roles in the demo's).
    let manifests = test_harness::render_chart("tradingbot-operator", &op_ns.name, &values);
    op_ns
        .cluster()
        .kubectl_stdin(&["apply", "-f", "-"], &manifests)
        .unwrap();
    op_ns.kubectl(&["rollout", "status", "deployment/tradingbot-operator", "--timeout=180s"]);
    eventually(MINUTE, "the operator's leader Lease", || {
        let held = op_ns
            .kubectl_result(&["get", "lease", "tradingbot-operator-leader"])
            .is_ok();
        async move { held.then_some(()) }
    })
    .await;
    // The demo's operator (one replica, other values) is replaced: `rollout status` returns while
    // its pod is still terminating, and `logs -l` refuses a terminated container. Wait until only
    // the two new pods are left.
    docs.sh_until(
        "kubectl -n $OPNS get pods -l app.kubernetes.io/name=tradingbot-operator",
        "two running operator pods and no other",
        3 * MINUTE,
        |pods| pods.lines().skip(1).count() == 2 && pods.matches(" Running ").count() == 2,
    )
    .await;
    let log = docs.sh("kubectl -n $OPNS logs -l app.kubernetes.io/name=tradingbot-operator --prefix --tail=50");
    assert!(log.contains("tradingbot-operator-"), "{log}");
    let holder =
        docs.sh(r#"kubectl -n $OPNS get lease tradingbot-operator-leader -o jsonpath='{.spec.holderIdentity}{"\n"}'"#);
    assert!(holder.starts_with("tradingbot-operator-"), "{holder}");
    let bot_lease = docs.sh(r#"kubectl -n $NS get lease $BOT-trading -o jsonpath='{.spec.holderIdentity}{"\n"}'"#);
    assert!(bot_lease.starts_with("guarded"), "{bot_lease}");
}

/// Change management from a GitOps folder, then removing a TradingBot without the operator.
async fn gitops_and_finalizer(docs: &mut Docs, demo_ns: &TestNamespace, op_ns: &TestNamespace, scratch: &Scratch) {
    let dir = scratch.0.join("gitops");
    std::fs::create_dir_all(&dir).unwrap();
    let manifest = json!({
        "apiVersion": "trading.gpttrader.io/v1alpha1", "kind": "TradingBot",
        "metadata": {"name": "fleet-btc", "namespace": demo_ns.name},
        "spec": {
            "profile": "demo", "image": "perps-bot:dev", "symbols": ["BTC-USD"],
            "exchange": {"credentialsSecret": "coinbase-demo"},
            "rollout": {"strategy": "Canary", "promotion": "Manual"},
        },
    });
    std::fs::write(dir.join("fleet-btc.yaml"), manifest.to_string()).unwrap();
    docs.var("GITOPS_DIR", dir.to_str().unwrap());
    docs.var("BOT", "fleet-btc");
    docs.sh("kubectl apply -f $GITOPS_DIR");
    wait_phase(demo_ns, "fleet-btc", "Running").await;
    docs.sh(r#"kubectl -n $NS get tb $BOT -o jsonpath='{.status.rollout.phase}{"\t"}{.status.rollout.message}{"\n"}'"#);
    assert!(docs.sh("kubectl -n $NS get tb $BOT -o wide").contains("fleet-btc"));
    // An emergency brake through both kinds of sync (docs/argocd): still there, still obeyed.
    docs.sh(r#"kubectl tradingbot halt $BOT -n $NS --reason "$REASON""#);
    docs.sh("kubectl apply -f $GITOPS_DIR");
    docs.sh("kubectl apply --server-side --force-conflicts --field-manager=argocd-controller -f $GITOPS_DIR");
    assert!(
        docs.sh(BRAKE).starts_with("Halted\tHalted"),
        "the brake survived both syncs"
    );
    docs.sh(r#"kubectl tradingbot resume $BOT -n $NS --reason "$REASON""#);
    let audit =
        docs.sh("kubectl -n $OPNS logs -l app.kubernetes.io/name=tradingbot-operator --tail=-1 | grep 'audit: '");
    assert!(audit.contains("BrakeSet") && audit.contains("fleet-btc"), "{audit}");

    // Without the operator, deletion waits on the finalizer; removing it by hand lets it go.
    let operator = "deployment/tradingbot-operator";
    op_ns
        .scale_to_zero(operator, "app.kubernetes.io/name=tradingbot-operator")
        .await;
    demo_ns.kubectl(&["delete", "tb", "fleet-btc", "--wait=false"]);
    docs.sh(r#"kubectl -n $NS patch tb $BOT --type json -p '[{"op":"remove","path":"/metadata/finalizers"}]'"#);
    eventually(MINUTE, "fleet-btc gone", || {
        let gone = demo_ns.kubectl_result(&["get", "tb", "fleet-btc"]).is_err();
        async move { gone.then_some(()) }
    })
    .await;
    op_ns.kubectl(&["scale", operator, "--replicas=2"]);
    op_ns.kubectl(&["rollout", "status", operator, "--timeout=180s"]);
}

/// The monitoring playbook's first actions, on the guarded bot; its pod is deleted last (the
/// operator recreates it).
async fn monitoring_commands(docs: &mut Docs, demo_ns: &TestNamespace) {
    docs.var("BOT", "guarded");
    let run = |command: &str| docs.sh(command);
    assert!(run("kubectl -n $NS get tb $BOT -o wide").contains("guarded"));
    assert!(run("kubectl -n $NS describe pod $BOT").contains("perps-bot"));
    assert!(run("kubectl get svc -A -l app.kubernetes.io/managed-by=tradingbot-operator").contains("guarded-metrics"));
    run("kubectl -n $NS get networkpolicy");
    assert!(run("kubectl get events -A --field-selector involvedObject.kind=TradingBot").contains("guarded"));
    let uid = demo_ns.kubectl(&["get", "pod", "guarded", "-o", "jsonpath={.metadata.uid}"]);
    run("kubectl -n $NS delete pod $BOT");
    eventually(Duration::from_secs(180), "a new guarded pod", || {
        let now = demo_ns
            .kubectl_result(&["get", "pod", "guarded", "-o", "jsonpath={.metadata.uid}"])
            .unwrap_or_default();
        let uid = uid.clone();
        async move { (!now.is_empty() && now != uid).then_some(()) }
    })
    .await;
}

const ACCOUNT_TABLE: &str = "kubectl -n $NS get ta -o wide";
const ACCOUNT_BOTS: &str = r#"kubectl -n $NS get ta $ACCOUNT -o jsonpath='{range .status.bots[*]}{.namespace}/{.name}{"\t"}{.dailyLoss}{"\t"}{.grossExposure}{"\t"}{.mode}{"\n"}{end}'"#;
const ACCOUNT_HALT: &str = r#"kubectl -n $NS patch ta $ACCOUNT --type merge -p '{"spec":{"halted":true}}'"#;
const ACCOUNT_RESUME: &str = r#"kubectl -n $NS patch ta $ACCOUNT --type merge -p '{"spec":{"halted":false}}'"#;
const ACCOUNT_ACK: &str =
    "kubectl -n $NS annotate ta $ACCOUNT --overwrite trading.gpttrader.io/ack-trip=$ACCOUNT_TRIP_ID";
const ACCOUNT_LAST_ACK: &str =
    r#"kubectl -n $NS get ta $ACCOUNT -o jsonpath='{.status.lastAck.result}{": "}{.status.lastAck.message}{"\n"}'"#;

/// Both bots of the account example in `mode`.
async fn wait_account_bots(demo_ns: &TestNamespace, bots: &[&str], mode: &str) {
    for bot in bots {
        eventually(MINUTE, &format!("{bot} {mode}"), || {
            let got = demo_ns
                .kubectl_result(&["get", "tb", bot, "-o", "jsonpath={.status.mode}"])
                .unwrap_or_default();
            async move { (got.trim() == mode).then_some(()) }
        })
        .await;
    }
}

/// The runbook's account playbook on the account example (two bots on one key): the table and
/// each bot's contribution, the account's brake on and off, a limit trip and its acknowledgement.
async fn account_playbook(docs: &mut Docs, demo_ns: &TestNamespace, sim: &DemoSim) {
    let key = sim.key(&[("USD", "10000")], false).await;
    let literal = format!("--from-literal=cdp_api_key.json={}", key.cdp_key_json());
    demo_ns.kubectl(&["create", "secret", "generic", "coinbase-shared", &literal]);
    let example = root().join("docs/examples/accounts/shared-account.yaml");
    demo_ns.kubectl(&["apply", "-f", example.to_str().unwrap()]);
    let bots = ["shared-btc", "shared-eth"];
    for bot in bots {
        wait_phase(demo_ns, bot, "Running").await;
    }
    docs.var("ACCOUNT", "shared");
    docs.sh_until(ACCOUNT_TABLE, "the account counting both bots", MINUTE, |o| {
        o.lines()
            .any(|l| l.split_whitespace().take(3).collect::<Vec<_>>() == ["shared", "Normal", "2"])
    })
    .await;
    let fleet = docs.sh("kubectl tradingbot get -n $NS");
    let account_row = fleet
        .lines()
        .skip_while(|l| !l.starts_with("NAMESPACE") || !l.contains("ACCOUNT"))
        .find(|l| l.split_whitespace().nth(1) == Some("shared"));
    assert!(
        account_row.is_some_and(|row| row.split_whitespace().take(4).skip(2).eq(["Normal", "2"])),
        "the plugin lists the account with its two bots:\n{fleet}"
    );
    let rows = docs.sh(ACCOUNT_BOTS);
    assert!(rows.contains("/shared-btc") && rows.contains("/shared-eth"), "{rows}");
    docs.sh(ACCOUNT_HALT);
    wait_account_bots(demo_ns, &bots, "Halted").await;
    docs.sh(ACCOUNT_RESUME);
    wait_account_bots(demo_ns, &bots, "Normal").await;
    // A limit crossed: no more than one bot on the account from now on.
    let one_bot = r#"{"spec":{"limits":{"bots":{"reduceOnlyAt":2}}}}"#;
    demo_ns.kubectl(&["patch", "ta", "shared", "--type", "merge", "-p", one_bot]);
    wait_account_bots(demo_ns, &bots, "ReduceOnly").await;
    let trip = demo_ns.kubectl(&["get", "ta", "shared", "-o", "jsonpath={.status.trips[0].id}"]);
    docs.var("ACCOUNT_TRIP_ID", trip.trim());
    demo_ns.kubectl(&["delete", "tb", "shared-eth", "--wait=true"]);
    eventually(MINUTE, "the account counting one bot", || {
        let bots = demo_ns
            .kubectl_result(&["get", "ta", "shared", "-o", "jsonpath={.status.aggregate.bots}"])
            .unwrap_or_default();
        async move { (bots.trim() == "1").then_some(()) }
    })
    .await;
    docs.sh(ACCOUNT_ACK);
    docs.sh_until(ACCOUNT_LAST_ACK, "the acceptance", MINUTE, |o| {
        o.starts_with("Accepted")
    })
    .await;
    wait_account_bots(demo_ns, &["shared-btc"], "Normal").await;
    demo_ns.kubectl(&["delete", "tb", "shared-btc", "--wait=true"]);
    demo_ns.kubectl(&["delete", "ta", "shared", "--wait=true"]);
}

/// The Argo CD install commands, against a ConfigMap and StatefulSet of that name in a
/// namespace of this test's own; and the health check's own test.
fn argocd_commands(docs: &Docs, argocd_ns: &TestNamespace) {
    argocd_ns.kubectl(&[
        "create",
        "configmap",
        "argocd-cm",
        "--from-literal=url=https://argocd.example",
    ]);
    argocd_ns
        .apply(
            &json!({
                "apiVersion": "apps/v1", "kind": "StatefulSet",
                "metadata": {"name": "argocd-application-controller"},
                "spec": {
                    "replicas": 0, "serviceName": "argocd-application-controller",
                    "selector": {"matchLabels": {"app": "controller"}},
                    "template": {
                        "metadata": {"labels": {"app": "controller"}},
                        "spec": {"containers": [{"name": "c", "image": "perps-bot:dev", "imagePullPolicy": "Never"}]},
                    },
                },
            })
            .to_string(),
        )
        .unwrap();
    let patch = docs
        .documented
        .values()
        .find(|c| c.file == "docs/argocd/README.md" && c.text.contains("patch configmap argocd-cm"))
        .expect("the argocd-cm patch command")
        .text
        .clone();
    docs.sh(&patch);
    let cm: Value = serde_json::from_str(&argocd_ns.kubectl(&["get", "configmap", "argocd-cm", "-o", "json"])).unwrap();
    let script = std::fs::read_to_string(root().join("docs/argocd/tradingbot-health.lua")).unwrap();
    assert_eq!(
        cm["data"]["resource.customizations.health.trading.gpttrader.io_TradingBot"],
        script.as_str()
    );
    assert_eq!(cm["data"]["url"], "https://argocd.example", "merged, not replaced");
    docs.sh("kubectl -n $ARGOCD_NS rollout restart statefulset argocd-application-controller");
    let restarted = argocd_ns.kubectl(&[
        "get",
        "statefulset",
        "argocd-application-controller",
        "-o",
        "jsonpath={.spec.template.metadata.annotations}",
    ]);
    assert!(restarted.contains("restartedAt"), "{restarted}");
    docs.sh("tests/argocd/test.sh");
}

/// The bot on its own, in a scratch folder (it writes var/ and the replay there).
async fn bot_cli(docs: &Docs, scratch: &Scratch) {
    let dir = scratch.0.join("cli");
    std::fs::create_dir_all(&dir).unwrap();
    assert!(docs.sh_in(&dir, "perps-bot --help").contains("--dev-fast"));
    docs.sh_in(&dir, "perps-bot --profile dev --dev-fast");
    assert!(dir.join("var/data/perps_bot/dev/metrics.json").exists());
    assert!(dir.join("var/data/perps_bot/dev/health.json").exists());
    let snapshot = docs.sh_in(&dir, "perps-bot --profile dev --account-snapshot");
    assert!(snapshot.contains("\"broker\": \"paper\""), "{snapshot}");
    let preview = docs.sh_in(
        &dir,
        "perps-bot orders preview --profile dev --symbol BTC-USD --side buy --quantity 0.01",
    );
    assert!(preview.contains("order_total"), "{preview}");
    docs.sh_in(
        &dir,
        "perps-bot backtest --profile dev --candles replay.csv --generate 100000",
    );
    let replay = docs.sh_in(&dir, "perps-bot backtest --profile dev --candles replay.csv");
    assert!(replay.contains("100000 candles"), "{replay}");
    // The stand-alone exporter on the dev run's file, then flat on demand (a dry run: it shows).
    let log = dir.join("exporter.log");
    let mut exporter = docs.spawn(
        &dir,
        "perps-bot exporter --metrics-file var/data/perps_bot/dev/metrics.json",
        &log,
    );
    let page = eventually(MINUTE, "the exporter serving the file on :9102", || {
        let page = http_get("127.0.0.1:9102", "/metrics");
        async move { page.filter(|p| p.contains("perps_bot_metrics_file_age_seconds")) }
    })
    .await;
    assert!(page.contains("perps_bot_cycles_total"), "{page}");
    exporter.confirm();
    drop(exporter);
    docs.sh_in(&dir, "perps-bot flatten --profile dev");
}

/// A plain HTTP GET (the body, if the answer is 200).
fn http_get(address: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    (head.split_whitespace().nth(1) == Some("200")).then(|| body.to_string())
}

/// The API's names and category (CRD_REFERENCE.md).
fn api_names(docs: &Docs) {
    for command in [
        "kubectl get trading",
        "kubectl get tradingbots",
        "kubectl get tb",
        "kubectl get tb -o wide",
        "kubectl -n $NS apply -f docs/examples/dev.yaml",
    ] {
        docs.sh(command);
    }
}

/// TradingBots left in `namespaces`, as `namespace/name`.
fn bots_in(cluster: &Cluster, namespaces: &[&str]) -> Vec<String> {
    cluster
        .kubectl_result(&[
            "get",
            "tradingbots",
            "-A",
            "-o",
            "jsonpath={range .items[*]}{.metadata.namespace}/{.metadata.name}{\"\\n\"}{end}",
        ])
        .unwrap_or_default()
        .lines()
        .filter(|l| namespaces.iter().any(|ns| l.starts_with(&format!("{ns}/"))))
        .map(str::to_string)
        .collect()
}

/// `make demo-down` keeps the CRD while a TradingBot outside the demo exists (and leaves that
/// bot alone); run again once nothing of this test is left, it removes the CRD unless someone
/// else's TradingBots or test namespaces still use it.
async fn make_demo_down(docs: &Docs, demo: &mut DemoGuard, outside: TestNamespace, ours: &[&str]) {
    let cluster = outside.cluster().clone();
    outside
        .apply(
            &json!({
                "apiVersion": "trading.gpttrader.io/v1alpha1", "kind": "TradingBot",
                "metadata": {"name": "outside"}, "spec": {"profile": "dev", "symbols": ["BTC-USD"]},
            })
            .to_string(),
        )
        .unwrap();
    let mut down = docs.shell.clone();
    down.var("KEEP_CLUSTER", "1");
    docs.documented("make demo-down");
    let first = down.sh("make demo-down");
    assert!(first.contains("keeping the TradingBot CRD"), "{first}");
    assert!(first.contains(&format!("{}/outside", outside.name)), "{first}");
    assert!(
        outside.kubectl_result(&["get", "tb", "outside"]).is_ok(),
        "the outside bot is untouched"
    );
    assert!(
        cluster
            .kubectl_result(&["get", "crd", "tradingbots.trading.gpttrader.io"])
            .is_ok()
    );
    assert!(bots_in(&cluster, ours).is_empty(), "the demo's bots are gone");
    demo.done = true;

    let outside_name = outside.name.clone();
    drop(outside);
    let mut all_ours: Vec<&str> = ours.to_vec();
    all_ours.push(&outside_name);
    eventually(Duration::from_secs(120), "no TradingBot of this test left", || {
        let left = bots_in(&cluster, &all_ours);
        async move { left.is_empty().then_some(()) }
    })
    .await;
    let second = down.sh("make demo-down");
    if second.contains("keeping the TradingBot CRD") {
        for ns in &all_ours {
            assert!(
                !second.contains(&format!(" {ns}/")) && !second.contains(&format!("namespace {ns}\n")),
                "kept for this test's own objects:\n{second}"
            );
        }
    } else {
        assert!(second.contains("deleting the TradingBot CRD"), "{second}");
    }
    assert!(second.contains("demo-down: done"), "{second}");
}
