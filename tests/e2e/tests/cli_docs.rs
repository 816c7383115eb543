//! The bot's own commands from the README, run as written (no cluster needed).

use std::process::Command;

fn sh(dir: &std::path::Path, command: &str) -> String {
    let root = test_harness::root();
    let path = format!(
        "{}:{}",
        root.join("target/debug").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let output = Command::new("bash")
        .args(["-o", "pipefail", "-c", command])
        .current_dir(dir)
        .env("PATH", path)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "`{command}` failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn the_readme_bot_commands_work() {
    let dir = std::env::temp_dir().join(format!("cli-docs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    assert!(sh(&dir, "perps-bot --help").contains("--dev-fast"));
    sh(&dir, "perps-bot --profile dev --dev-fast");
    assert!(dir.join("var/data/perps_bot/dev/metrics.json").exists());
    assert!(dir.join("var/data/perps_bot/dev/health.json").exists());
    let snapshot = sh(&dir, "perps-bot --profile dev --account-snapshot");
    assert!(snapshot.contains("\"broker\": \"paper\""), "{snapshot}");
    let preview = sh(
        &dir,
        "perps-bot orders preview --profile dev --symbol BTC-USD --side buy --quantity 0.01",
    );
    assert!(preview.contains("order_total"), "{preview}");
    sh(
        &dir,
        "perps-bot backtest --profile dev --candles replay.csv --generate 100000",
    );
    let replay = sh(&dir, "perps-bot backtest --profile dev --candles replay.csv");
    assert!(replay.contains("100000 candles"), "{replay}");
    let _ = std::fs::remove_dir_all(&dir);
}
