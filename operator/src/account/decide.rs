//! The account's decisions, pure: totals over its bots, limit trips (latched), acknowledgements,
//! automatic resume, the account's mode and its status.

use crate::reconcile::notice::{Notice, Reason};
use crate::reconcile::status::{self, Wanted};
use crate::scrape::BotSample;
use k8s_openapi::jiff::Timestamp;
use rust_decimal::Decimal;
use std::collections::BTreeMap;
use tradingbot_crds::account::{
    self, AccountAggregate, AccountBot, AccountTotals, AccountTrip, TradingAccount, TradingAccountStatus,
};
use tradingbot_crds::mode::{ModeSource, most_restrictive_of};
use tradingbot_crds::spec::ResumePolicy;
use tradingbot_crds::status::{AckRecord, AckResult};
use tradingbot_crds::{TradingMode, names};

pub mod types {
    pub const REPORTING: &str = "Reporting";
    pub const REDUCE_ONLY: &str = "ReduceOnly";
    pub const HALTED: &str = "Halted";
}

/// What the operator knows of one bot on the account.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BotFigures {
    pub namespace: String,
    pub name: String,
    /// From the last successful scrape of its prod instance (None: never scraped).
    pub daily_loss: Option<Decimal>,
    pub exposure: Option<Decimal>,
    pub open_orders: Option<u64>,
    pub mode: Option<TradingMode>,
    /// Successful scrapes so far (a new one is a new evaluation for automatic resume).
    pub scrapes: u64,
}

impl BotFigures {
    /// What the account counts of a bot's last successful scrape: nothing until the bot has
    /// completed a cycle. A bot process serves its gauges at 0 from its start, before it has read
    /// its account or traded; a restarted or replaced bot's first pages would otherwise count as
    /// reporting nothing lost and nothing held, and could release a trip its real figures hold.
    pub fn from_sample(
        namespace: String,
        name: String,
        sample: Option<&BotSample>,
        mode: Option<TradingMode>,
        scrapes: u64,
    ) -> Self {
        let known = sample.filter(|s| s.cycles.is_some_and(|c| c > 0));
        BotFigures {
            namespace,
            name,
            daily_loss: known.and_then(|s| s.daily_loss),
            exposure: known.and_then(|s| s.exposure),
            open_orders: known.and_then(|s| s.open_orders),
            mode,
            scrapes,
        }
    }

    fn reporting(&self) -> bool {
        self.daily_loss.is_some() || self.exposure.is_some() || self.open_orders.is_some()
    }
}

/// Per-account memory between reconciles.
#[derive(Debug, Default)]
pub struct AccountMemory {
    /// Healthy evaluations in a row per latched trip (resume: Auto).
    pub streaks: BTreeMap<String, u32>,
    /// The bots' scrape counts at the last evaluation.
    pub scrapes_seen: u64,
}

pub struct AccountInputs<'a> {
    pub account: &'a TradingAccount,
    pub bots: &'a [BotFigures],
    pub now: Timestamp,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AccountDecision {
    pub status: TradingAccountStatus,
    pub notices: Vec<Notice>,
    /// Trips latched this time (for metrics).
    pub tripped: Vec<AccountTrip>,
    pub totals: AccountTotals,
}

/// The sums the limits apply to. A bot's gain never offsets another's loss; a bot not
/// reporting yet adds nothing but counts as a bot.
pub fn totals(bots: &[BotFigures]) -> AccountTotals {
    AccountTotals {
        daily_loss: bots
            .iter()
            .filter_map(|b| b.daily_loss)
            .map(|l| l.max(Decimal::ZERO))
            .sum(),
        gross_exposure: bots.iter().filter_map(|b| b.exposure).map(|e| e.abs()).sum(),
        open_orders: bots.iter().filter_map(|b| b.open_orders).sum(),
        bots: bots.len() as u32,
    }
}

/// The bots whose figures are not in the totals yet (`namespace/name`).
fn silent_bots(bots: &[BotFigures]) -> Vec<String> {
    bots.iter()
        .filter(|b| !b.reporting())
        .map(|b| format!("{}/{}", b.namespace, b.name))
        .collect()
}

/// Why the totals cannot release a trip, if they cannot: a bot that is not reporting yet (just
/// created, or the operator just restarted and has not scraped it) adds nothing to them, so they
/// could hide the very loss or exposure that tripped the account.
fn incomplete_totals(bots: &[BotFigures]) -> Option<String> {
    let silent = silent_bots(bots);
    (!silent.is_empty()).then(|| {
        format!(
            "the totals are incomplete until every bot reports (no metrics yet from {})",
            silent.join(", ")
        )
    })
}

fn release_recovered(
    trips: &mut Vec<AccountTrip>,
    limits: &account::AccountLimits,
    totals: &AccountTotals,
    memory: &mut AccountMemory,
    notices: &mut Vec<Notice>,
) {
    memory.streaks.retain(|id, _| trips.iter().any(|t| &t.id == id));
    if limits.resume != ResumePolicy::Auto {
        memory.streaks.clear();
        return;
    }
    let needed = limits.healthy_evaluations_needed();
    let mut released = Vec::new();
    for trip in trips.iter() {
        let streak = memory.streaks.entry(trip.id.clone()).or_default();
        *streak = if account::has_recovered(trip, limits, totals).is_ok() {
            *streak + 1
        } else {
            0
        };
        if *streak >= needed {
            released.push(trip.id.clone());
        }
    }
    for id in released {
        memory.streaks.remove(&id);
        trips.retain(|t| t.id != id);
        notices.push(Notice::normal(
            Reason::TripReleased,
            format!("account trip {id} released after {needed} healthy evaluations in a row (resume: Auto)"),
        ));
    }
}

/// Process the `ack-trip` annotation, once per value (refused while the totals are incomplete).
fn acknowledge(
    account: &TradingAccount,
    trips: &mut Vec<AccountTrip>,
    totals: &AccountTotals,
    incomplete: Option<&str>,
    now: &str,
    notices: &mut Vec<Notice>,
) -> Option<AckRecord> {
    let old = account.status.as_ref().and_then(|s| s.last_ack.clone());
    let annotations = account.metadata.annotations.as_ref();
    let Some(value) = annotations
        .and_then(|a| a.get(names::ANNOTATION_ACK_TRIP))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
    else {
        return old;
    };
    if old.as_ref().is_some_and(|a| a.value == value) {
        return old;
    }
    let id = value.split('@').next().unwrap_or_default().to_string();
    let outcome = match trips.iter().find(|t| t.id == id) {
        None => Err(format!("no latched account trip has id {id:?}")),
        Some(trip) => match incomplete {
            Some(why) => Err(why.to_string()),
            None => account::has_recovered(trip, &account.spec.limits, totals),
        }
        .map(|()| trip.clone())
        .map_err(|why| format!("trip {id} not released: {why}")),
    };
    let (result, guard, message) = match outcome {
        Ok(trip) => {
            trips.retain(|t| t.id != trip.id);
            let message = format!(
                "account trip {} ({} {}) acknowledged and released",
                trip.id, trip.limit, trip.level
            );
            notices.push(Notice::normal(
                Reason::TripAcknowledged,
                format!("{message} by annotation"),
            ));
            (AckResult::Accepted, Some(trip.limit), message)
        }
        Err(why) => {
            notices.push(Notice::warning(
                Reason::AckRefused,
                format!("acknowledgement {value:?} refused: {why}"),
            ));
            let limit = trips.iter().find(|t| t.id == id).map(|t| t.limit.clone());
            (AckResult::Refused, limit, why)
        }
    };
    Some(AckRecord {
        value,
        guard,
        result,
        message,
        time: now.to_string(),
    })
}

/// The account's mode: its switches, its trips and its deletion.
pub fn account_mode(account: &TradingAccount, trips: &[AccountTrip]) -> (TradingMode, Vec<ModeSource>, String) {
    let (trip_mode, trip_reason) = account::mode_of_trips(trips);
    let mut inputs = vec![
        (
            TradingMode::from_switches(false, account.spec.halted),
            ModeSource::SpecHalted,
            "account spec.halted".to_string(),
        ),
        (
            TradingMode::from_switches(account.spec.reduce_only, false),
            ModeSource::SpecReduceOnly,
            "account spec.reduceOnly".to_string(),
        ),
        (trip_mode, ModeSource::GuardTrip, trip_reason),
    ];
    if account.metadata.deletion_timestamp.is_some() {
        inputs.push((
            TradingMode::Halted,
            ModeSource::Deleting,
            "the TradingAccount is being deleted".to_string(),
        ));
    }
    most_restrictive_of(&inputs)
}

fn bot_rows(bots: &[BotFigures]) -> Vec<AccountBot> {
    bots.iter()
        .map(|b| AccountBot {
            namespace: b.namespace.clone(),
            name: b.name.clone(),
            daily_loss: b.daily_loss.map(|l| l.max(Decimal::ZERO).normalize().to_string()),
            gross_exposure: b.exposure.map(|e| e.abs().normalize().to_string()),
            open_orders: b.open_orders,
            mode: b.mode,
            reporting: b.reporting(),
        })
        .collect()
}

fn conditions(
    old: &TradingAccountStatus,
    bots: &[BotFigures],
    mode: TradingMode,
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    let silent = silent_bots(bots);
    let reporting = if silent.is_empty() {
        Wanted::new(
            types::REPORTING,
            true,
            "AllBotsReporting",
            "every bot's metrics are in the totals",
        )
    } else {
        Wanted::new(
            types::REPORTING,
            false,
            "BotsNotReporting",
            format!("no metrics yet from {}: the totals leave them out", silent.join(", ")),
        )
    };
    let level = |type_: &'static str, level: TradingMode| {
        if mode == level {
            Wanted::new(
                type_,
                true,
                "InForce",
                format!("every bot on the account is at least {level}"),
            )
        } else {
            Wanted::new(type_, false, "NotInForce", format!("mode is {mode}"))
        }
    };
    let wanted = vec![
        reporting,
        level(types::REDUCE_ONLY, TradingMode::ReduceOnly),
        level(types::HALTED, TradingMode::Halted),
    ];
    status::conditions(&old.conditions, wanted, generation, now)
}

/// Decide the account's status and Events.
pub fn decide(input: &AccountInputs<'_>, memory: &mut AccountMemory) -> AccountDecision {
    let account = input.account;
    let old = account.status.clone().unwrap_or_default();
    let limits = &account.spec.limits;
    let totals = totals(input.bots);
    let now_text = format!("{:.0}", input.now);
    let mut notices = Vec::new();
    let mut trips = old.trips.clone();
    let tripped = account::new_trips(&trips, limits, &totals, input.now.as_second(), &now_text);
    for trip in &tripped {
        notices.push(Notice::warning(
            Reason::LimitTripped,
            format!(
                "account limit {} reached {} >= {} level {}: trip {} latched; every bot on the account is now at least {}",
                trip.limit, trip.value, trip.level, trip.threshold, trip.id, trip.level
            ),
        ));
    }
    trips.extend(tripped.iter().cloned());
    let incomplete = incomplete_totals(input.bots);
    let scrapes: u64 = input.bots.iter().map(|b| b.scrapes).sum();
    if incomplete.is_some() {
        // A healthy streak never spans a time the totals were incomplete.
        memory.streaks.clear();
    } else if scrapes > memory.scrapes_seen {
        release_recovered(&mut trips, limits, &totals, memory, &mut notices);
    }
    memory.scrapes_seen = scrapes;
    let last_ack = acknowledge(
        account,
        &mut trips,
        &totals,
        incomplete.as_deref(),
        &now_text,
        &mut notices,
    );
    let (mode, sources, reason) = account_mode(account, &trips);
    let generation = account.metadata.generation;
    let new = TradingAccountStatus {
        observed_generation: generation,
        mode: Some(mode),
        mode_reason: Some(reason),
        mode_sources: sources,
        aggregate: Some(AccountAggregate {
            daily_loss: totals.daily_loss.normalize().to_string(),
            gross_exposure: totals.gross_exposure.normalize().to_string(),
            open_orders: totals.open_orders,
            bots: totals.bots,
        }),
        bots: bot_rows(input.bots),
        trip_count: Some(trips.len() as u32),
        trips,
        last_ack,
        conditions: conditions(&old, input.bots, mode, generation, input.now),
    };
    if old.mode != new.mode && !(old.mode.is_none() && mode == TradingMode::Normal) {
        let note = format!(
            "account mode {} -> {mode}: {}",
            old.mode.map_or("unset".into(), |m| m.to_string()),
            new.mode_reason.clone().unwrap_or_default()
        );
        notices.push(if mode == TradingMode::Normal {
            Notice::normal(Reason::ModeChanged, note)
        } else {
            Notice::warning(Reason::ModeChanged, note)
        });
    }
    AccountDecision {
        status: new,
        notices,
        tripped,
        totals,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap as Map;
    use tradingbot_crds::account::{AccountLimits, TradingAccountSpec};
    use tradingbot_crds::spec::Levels;

    fn account(reduce_only_at: &str, resume: ResumePolicy) -> TradingAccount {
        let mut a = TradingAccount::new(
            "main",
            TradingAccountSpec {
                credentials_secret: "coinbase-main".into(),
                allowed_namespaces: vec![],
                reduce_only: false,
                halted: false,
                limits: AccountLimits {
                    gross_exposure: Some(Levels {
                        reduce_only_at: Some(reduce_only_at.parse().unwrap()),
                        halt_at: None,
                    }),
                    resume,
                    healthy_evaluations_before_resume: Some(2),
                    ..Default::default()
                },
            },
        );
        a.metadata.namespace = Some("trading".into());
        a
    }

    fn bot(name: &str, exposure: i64, scrapes: u64) -> BotFigures {
        BotFigures {
            namespace: "trading".into(),
            name: name.into(),
            daily_loss: Some(Decimal::ZERO),
            exposure: Some(Decimal::from(exposure)),
            open_orders: Some(0),
            mode: Some(TradingMode::Normal),
            scrapes,
        }
    }

    fn run(account: &TradingAccount, bots: &[BotFigures], memory: &mut AccountMemory) -> AccountDecision {
        decide(
            &AccountInputs {
                account,
                bots,
                now: Timestamp::from_second(1_795_219_200).unwrap(),
            },
            memory,
        )
    }

    #[test]
    fn three_bots_each_small_trip_the_account_together() {
        let a = account("1200", ResumePolicy::Manual);
        let bots = [bot("a", 500, 1), bot("b", 500, 1), bot("c", 500, 1)];
        let d = run(&a, &bots, &mut AccountMemory::default());
        assert_eq!(d.totals.gross_exposure, Decimal::from(1500));
        assert_eq!(d.status.mode, Some(TradingMode::ReduceOnly));
        assert_eq!(d.status.mode_sources, [ModeSource::GuardTrip]);
        assert_eq!(d.status.bots.len(), 3);
        assert_eq!(d.status.aggregate.as_ref().unwrap().bots, 3);
        assert!(d.notices.iter().any(|n| n.reason == Reason::LimitTripped && n.warning));
    }

    #[test]
    fn a_manual_trip_needs_recovery_and_an_acknowledgement() {
        let mut a = account("1200", ResumePolicy::Manual);
        let mut memory = AccountMemory::default();
        let d = run(&a, &[bot("a", 1500, 1)], &mut memory);
        let id = d.status.trips[0].id.clone();
        a.status = Some(d.status);
        a.metadata.annotations = Some(Map::from([(names::ANNOTATION_ACK_TRIP.to_string(), id.clone())]));
        let refused = run(&a, &[bot("a", 1500, 2)], &mut memory);
        assert_eq!(refused.status.last_ack.as_ref().unwrap().result, AckResult::Refused);
        assert_eq!(refused.status.mode, Some(TradingMode::ReduceOnly));
        a.status = Some(refused.status);
        a.metadata.annotations = Some(Map::from([(names::ANNOTATION_ACK_TRIP.to_string(), format!("{id}@2"))]));
        let accepted = run(&a, &[bot("a", 100, 3)], &mut memory);
        assert_eq!(accepted.status.last_ack.as_ref().unwrap().result, AckResult::Accepted);
        assert_eq!(accepted.status.mode, Some(TradingMode::Normal));
        assert!(
            accepted
                .notices
                .iter()
                .any(|n| n.reason == Reason::ModeChanged && !n.warning)
        );
    }

    #[test]
    fn auto_resume_counts_only_new_evaluations() {
        let mut a = account("1200", ResumePolicy::Auto);
        let mut memory = AccountMemory::default();
        let d = run(&a, &[bot("a", 1500, 1)], &mut memory);
        a.status = Some(d.status);
        for _ in 0..3 {
            let same = run(&a, &[bot("a", 100, 1)], &mut memory);
            assert_eq!(
                same.status.mode,
                Some(TradingMode::ReduceOnly),
                "no new scrape, no evaluation"
            );
        }
        let once = run(&a, &[bot("a", 100, 2)], &mut memory);
        assert_eq!(once.status.mode, Some(TradingMode::ReduceOnly));
        a.status = Some(once.status);
        let twice = run(&a, &[bot("a", 100, 3)], &mut memory);
        assert_eq!(twice.status.mode, Some(TradingMode::Normal));
    }

    fn silent(name: &str) -> BotFigures {
        BotFigures {
            namespace: "trading".into(),
            name: name.into(),
            ..Default::default()
        }
    }

    /// After an operator restart (or a new bot), a bot not scraped yet adds nothing to the totals:
    /// they could hide the exposure that tripped the account, so nothing releases on them.
    #[test]
    fn no_release_while_a_bot_is_not_reporting() {
        for resume in [ResumePolicy::Manual, ResumePolicy::Auto] {
            let mut a = account("1200", resume);
            let mut memory = AccountMemory::default();
            let d = run(&a, &[bot("a", 700, 1), bot("b", 700, 1)], &mut memory);
            let id = d.status.trips[0].id.clone();
            a.status = Some(d.status);
            a.metadata.annotations = Some(Map::from([(names::ANNOTATION_ACK_TRIP.to_string(), id.clone())]));
            // The operator restarted: fresh memory, b not scraped yet, a small on its own.
            let mut memory = AccountMemory::default();
            for scrapes in 2..6 {
                let d = run(&a, &[bot("a", 100, scrapes), silent("b")], &mut memory);
                assert_eq!(d.status.mode, Some(TradingMode::ReduceOnly), "{resume:?}");
                assert_eq!(d.status.trips.len(), 1);
                if resume == ResumePolicy::Manual {
                    let ack = d.status.last_ack.clone().unwrap();
                    assert_eq!(ack.result, AckResult::Refused);
                    assert!(
                        ack.message.contains("incomplete") && ack.message.contains("trading/b"),
                        "{ack:?}"
                    );
                }
            }
            // b reports again, still large: the trip stays; small: it can go.
            let d = run(&a, &[bot("a", 100, 6), bot("b", 1200, 1)], &mut memory);
            assert_eq!(d.status.mode, Some(TradingMode::ReduceOnly));
            a.metadata.annotations = Some(Map::from([(names::ANNOTATION_ACK_TRIP.to_string(), format!("{id}@2"))]));
            let mut released = None;
            for scrapes in 7..10 {
                let d = run(&a, &[bot("a", 100, scrapes), bot("b", 100, scrapes)], &mut memory);
                released = released.or((d.status.mode == Some(TradingMode::Normal)).then_some(scrapes));
                a.status = Some(d.status);
            }
            assert!(released.is_some(), "{resume:?}: released once complete and recovered");
        }
    }

    /// A bot's pages before its first cycle (all gauges at 0) are not figures: it is not reporting.
    #[test]
    fn a_bot_counts_only_once_it_has_completed_a_cycle() {
        let mut sample = BotSample {
            daily_loss: Some(Decimal::ZERO),
            exposure: Some(Decimal::ZERO),
            open_orders: Some(0),
            cycles: Some(0),
            ..Default::default()
        };
        let fresh = BotFigures::from_sample("trading".into(), "b".into(), Some(&sample), None, 1);
        assert!(!fresh.reporting(), "{fresh:?}");
        assert!(incomplete_totals(&[fresh]).is_some());
        sample.cycles = Some(1);
        sample.exposure = Some(Decimal::from(900));
        let running = BotFigures::from_sample("trading".into(), "b".into(), Some(&sample), None, 2);
        assert!(running.reporting());
        assert_eq!(running.exposure, Some(Decimal::from(900)));
    }

    /// Auto: a streak of healthy evaluations is lost when a bot falls silent in between.
    #[test]
    fn a_silent_spell_restarts_the_auto_streak() {
        let mut a = account("1200", ResumePolicy::Auto);
        a.spec.limits.healthy_evaluations_before_resume = Some(3);
        let mut memory = AccountMemory::default();
        let d = run(&a, &[bot("a", 1500, 1)], &mut memory);
        a.status = Some(d.status);
        for scrapes in [2, 3] {
            let d = run(&a, &[bot("a", 100, scrapes)], &mut memory);
            assert_eq!(d.status.mode, Some(TradingMode::ReduceOnly));
        }
        // The bot restarts: silent (its observation gone, the scrape count back to 0), then back.
        let d = run(&a, &[silent("a")], &mut memory);
        assert_eq!(d.status.mode, Some(TradingMode::ReduceOnly));
        let d = run(&a, &[bot("a", 100, 1)], &mut memory);
        assert_eq!(d.status.mode, Some(TradingMode::ReduceOnly), "the streak started over");
        for scrapes in [2, 3] {
            let d = run(&a, &[bot("a", 100, scrapes)], &mut memory);
            a.status = Some(d.status);
        }
        assert_eq!(
            a.status.as_ref().unwrap().mode,
            Some(TradingMode::Normal),
            "three new healthy ones"
        );
    }

    #[test]
    fn switches_and_deletion_restrict_every_bot() {
        let mut a = account("1200", ResumePolicy::Manual);
        a.spec.halted = true;
        let d = run(&a, &[bot("a", 0, 1)], &mut AccountMemory::default());
        assert_eq!(
            (d.status.mode, d.status.mode_sources.clone()),
            (Some(TradingMode::Halted), vec![ModeSource::SpecHalted])
        );
        a.spec.halted = false;
        a.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            Timestamp::UNIX_EPOCH,
        ));
        let d = run(&a, &[], &mut AccountMemory::default());
        assert_eq!(d.status.mode_sources, [ModeSource::Deleting]);
    }

    #[test]
    fn a_gain_never_offsets_a_loss_and_silent_bots_are_named() {
        let mut winner = bot("w", 0, 1);
        winner.daily_loss = Some(Decimal::from(-300));
        let mut loser = bot("l", 0, 1);
        loser.daily_loss = Some(Decimal::from(200));
        let silent = BotFigures {
            namespace: "trading".into(),
            name: "s".into(),
            ..Default::default()
        };
        let t = totals(&[winner, loser, silent.clone()]);
        assert_eq!((t.daily_loss, t.bots), (Decimal::from(200), 3));
        let d = run(
            &account("1200", ResumePolicy::Manual),
            &[silent],
            &mut AccountMemory::default(),
        );
        let c = d
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == types::REPORTING)
            .unwrap();
        assert!(c.status == "False" && c.message.contains("trading/s"), "{c:?}");
    }
}
