//! The simulator driven by a client we did not write: Coinbase's official Python SDK
//! (`coinbase-advanced-py`, installed by `tests/cluster/python-env.sh`) runs
//! `tests/sdk/conformance.py` over every endpoint perps-bot uses, the edit-order calls and the
//! WebSocket, with its own JWT signing (ES256 and Ed25519 keys) and response types. On CI the
//! SDK must be there (`CI=true`): a missing SDK fails the test instead of skipping it.

use exchange_sim::{KeyAlgorithm, SimConfig, Simulator, generate_key};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The venv python with the SDK, or why there is none.
fn python_with_sdk() -> Result<PathBuf, String> {
    let output = Command::new(root().join("tests/cluster/python-env.sh"))
        .output()
        .map_err(|e| format!("tests/cluster/python-env.sh: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "tests/cluster/python-env.sh failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let python = PathBuf::from(
        String::from_utf8_lossy(&output.stdout)
            .trim()
            .lines()
            .last()
            .unwrap_or_default(),
    );
    let probe = Command::new(&python)
        .args(["-c", "import coinbase.rest, coinbase.websocket"])
        .output()
        .map_err(|e| format!("{}: {e}", python.display()))?;
    if probe.status.success() {
        Ok(python)
    } else {
        Err(format!(
            "the SDK does not import: {}",
            String::from_utf8_lossy(&probe.stderr)
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coinbases_own_sdk_agrees_with_the_simulator() {
    let python = match python_with_sdk() {
        Ok(python) => python,
        Err(why) if std::env::var("CI").is_ok_and(|v| v == "true") => panic!("CI needs the Coinbase SDK: {why}"),
        Err(why) => {
            eprintln!("skipping outside CI: {why}");
            return;
        }
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (es, ed, intx) = (
        generate_key(KeyAlgorithm::Es256),
        generate_key(KeyAlgorithm::EdDsa),
        generate_key(KeyAlgorithm::Es256),
    );
    let sim = Simulator::start(SimConfig {
        tick: Duration::from_millis(200),
        history_minutes: 600,
        // The SDK does not pace itself; the limits are the client's business, not under test.
        private_rate_limit: 0,
        public_rate_limit: 0,
        keys: vec![es.key_spec(), ed.key_spec(), intx.key_spec().with_derivatives()],
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let script = root().join("tests/exchange-sim/tests/sdk/conformance.py");
    let env = [
        ("SIM_HOST", sim.host()),
        ("SIM_WS", sim.ws_url()),
        ("ES_KEY", es.name.clone()),
        ("ES_SECRET", es.private_key_pem.clone()),
        ("ED_KEY", ed.name.clone()),
        ("ED_SECRET", ed.private_key_pem.clone()),
        ("INTX_KEY", intx.name.clone()),
        ("INTX_SECRET", intx.private_key_pem.clone()),
    ];
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(std::env::var("CONFORMANCE_DEBUG").map(|v| ("CONFORMANCE_DEBUG", v)))
            .envs(env)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the SDK disagrees with the simulator:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("checks passed"), "{stdout}");
    let stats = sim.stats();
    assert!(
        stats.jwt_rejections.is_empty(),
        "every SDK token verified: {:?}",
        stats.jwt_rejections
    );
    let log = sim.order_log();
    assert!(
        log.iter().any(|e| e.source == "edit_order"),
        "the SDK's edit reached the engine"
    );
    assert!(
        log.iter().filter(|e| e.source == "create_order").count() >= 8,
        "{log:?}"
    );
    assert!(stats.ws_connections_total >= 1);
    sim.shutdown().await;
}
