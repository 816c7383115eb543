//! `kubectl tradingbot get [-A] [-w]`: the fleet as one table (and its TradingAccounts), live with
//! `-w`: redrawn in place on every change when the output is a terminal, appended otherwise.

use crate::cluster::Cluster;
use crate::error::{Failure, Result};
use crate::table::{Table, cell};
use futures::StreamExt;
use kube::ResourceExt;
use kube::core::DynamicObject;
use kube::runtime::watcher::{self, Event};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::Duration;
use tradingbot_crds::TradingBot;
use tradingbot_crds::progressive::AnalysisPhase;
use tradingbot_crds::status::RolloutPhase;

/// The steps of a canary rollout, for `step n/m`.
fn step_of(phase: RolloutPhase, baking: bool) -> Option<(usize, usize)> {
    let steps = if baking { 5 } else { 4 };
    let n = match phase {
        RolloutPhase::CanaryStarting => 1,
        RolloutPhase::CanaryRunning => 2,
        RolloutPhase::AwaitingPromotion => 3,
        RolloutPhase::Promoting => 4,
        RolloutPhase::Baking => 5,
        _ => return None,
    };
    Some((n, steps))
}

/// `CanaryRunning 2/4`, `Baking 5/5 paused`, `RolledBack`.
pub fn rollout_cell(bot: &TradingBot) -> String {
    let Some(rollout) = bot.status.as_ref().and_then(|s| s.rollout.as_ref()) else {
        return "-".into();
    };
    let mut text = rollout.phase.as_str().to_string();
    if let Some((n, of)) = step_of(rollout.phase, bot.spec.rollout.bake.is_some()) {
        text.push_str(&format!(" {n}/{of}"));
    }
    if rollout.pause.is_some() {
        text.push_str(" paused");
    }
    text
}

/// `3/5 ok` (measurements of count, and anything failed or inconclusive).
pub fn analysis_cell(bot: &TradingBot) -> String {
    let analysis = bot
        .status
        .as_ref()
        .and_then(|s| s.rollout.as_ref())
        .and_then(|r| r.analysis.as_ref());
    let (Some(a), Some(spec)) = (analysis, bot.spec.rollout.analysis.as_ref()) else {
        return "-".into();
    };
    let verdict = match a.phase {
        AnalysisPhase::Running => "running",
        AnalysisPhase::Successful => "passed",
        AnalysisPhase::Failed => "FAILED",
        AnalysisPhase::Inconclusive => "INCONCLUSIVE",
    };
    let mut text = format!("{}/{} {verdict}", a.measurements, spec.count);
    if a.failed + a.inconclusive > 0 {
        text.push_str(&format!(" ({} failed, {} inconclusive)", a.failed, a.inconclusive));
    }
    text
}

/// The canary's health while one runs: `v2 ready 12 cycles 0 errors`.
pub fn canary_cell(bot: &TradingBot) -> String {
    let Some(status) = bot.status.as_ref() else {
        return "-".into();
    };
    let (Some(version), Some(rollout)) = (status.canary_version.as_ref(), status.rollout.as_ref()) else {
        return "-".into();
    };
    let state = if rollout.phase == RolloutPhase::CanaryStarting {
        "starting"
    } else {
        "ready"
    };
    format!(
        "{version} {state} {} cycles {} errors",
        rollout.healthy_cycles, rollout.errors
    )
}

/// The latched trips: count and the first ids.
pub fn trips_cell(bot: &TradingBot) -> String {
    let trips = bot.status.as_ref().map(|s| s.trips.clone()).unwrap_or_default();
    if trips.is_empty() {
        return "0".into();
    }
    let names: Vec<String> = trips.iter().map(|t| format!("{} {}", t.guard, t.level)).collect();
    format!("{} ({})", trips.len(), names.join(", "))
}

fn why_cell(bot: &TradingBot) -> String {
    let Some(status) = bot.status.as_ref() else {
        return "-".into();
    };
    let sources: Vec<&str> = status.mode_sources.iter().map(|s| s.as_str()).collect();
    if sources.is_empty() {
        return "-".into();
    }
    let mut text = sources.join(",");
    if let Some(brake) = &status.brake {
        text.push_str(&format!(" (brake by {})", brake.by));
    }
    text
}

/// One row per bot.
pub fn bots_table(bots: &[TradingBot], with_namespace: bool) -> Table {
    let mut header = vec![
        "NAME", "MODE", "WHY", "PHASE", "VERSION", "ROLLOUT", "ANALYSIS", "CANARY", "TRIPS",
    ];
    if with_namespace {
        header.insert(0, "NAMESPACE");
    }
    let mut table = Table::new(&header);
    for bot in bots {
        let status = bot.status.clone().unwrap_or_default();
        let mut row = vec![
            bot.name_any(),
            cell(status.mode.map(|m| m.to_string()).unwrap_or_default(), 12),
            cell(why_cell(bot), 60),
            cell(status.phase.map(|p| p.as_str()).unwrap_or_default(), 12),
            cell(status.current_version.unwrap_or_default(), 40),
            cell(rollout_cell(bot), 30),
            cell(analysis_cell(bot), 40),
            cell(canary_cell(bot), 60),
            cell(trips_cell(bot), 60),
        ];
        if with_namespace {
            row.insert(0, cell(bot.namespace().unwrap_or_default(), 63));
        }
        table.row(row);
    }
    table
}

fn text_at(object: &DynamicObject, pointer: &str) -> String {
    match object.data.pointer(pointer) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

/// One row per TradingAccount (read without its type: the columns its CRD prints).
pub fn accounts_table(accounts: &[DynamicObject]) -> Table {
    let mut table = Table::new(&[
        "NAMESPACE",
        "ACCOUNT",
        "MODE",
        "BOTS",
        "DAILY LOSS",
        "EXPOSURE",
        "TRIPS",
        "REASON",
    ]);
    for account in accounts {
        table.row(vec![
            account.namespace().unwrap_or_default(),
            account.name_any(),
            cell(text_at(account, "/status/mode"), 12),
            cell(text_at(account, "/status/aggregate/bots"), 6),
            cell(text_at(account, "/status/aggregate/dailyLoss"), 16),
            cell(text_at(account, "/status/aggregate/grossExposure"), 16),
            cell(text_at(account, "/status/tripCount"), 6),
            cell(text_at(account, "/status/modeReason"), 60),
        ]);
    }
    table
}

async fn screen(cluster: &Cluster, bots: &[TradingBot], all_namespaces: bool) -> String {
    let mut out = if bots.is_empty() {
        let scope = if all_namespaces {
            "any namespace".to_string()
        } else {
            format!("namespace {}", cluster.namespace)
        };
        format!("No TradingBots in {scope}.\n")
    } else {
        bots_table(bots, all_namespaces).render()
    };
    if let Some(accounts) = cluster.accounts(all_namespaces).await
        && !accounts.is_empty()
    {
        out.push('\n');
        out.push_str(&accounts_table(&accounts).render());
    }
    out
}

async fn list(cluster: &Cluster, bot: Option<&str>, all_namespaces: bool) -> Result<Vec<TradingBot>> {
    if let Some(name) = bot {
        return Ok(vec![cluster.bot(name).await?]);
    }
    let api = if all_namespaces {
        cluster.all_bots()
    } else {
        cluster.bots()
    };
    let mut bots = api
        .list(&Default::default())
        .await
        .map_err(|e| Failure::api("listing TradingBots", e))?
        .items;
    bots.sort_by_key(|b| (b.namespace(), b.name_any()));
    Ok(bots)
}

pub async fn run(cluster: &Cluster, bot: Option<&str>, all_namespaces: bool, watch: bool) -> Result<()> {
    let bots = list(cluster, bot, all_namespaces).await?;
    if !watch {
        print!("{}", screen(cluster, &bots, all_namespaces).await);
        return Ok(());
    }
    watch_fleet(cluster, bot, all_namespaces, bots).await
}

/// Redraw on every change (and every few seconds, for the accounts and the time).
async fn watch_fleet(cluster: &Cluster, bot: Option<&str>, all_namespaces: bool, bots: Vec<TradingBot>) -> Result<()> {
    let api = if all_namespaces {
        cluster.all_bots()
    } else {
        cluster.bots()
    };
    let mut config = watcher::Config::default();
    if let Some(name) = bot {
        config = config.fields(&format!("metadata.name={name}"));
    }
    let mut events = watcher::watcher(api, config).boxed();
    let key = |b: &TradingBot| (b.namespace().unwrap_or_default(), b.name_any());
    let mut fleet: BTreeMap<(String, String), TradingBot> = bots.into_iter().map(|b| (key(&b), b)).collect();
    let terminal = std::io::stdout().is_terminal();
    let mut shown = String::new();
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(Event::Apply(b) | Event::InitApply(b))) => { fleet.insert(key(&b), b); }
                Some(Ok(Event::Delete(b))) => { fleet.remove(&key(&b)); }
                Some(Ok(Event::Init)) => { fleet.clear(); }
                Some(Ok(Event::InitDone)) => {}
                Some(Err(e)) => eprintln!("watch: {e} (retrying)"),
                None => return Ok(()),
            },
            _ = tick.tick() => {}
        }
        let bots: Vec<TradingBot> = fleet.values().cloned().collect();
        let table = screen(cluster, &bots, all_namespaces).await;
        if table == shown {
            continue;
        }
        let now = k8s_openapi::jiff::Timestamp::now();
        let mut out = std::io::stdout().lock();
        if terminal {
            // Home and clear, then the new table: redrawn in place.
            let _ = write!(out, "\x1b[H\x1b[2J");
        }
        let _ = writeln!(out, "{now:.0}  (kubectl tradingbot get -w; Ctrl-C ends it)\n{table}");
        let _ = out.flush();
        shown = table;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tradingbot_crds::progressive::AnalysisStatus;
    use tradingbot_crds::status::{RolloutStatus, TradingBotStatus};
    use tradingbot_crds::{Instance, Profile, TradingBotSpec, TradingMode};

    fn rolling() -> TradingBot {
        let mut spec = TradingBotSpec::for_profile(Profile::Demo);
        spec.rollout.analysis = serde_json::from_value(serde_json::json!({
            "count": 5, "metrics": [{"name": "CycleErrors", "max": "0"}]
        }))
        .unwrap();
        let mut bot = TradingBot::new("btc", spec);
        bot.status = Some(TradingBotStatus {
            mode: Some(TradingMode::ReduceOnly),
            mode_sources: vec![tradingbot_crds::mode::ModeSource::Brake],
            canary_version: Some("bot:v2".into()),
            current_version: Some("bot:v1".into()),
            rollout: Some(RolloutStatus {
                phase: RolloutPhase::CanaryRunning,
                healthy_cycles: 7,
                analysis: Some(AnalysisStatus {
                    phase: AnalysisPhase::Running,
                    subject: Instance::Canary,
                    measurements: 2,
                    successful: 1,
                    failed: 0,
                    inconclusive: 1,
                    started_at: "t".into(),
                    last_measured_at: None,
                    baseline: None,
                    last: vec![],
                    message: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        bot
    }

    #[test]
    fn a_rolling_bot_shows_its_step_analysis_and_canary() {
        let bot = rolling();
        assert_eq!(rollout_cell(&bot), "CanaryRunning 2/4");
        assert_eq!(analysis_cell(&bot), "2/5 running (0 failed, 1 inconclusive)");
        assert_eq!(canary_cell(&bot), "bot:v2 ready 7 cycles 0 errors");
        let table = bots_table(&[bot], false).render();
        assert!(table.starts_with("NAME   MODE"), "{table}");
        assert!(table.contains("ReduceOnly   Brake"), "{table}");
    }

    #[test]
    fn a_bot_without_status_is_all_dashes() {
        let bot = TradingBot::new("new", TradingBotSpec::for_profile(Profile::Dev));
        let table = bots_table(&[bot], true).render();
        let row = table.lines().nth(1).unwrap();
        assert_eq!(
            row.split_whitespace().collect::<Vec<_>>(),
            ["-", "new", "-", "-", "-", "-", "-", "-", "-", "0"]
        );
        assert_eq!(
            trips_cell(&TradingBot::new("x", TradingBotSpec::for_profile(Profile::Dev))),
            "0"
        );
    }
}
