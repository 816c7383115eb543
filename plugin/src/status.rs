//! `kubectl tradingbot status BOT`: everything about one bot, in sections.

use crate::cluster::{Cluster, event_time};
use crate::error::Result;
use crate::table::{Table, cell};
use k8s_openapi::api::core::v1::Event;
use kube::ResourceExt;
use tradingbot_crds::bot_metrics as m;
use tradingbot_crds::exposition::{Sample, parse};
use tradingbot_crds::names::InstanceNames;
use tradingbot_crds::status::{RolloutStatus, TradingBotStatus};
use tradingbot_crds::{Instance, TradingBot, TradingMode};

fn mode_section(status: &TradingBotStatus, out: &mut String) {
    let mode = status
        .mode
        .map_or("unknown (the operator has not reported yet)".into(), |m| m.to_string());
    let sources: Vec<&str> = status.mode_sources.iter().map(|s| s.as_str()).collect();
    out.push_str(&format!("Mode:        {mode}\n"));
    if !sources.is_empty() {
        out.push_str(&format!("  sources:   {}\n", sources.join(", ")));
    }
    out.push_str(&format!(
        "  why:       {}\n",
        status.mode_reason.clone().unwrap_or_else(|| "-".into())
    ));
    if let Some(canary) = status.canary_mode {
        out.push_str(&format!("  canary:    {canary}\n"));
    }
    match &status.brake {
        Some(b) => out.push_str(&format!(
            "Brake:       {} since {} by {}: {}  (kubectl tradingbot resume releases it)\n",
            b.mode, b.since, b.by, b.reason
        )),
        None => out.push_str("Brake:       none\n"),
    }
}

fn trips_section(status: &TradingBotStatus, out: &mut String) {
    out.push_str(&format!("\nTrips ({}):\n", status.trips.len()));
    if !status.trips.is_empty() {
        let mut t = Table::new(&["  ID", "GUARD", "LEVEL", "VALUE", "THRESHOLD", "INSTANCE", "SINCE"]);
        for trip in &status.trips {
            t.row(vec![
                format!("  {}", trip.id),
                trip.guard.clone(),
                trip.level.to_string(),
                trip.value.clone(),
                trip.threshold.clone(),
                trip.instance.to_string(),
                trip.time.clone(),
            ]);
        }
        out.push_str(&t.render());
    }
    if let Some(ack) = &status.last_ack {
        out.push_str(&format!(
            "  last ack:  {:?} {} at {}: {}\n",
            ack.result, ack.value, ack.time, ack.message
        ));
    }
}

fn analysis_lines(rollout: &RolloutStatus, out: &mut String) {
    let Some(a) = &rollout.analysis else { return };
    out.push_str(&format!(
        "  analysis:  {:?} of {} ({} measurements: {} successful, {} failed, {} inconclusive)\n",
        a.phase, a.subject, a.measurements, a.successful, a.failed, a.inconclusive
    ));
    for measurement in &a.last {
        out.push_str(&format!("    {:?}: {}\n", measurement.outcome, measurement.message));
    }
}

fn rollout_section(bot: &TradingBot, status: &TradingBotStatus, out: &mut String) {
    out.push_str("\nRollout:\n");
    let Some(r) = &status.rollout else {
        out.push_str("  none yet\n");
        return;
    };
    let revision = r.revision.map_or_else(String::new, |n| format!(" (revision {n})"));
    out.push_str(&format!(
        "  phase:     {}{revision}, strategy {:?}, promotion {:?}\n",
        r.phase.as_str(),
        bot.spec.rollout.strategy,
        bot.spec.rollout.promotion
    ));
    out.push_str(&format!(
        "  versions:  prod {}, rolling out {}, before {}\n",
        status.current_version.clone().unwrap_or_else(|| "-".into()),
        r.version.clone().unwrap_or_else(|| "-".into()),
        r.previous_version.clone().unwrap_or_else(|| "-".into())
    ));
    if r.phase.has_canary() {
        out.push_str(&format!(
            "  canary:    {} healthy cycles (of {}), {} errors\n",
            r.healthy_cycles, bot.spec.rollout.canary.min_healthy_cycles, r.errors
        ));
    }
    analysis_lines(r, out);
    if let Some(pause) = &r.pause {
        out.push_str(&format!(
            "  paused:    {:?} since {}: {}\n",
            pause.reason, pause.since, pause.message
        ));
    }
    if let Some(until) = &r.bake_until {
        out.push_str(&format!("  baking:    until {until}\n"));
    }
    out.push_str(&format!("  message:   {}\n", r.message.clone().unwrap_or_default()));
    if let Some(a) = &status.last_action {
        out.push_str(&format!(
            "  last action: {} {:?} by {} at {}: {}\n",
            a.value, a.result, a.by, a.time, a.message
        ));
    }
}

fn conditions_section(status: &TradingBotStatus, out: &mut String) {
    out.push_str("\nConditions:\n");
    let mut t = Table::new(&["  TYPE", "STATUS", "REASON", "MESSAGE"]);
    for c in &status.conditions {
        t.row(vec![
            format!("  {}", c.type_),
            c.status.clone(),
            c.reason.clone(),
            cell(&c.message, 100),
        ]);
    }
    out.push_str(&t.render());
}

/// The last `count` Events.
pub fn events_section(events: &[Event], count: usize, out: &mut String) {
    out.push_str(&format!("\nEvents (latest {count}):\n"));
    if events.is_empty() {
        out.push_str("  none (Events expire after an hour; `kubectl tradingbot history` keeps the audit trail)\n");
        return;
    }
    let mut t = Table::new(&["  TIME", "TYPE", "REASON", "MESSAGE"]);
    for e in events.iter().rev().take(count).rev() {
        t.row(vec![
            format!("  {}", event_time(e)),
            e.type_.clone().unwrap_or_default(),
            e.reason.clone().unwrap_or_default(),
            cell(e.message.clone().unwrap_or_default(), 120),
        ]);
    }
    out.push_str(&t.render());
}

/// The key figures of one instance's metrics, in words.
pub fn metrics_summary(samples: &[Sample]) -> Vec<String> {
    let one = |name: &str| samples.iter().find(|s| s.name == name).map(|s| s.value);
    let sum = |name: &str| {
        let values: Vec<f64> = samples.iter().filter(|s| s.name == name).map(|s| s.value).collect();
        (!values.is_empty()).then(|| values.iter().sum::<f64>())
    };
    let max = |name: &str| {
        samples
            .iter()
            .filter(|s| s.name == name)
            .map(|s| s.value)
            .reduce(f64::max)
    };
    let show = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v}"));
    let mode = one(m::TRADING_MODE.name)
        .and_then(TradingMode::from_gauge_value)
        .map_or("-".into(), |m| m.to_string());
    let yes = |v: Option<f64>| if v == Some(1.0) { "yes" } else { "no" };
    vec![
        format!(
            "mode {mode} (known: {}, holds its Lease: {})",
            yes(one(m::MODE_KNOWN.name)),
            yes(one(m::LEASE_HELD.name))
        ),
        format!(
            "cycles {}, cycle errors {}, orders submitted {}, filled {}, rejected {}",
            show(one(m::CYCLES.name)),
            show(one(m::CYCLE_ERRORS.name)),
            show(sum(m::ORDERS_SUBMITTED.name)),
            show(sum(m::ORDERS_FILLED.name)),
            show(sum(m::ORDERS_REJECTED.name))
        ),
        format!(
            "equity {}, daily loss {}, drawdown {} %, exposure {}, open orders {}",
            show(one(m::EQUITY.name)),
            show(one(m::DAILY_LOSS.name)),
            show(one(m::DRAWDOWN.name)),
            show(one(m::EXPOSURE.name)),
            show(one(m::OPEN_ORDERS.name))
        ),
        format!(
            "market data age {} s (oldest symbol), up {} s",
            show(max(m::STALENESS.name)),
            show(one(m::UPTIME.name))
        ),
    ]
}

async fn metrics_section(cluster: &Cluster, bot: &TradingBot, out: &mut String) {
    let instances: Vec<Instance> = match bot.status.as_ref().and_then(|s| s.canary_version.as_ref()) {
        Some(_) => vec![Instance::Prod, Instance::Canary],
        None => vec![Instance::Prod],
    };
    for instance in instances {
        let pod = InstanceNames::new(&bot.name_any(), instance).pod;
        out.push_str(&format!(
            "\nMetrics of {instance} (pod {pod}, through the API server):\n"
        ));
        match cluster.pod_metrics(&pod, bot.spec.metrics.port).await {
            Ok(text) => {
                for line in metrics_summary(&parse(&text)) {
                    out.push_str(&format!("  {line}\n"));
                }
            }
            Err(e) => out.push_str(&format!("  not readable: {e}\n")),
        }
    }
}

pub async fn run(cluster: &Cluster, name: &str) -> Result<()> {
    let bot = cluster.bot(name).await?;
    let status = bot.status.clone().unwrap_or_default();
    let mut out = format!(
        "TradingBot {}/{name} (profile {})\n",
        cluster.namespace, bot.spec.profile
    );
    out.push_str(&format!(
        "Phase:       {}, version {}\n",
        status.phase.map_or("-", |p| p.as_str()),
        status.current_version.clone().unwrap_or_else(|| "-".into())
    ));
    mode_section(&status, &mut out);
    trips_section(&status, &mut out);
    rollout_section(&bot, &status, &mut out);
    conditions_section(&status, &mut out);
    events_section(&cluster.events(name).await, 10, &mut out);
    metrics_section(cluster, &bot, &mut out).await;
    out.push_str(&format!(
        "\nkubectl tradingbot history {name} -n {} shows who did what.\n",
        cluster.namespace
    ));
    print!("{out}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metrics_summary_reads_the_contract_names() {
        let text = "perps_bot_trading_mode 2\nperps_bot_mode_known 1\nperps_bot_lease_held 1\nperps_bot_cycles_total 12\n\
                    perps_bot_orders_rejected_total{reason=\"risk\"} 2\nperps_bot_orders_rejected_total{reason=\"state\"} 3\n\
                    perps_bot_market_data_staleness_seconds{symbol=\"BTC-USD\"} 4\nperps_bot_market_data_staleness_seconds{symbol=\"ETH-USD\"} 9\n";
        let lines = metrics_summary(&parse(text));
        assert_eq!(lines[0], "mode Halted (known: yes, holds its Lease: yes)");
        assert!(
            lines[1].contains("cycles 12") && lines[1].contains("rejected 5"),
            "{}",
            lines[1]
        );
        assert!(lines[3].starts_with("market data age 9 s"), "{}", lines[3]);
    }
}
