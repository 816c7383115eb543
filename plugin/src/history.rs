//! `kubectl tradingbot history BOT`: the rollouts (revisions) and the audit trail, both from
//! status, so they outlive Events.

use crate::cluster::Cluster;
use crate::error::Result;
use crate::table::{Table, cell};
use tradingbot_crds::TradingBotStatus;

pub fn render(status: &TradingBotStatus) -> String {
    let mut out = String::from("Rollouts (status.rolloutHistory; undo --to-revision N goes back to one):\n");
    if status.rollout_history.is_empty() {
        out.push_str("  none yet\n");
    } else {
        let mut t = Table::new(&[
            "  REVISION",
            "VERSION",
            "PREVIOUS",
            "OUTCOME",
            "STARTED",
            "FINISHED",
            "REASON",
        ]);
        for r in &status.rollout_history {
            t.row(vec![
                format!("  {}", r.revision),
                r.version.clone(),
                cell(r.previous_version.clone().unwrap_or_default(), 40),
                r.outcome.as_str().to_string(),
                cell(r.started_at.clone().unwrap_or_default(), 25),
                r.finished_at.clone(),
                cell(&r.reason, 100),
            ]);
        }
        out.push_str(&t.render());
    }
    if let Some(r) = &status.rollout {
        out.push_str(&format!(
            "  now: {}{} {}\n",
            r.phase.as_str(),
            r.revision.map_or_else(String::new, |n| format!(" (revision {n})")),
            r.message.clone().unwrap_or_default()
        ));
    }
    out.push_str("\nAudit trail (status.history, newest last):\n");
    if status.history.is_empty() {
        out.push_str("  nothing recorded yet\n");
        return out;
    }
    let mut t = Table::new(&["  TIME", "WHAT", "DETAIL", "WHY", "WHO"]);
    for e in &status.history {
        t.row(vec![
            format!("  {}", e.time),
            e.kind.as_str().to_string(),
            cell(&e.what, 60),
            cell(&e.why, 100),
            cell(&e.who, 40),
        ]);
    }
    out.push_str(&t.render());
    out
}

pub async fn run(cluster: &Cluster, name: &str) -> Result<()> {
    let bot = cluster.bot(name).await?;
    print!("{}", render(&bot.status.unwrap_or_default()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tradingbot_crds::audit::{AuditEntry, AuditKind};

    #[test]
    fn the_audit_trail_answers_who_and_why() {
        let status = TradingBotStatus {
            history: vec![AuditEntry {
                time: "2026-11-21T10:00:00Z".into(),
                kind: AuditKind::BrakeSet,
                what: "emergency brake Halted".into(),
                why: "incident 42".into(),
                who: "alice".into(),
            }],
            ..Default::default()
        };
        let text = render(&status);
        let line = text.lines().find(|l| l.contains("BrakeSet")).unwrap();
        assert!(line.contains("incident 42") && line.ends_with("alice"), "{line}");
        assert!(text.contains("none yet"));
    }
}
