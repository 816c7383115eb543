//! Step 3, decide (pure): from what was observed, the trading state (trips, acknowledgements,
//! the effective mode), the rollout, the children to converge to, and the part of status that
//! is written first (enforcement) whatever happens to the children afterwards (for a new bot
//! that nothing restricts it may wait: [`enforcement_can_wait`]).

use super::actors::Actors;
use super::desired::{self, DesiredChildren};
use super::notice::{Notice, Reason};
use super::observe::{Observed, PerInstance, Slot};
use super::rollout::{self, RolloutInputs, RolloutPlan, views};
use super::trading::{self, InstanceView, TradingInputs, TradingOutcome};
use super::validate::{self, Problem};
use super::{audit, brake};
use crate::cli::Settings;
use crate::context::BotMemory;
use crate::fleet::AccountLookup;
use std::time::Duration;
use tradingbot_crds::guards::GuardKind;
use tradingbot_crds::names;
use tradingbot_crds::status::{RolloutStatus, TradingBotStatus};
use tradingbot_crds::{Instance, TradingMode};

/// What to do with one bot pod while its TradingBot is being deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Nothing to stop.
    Nothing,
    /// Give the bot time to report Halted with no open orders.
    Wait,
    /// Stop it (SIGTERM: the bot cancels its orders). `timed_out` when it never reported Halted.
    Now { timed_out: bool },
}

/// What happens to the children.
#[derive(Debug, Clone, PartialEq)]
pub enum ChildrenPlan {
    /// Leave every child as it is (the spec is invalid, or `spec.paused`).
    Hold,
    /// Make the children match.
    Converge(Box<DesiredChildren>),
    /// The TradingBot is being deleted: stop each pod once its bot is halted.
    Stop(PerInstance<Stop>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub trading: TradingOutcome,
    pub views: PerInstance<Option<InstanceView>>,
    /// Spec problems: children are held until the spec changes.
    pub problems: Vec<Problem>,
    /// What bot pods report about their credentials (`pod name: message`).
    pub credentials: Vec<String>,
    /// The version prod is seen to run (status.currentVersion).
    pub current_version: Option<String>,
    pub canary_version: Option<String>,
    pub rollout: Option<RolloutStatus>,
    /// Re-evaluate after this long even without news (rollout gates).
    pub recheck_after: Option<Duration>,
    pub children: ChildrenPlan,
    /// Status with the trading decisions applied: written before any child is touched (see
    /// [`enforcement_can_wait`] for the one exception).
    pub enforcement: TradingBotStatus,
    /// Rollout and deletion Events (the trading ones are in `trading.notices`).
    pub notices: Vec<Notice>,
    /// The audit entries of the trading decisions (already in `enforcement.history`).
    pub audit: Vec<tradingbot_crds::audit::AuditEntry>,
    /// What the rollout adds to status besides `status.rollout`.
    pub records: RolloutRecords,
}

/// The rollout's history, audit entries and the action it processed (empty while it is held).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RolloutRecords {
    pub history: Option<Vec<tradingbot_crds::progressive::RolloutRecord>>,
    pub audit: Vec<tradingbot_crds::audit::AuditEntry>,
    pub action: Option<tradingbot_crds::audit::ActionRecord>,
}

impl RolloutRecords {
    fn of(plan: &RolloutPlan) -> Self {
        Self {
            history: Some(plan.history.clone()),
            audit: plan.audit.clone(),
            action: plan.action.clone(),
        }
    }
}

impl Decision {
    /// The deletion is done: no pod of this bot is left.
    pub fn deletion_complete(&self) -> bool {
        matches!(&self.children, ChildrenPlan::Stop(stops) if *stops == PerInstance { prod: Stop::Nothing, canary: Stop::Nothing })
    }
}

/// Decide everything about one bot. `memory` carries guard streaks between scrapes.
pub fn decide(observed: &Observed, settings: &Settings, memory: &mut BotMemory) -> Decision {
    let bot = &observed.bot;
    let old = bot.status.clone().unwrap_or_default();
    let views = instance_views(observed, memory);
    let account = account_restriction(observed);
    let mut trading = decide_trading(observed, &old, &views, account.as_ref(), memory);
    let mut problems = validate::validate(&observed.name, &bot.spec);
    problems.extend(account_problems(observed));
    let actors = Actors::of(bot);
    let now = format!("{:.0}", observed.now);
    let brake = brake::apply(bot, &old, &actors, &now, &mut trading);
    let credentials = credential_reports(observed);
    let active = problems.is_empty() && !bot.spec.paused && !observed.deleting();
    let current_version = observed_version(observed, &old);
    let plan = active.then(|| plan_rollout(observed, settings, &old, current_version.clone(), &trading, &actors));
    let canary_version = match &plan {
        Some(p) => p.canary_version.clone(),
        None if observed.deleting() => None,
        None => old.canary_version.clone(),
    };
    if canary_version.is_none() && observed.pods.canary.ours().is_none() {
        // The canary's trips go with it.
        trading.trips.retain(|t| t.instance == Instance::Prod);
    }
    let children = match (&plan, observed.deleting_for) {
        (_, Some(deleting_for)) => ChildrenPlan::Stop(stops(observed, settings, deleting_for)),
        (Some(plan), None) => ChildrenPlan::Converge(Box::new(desired::children(
            bot,
            plan,
            settings,
            account_secret(observed),
        ))),
        (None, None) => ChildrenPlan::Hold,
    };
    let mut enforcement = enforcement_status(&old, &trading, canary_version.is_some());
    let audit = audit::enforce(&mut enforcement, &old, &trading, &actors, &brake, &now);
    let mut notices = Vec::new();
    if let Some(plan) = &plan {
        notices.extend(plan.notices.iter().cloned());
    }
    notices.extend(deletion_notices(&old, &children, settings));
    Decision {
        views,
        problems,
        credentials,
        current_version,
        rollout: plan.as_ref().map(|p| p.rollout.clone()).or_else(|| old.rollout.clone()),
        recheck_after: [
            plan.as_ref().and_then(|p| p.recheck_after),
            until_silence_changes(observed),
        ]
        .into_iter()
        .flatten()
        .min(),
        canary_version,
        children,
        enforcement,
        records: plan.as_ref().map(RolloutRecords::of).unwrap_or_default(),
        audit,
        notices,
        trading,
    }
}

/// When the silence of a failing instance next changes a decision (see
/// [`trading::until_silence_changes`]): the bot is reconciled again then, whether or not a scrape
/// round asks (a round only asks when its own view changed, and rounds fall on the deadline).
fn until_silence_changes(observed: &Observed) -> Option<Duration> {
    let unreachable_after = Duration::from_secs(u64::from(observed.bot.spec.metrics.unreachable_after_seconds));
    let staleness = observed.bot.spec.guards.levels(GuardKind::MarketDataStalenessSeconds);
    [&observed.scrapes.prod, &observed.scrapes.canary]
        .into_iter()
        .flatten()
        .filter_map(|o| trading::until_silence_changes(o, observed.instant, unreachable_after, &staleness))
        .min()
}

/// What the guards see of each instance (only fresh scrapes of pods we control count).
fn instance_views(observed: &Observed, memory: &BotMemory) -> PerInstance<Option<InstanceView>> {
    let unreachable_after = Duration::from_secs(u64::from(observed.bot.spec.metrics.unreachable_after_seconds));
    observed.scrapes.map(|instance, scrape| {
        let last_ok = match instance {
            Instance::Prod => memory.last_ok_prod,
            Instance::Canary => memory.last_ok_canary,
        };
        scrape
            .as_ref()
            .map(|o| trading::view_of(o, observed.instant, unreachable_after, last_ok))
    })
}

fn decide_trading(
    observed: &Observed,
    old: &TradingBotStatus,
    views: &PerInstance<Option<InstanceView>>,
    account: Option<&(TradingMode, String)>,
    memory: &mut BotMemory,
) -> TradingOutcome {
    let bot = &observed.bot;
    let ack = bot
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(names::ANNOTATION_ACK_TRIP))
        .map(String::as_str);
    let outcome = trading::decide(
        &TradingInputs {
            spec: &bot.spec,
            status: old,
            deleting: observed.deleting(),
            ack_annotation: ack,
            prod: views.prod.as_ref(),
            canary: views.canary.as_ref(),
            account,
            now: observed.now,
        },
        &mut memory.streaks,
    );
    memory.last_ok_prod = observed.scrapes.prod.as_ref().map_or(0, |o| o.ok_count);
    memory.last_ok_canary = observed.scrapes.canary.as_ref().map_or(0, |o| o.ok_count);
    outcome
}

/// `namespace/name` of the account the bot names.
fn account_label(observed: &Observed) -> Option<String> {
    let reference = observed.bot.spec.account.as_ref()?;
    let (namespace, name) = reference.resolve(&observed.namespace);
    Some(format!("{namespace}/{name}"))
}

/// What the bot's account imposes: its own mode (switches, latched limit trips, deletion), or
/// Halted when the account cannot be found or does not allow this bot (a bot never trades
/// without its account's limits).
fn account_restriction(observed: &Observed) -> Option<(TradingMode, String)> {
    let label = account_label(observed)?;
    Some(match observed.account.as_ref()? {
        AccountLookup::Missing => (
            TradingMode::Halted,
            format!("TradingAccount {label} not found: halted until it exists"),
        ),
        AccountLookup::Found(account) if !account.allows(&observed.namespace) => (
            TradingMode::Halted,
            format!(
                "TradingAccount {label} does not allow bots of namespace {} (allowedNamespaces)",
                observed.namespace
            ),
        ),
        AccountLookup::Found(account) => {
            let trips = account.status.as_ref().map(|s| s.trips.clone()).unwrap_or_default();
            let (mode, _, why) = crate::account::decide::account_mode(account, &trips);
            (mode, format!("TradingAccount {label}: {why}"))
        }
    })
}

/// Problems with the account reference: children are held until they are fixed.
fn account_problems(observed: &Observed) -> Vec<Problem> {
    let problem = |message: String| Problem {
        field: "spec.account".into(),
        message,
    };
    match (observed.account.as_ref(), account_label(observed)) {
        (Some(AccountLookup::Missing), Some(label)) => vec![problem(format!(
            "TradingAccount {label} not found (or not in a namespace this operator watches)"
        ))],
        (Some(AccountLookup::Found(account)), Some(label)) if !account.allows(&observed.namespace) => {
            vec![problem(format!(
                "TradingAccount {label} does not list namespace {} in allowedNamespaces",
                observed.namespace
            ))]
        }
        _ => Vec::new(),
    }
}

/// The credentials Secret of the bot's account, when it names one that allows it.
fn account_secret(observed: &Observed) -> Option<String> {
    match observed.account.as_ref()? {
        AccountLookup::Found(account) => Some(account.spec.credentials_secret.clone()),
        AccountLookup::Missing => None,
    }
}

/// The version prod runs: the ready prod pod's, else what status last recorded.
fn observed_version(observed: &Observed, old: &TradingBotStatus) -> Option<String> {
    observed
        .pods
        .prod
        .ours()
        .filter(|p| p.ready && !p.terminating)
        .and_then(|p| p.version.clone())
        .or_else(|| old.current_version.clone())
}

fn plan_rollout(
    observed: &Observed,
    settings: &Settings,
    old: &TradingBotStatus,
    current_version: Option<String>,
    trading: &TradingOutcome,
    actors: &Actors,
) -> RolloutPlan {
    let status = TradingBotStatus {
        current_version,
        ..old.clone()
    };
    rollout::plan(&RolloutInputs {
        spec: &observed.bot.spec,
        default_image: &settings.bot_image,
        status: &status,
        canary: &views::canary_view(observed, trading),
        prod: &views::prod_view(observed, trading),
        action: views::action_request(observed, old, actors).as_ref(),
        image_by: &actors.spec_field(&["spec", "image"]),
        approved_by: &actors.spec_field(&["spec", "rollout", "approvedVersion"]),
        now: observed.now,
    })
}

fn credential_reports(observed: &Observed) -> Vec<String> {
    [&observed.pods.prod, &observed.pods.canary]
        .into_iter()
        .filter_map(Slot::ours)
        .filter_map(|p| p.credentials_problem.as_ref().map(|m| format!("pod {}: {m}", p.name())))
        .collect()
}

/// Deleting: a pod is stopped once its bot reports Halted with no open orders, when it cannot
/// be reached, or after the halt timeout.
fn stops(observed: &Observed, settings: &Settings, deleting_for: Duration) -> PerInstance<Stop> {
    observed.pods.map(|instance, slot| {
        let Some(pod) = slot.ours() else { return Stop::Nothing };
        if pod.terminating {
            return Stop::Wait;
        }
        let halted = observed
            .scrapes
            .get(instance)
            .as_ref()
            .and_then(|o| o.sample.as_ref())
            .is_some_and(|s| s.trading_mode == Some(TradingMode::Halted) && s.open_orders.unwrap_or(0) == 0);
        let reachable = pod.ip.is_some();
        match (halted, reachable, deleting_for >= settings.halt_timeout) {
            (true, _, _) | (_, false, _) => Stop::Now { timed_out: false },
            (false, true, true) => Stop::Now { timed_out: true },
            (false, true, false) => Stop::Wait,
        }
    })
}

fn deletion_notices(old: &TradingBotStatus, children: &ChildrenPlan, settings: &Settings) -> Vec<Notice> {
    let ChildrenPlan::Stop(stops) = children else {
        return Vec::new();
    };
    let mut notices = Vec::new();
    if old.phase != Some(tradingbot_crds::status::Phase::Terminating) {
        notices.push(Notice::normal(
            Reason::Halting,
            "TradingBot deleted: the bot is halted and its open orders cancelled before it is removed",
        ));
    }
    for (instance, stop) in [(Instance::Prod, stops.prod), (Instance::Canary, stops.canary)] {
        if stop == (Stop::Now { timed_out: true }) {
            notices.push(Notice::warning(
                Reason::HaltTimeout,
                format!(
                    "{instance} bot did not report Halted within {} s; stopping its pod (SIGTERM cancels orders)",
                    settings.halt_timeout.as_secs()
                ),
            ));
        }
    }
    notices
}

/// A bot never reconciled before (no status) that nothing restricts (mode Normal, no trip,
/// acknowledgement, brake or audit entry to record): its first status can wait for the pass's
/// one write after the children, since until then its bot trades by its spec, which is exactly
/// what that status would say (the caller also asks for proof that status writes work in its
/// namespace). Any restriction (its spec's switches, an account, a brake, a trip from a pod
/// that existed before, a deletion) is written before any child is touched.
pub fn enforcement_can_wait(observed: &Observed, decision: &Decision) -> bool {
    let e = &decision.enforcement;
    observed.bot.status.is_none()
        && !observed.deleting()
        && e.mode == Some(TradingMode::Normal)
        && e.mode_sources.is_empty()
        && e.trips.is_empty()
        && e.last_ack.is_none()
        && e.canary_mode.is_none()
        && e.brake.is_none()
        && e.history.is_empty()
}

/// The old status with every trading decision in it: what must reach the API server even if
/// no child can be written.
fn enforcement_status(old: &TradingBotStatus, trading: &TradingOutcome, has_canary: bool) -> TradingBotStatus {
    TradingBotStatus {
        mode: Some(trading.mode.mode),
        mode_reason: Some(trading.mode.reason.clone()),
        mode_sources: trading.mode.sources.clone(),
        canary_mode: has_canary.then(|| trading.canary_mode.unwrap_or(trading.mode.mode)),
        trip_count: Some(trading.trips.len() as u32),
        trips: trading.trips.clone(),
        last_ack: trading.last_ack.clone(),
        ..old.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::fixtures::{self, guarded_spec, observed, ours, pod, scrape};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;
    use tradingbot_crds::TradingBotStatus;
    use tradingbot_crds::mode::ModeSource;

    fn decide_for(observed: &Observed) -> Decision {
        decide(observed, &Settings::for_tests(), &mut BotMemory::default())
    }

    fn running(status: TradingBotStatus) -> TradingBotStatus {
        TradingBotStatus {
            mode: Some(TradingMode::Normal),
            current_version: Some("bot:v1".into()),
            ..status
        }
    }

    #[test]
    fn a_breach_is_in_the_enforcement_status_whatever_happens_to_the_children() {
        let bot = fixtures::bot("btc", guarded_spec(), running(Default::default()));
        let o = observed(
            bot,
            ours(pod("btc", "bot:v1", true)),
            Some(scrape(45, TradingMode::Normal, 0)),
        );
        let d = decide_for(&o);
        assert_eq!(d.enforcement.mode, Some(TradingMode::Halted));
        assert_eq!(d.enforcement.mode_sources, [ModeSource::GuardTrip]);
        assert_eq!(d.enforcement.trips.len(), 1, "the highest level reached is latched");
        assert_eq!(d.enforcement.trips[0].level, TradingMode::Halted);
        assert!(matches!(d.children, ChildrenPlan::Converge(_)));
        assert!(d.trading.notices.iter().any(|n| n.reason == Reason::GuardTripped));
    }

    #[test]
    fn paused_and_invalid_bots_hold_their_children_but_guards_still_act() {
        let mut spec = guarded_spec();
        spec.paused = true;
        let o = observed(
            fixtures::bot("btc", spec.clone(), running(Default::default())),
            ours(pod("btc", "bot:v1", true)),
            Some(scrape(45, TradingMode::Normal, 0)),
        );
        let d = decide_for(&o);
        assert_eq!(d.children, ChildrenPlan::Hold);
        assert_eq!(d.enforcement.mode, Some(TradingMode::Halted));
        spec.paused = false;
        spec.exchange.derivatives = true;
        let o = observed(
            fixtures::bot("btc", spec, running(Default::default())),
            Slot::Absent,
            None,
        );
        let d = decide_for(&o);
        assert_eq!(d.children, ChildrenPlan::Hold);
        assert_eq!(d.problems[0].field, "spec.exchange.derivatives");
    }

    #[test]
    fn deletion_halts_first_and_stops_a_pod_only_once_its_bot_is_halted() {
        let mut bot = fixtures::bot("btc", guarded_spec(), running(Default::default()));
        bot.metadata.deletion_timestamp = Some(Time(Timestamp::from_second(fixtures::NOW - 5).unwrap()));
        let still_trading = observed(
            bot.clone(),
            ours(pod("btc", "bot:v1", true)),
            Some(scrape(1, TradingMode::Normal, 0)),
        );
        let d = decide_for(&still_trading);
        assert_eq!(d.enforcement.mode, Some(TradingMode::Halted));
        assert_eq!(d.enforcement.mode_sources, [ModeSource::Deleting]);
        assert_eq!(
            d.children,
            ChildrenPlan::Stop(PerInstance {
                prod: Stop::Wait,
                canary: Stop::Nothing
            })
        );
        assert!(d.notices.iter().any(|n| n.reason == Reason::Halting));
        assert!(!d.deletion_complete());
        let halted = observed(
            bot.clone(),
            ours(pod("btc", "bot:v1", true)),
            Some(scrape(1, TradingMode::Halted, 0)),
        );
        assert_eq!(
            decide_for(&halted).children,
            ChildrenPlan::Stop(PerInstance {
                prod: Stop::Now { timed_out: false },
                canary: Stop::Nothing
            })
        );
        let mut slow = still_trading.clone();
        slow.deleting_for = Some(Duration::from_secs(61));
        let d = decide_for(&slow);
        assert_eq!(
            d.children,
            ChildrenPlan::Stop(PerInstance {
                prod: Stop::Now { timed_out: true },
                canary: Stop::Nothing
            })
        );
        assert!(d.notices.iter().any(|n| n.reason == Reason::HaltTimeout && n.warning));
        let gone = observed(bot, Slot::Absent, None);
        assert!(decide_for(&gone).deletion_complete());
    }

    #[test]
    fn a_pod_of_another_owner_is_never_scraped_stopped_or_counted() {
        let bot = fixtures::bot("btc", guarded_spec(), running(Default::default()));
        let o = observed(
            bot,
            Slot::Other {
                owner: "TradingBot btc (uid x)".into(),
            },
            None,
        );
        assert_eq!(o.scrape_target(Instance::Prod), None);
        let d = decide_for(&o);
        assert_eq!(
            d.current_version.as_deref(),
            Some("bot:v1"),
            "from status, not from the stranger"
        );
    }

    #[test]
    fn current_version_is_the_ready_prod_pods() {
        let mut spec = guarded_spec();
        spec.rollout.strategy = tradingbot_crds::spec::RolloutStrategy::Direct;
        spec.image = Some("bot:v2".into());
        let bot = fixtures::bot("btc", spec, running(Default::default()));
        let not_ready = observed(bot.clone(), ours(pod("btc", "bot:v2", false)), None);
        assert_eq!(decide_for(&not_ready).current_version.as_deref(), Some("bot:v1"));
        let ready = observed(bot, ours(pod("btc", "bot:v2", true)), None);
        assert_eq!(decide_for(&ready).current_version.as_deref(), Some("bot:v2"));
    }

    fn on_account(account: Option<crate::fleet::AccountLookup>) -> Observed {
        let mut spec = guarded_spec();
        spec.account = Some(tradingbot_crds::account::AccountRef {
            name: "main".into(),
            namespace: Some("accounts".into()),
        });
        let mut o = observed(
            fixtures::bot("btc", spec, running(Default::default())),
            ours(pod("btc", "bot:v1", true)),
            None,
        );
        o.account = account;
        o
    }

    fn shared_account(
        allowed: &[&str],
        trips: Vec<tradingbot_crds::account::AccountTrip>,
    ) -> crate::fleet::AccountLookup {
        let mut a = tradingbot_crds::account::TradingAccount::new(
            "main",
            tradingbot_crds::account::TradingAccountSpec {
                credentials_secret: "coinbase-main".into(),
                allowed_namespaces: allowed.iter().map(|n| n.to_string()).collect(),
                reduce_only: false,
                halted: false,
                limits: Default::default(),
            },
        );
        a.metadata.namespace = Some("accounts".into());
        a.status = Some(tradingbot_crds::account::TradingAccountStatus {
            trips,
            ..Default::default()
        });
        crate::fleet::AccountLookup::Found(std::sync::Arc::new(a))
    }

    #[test]
    fn a_bot_is_never_looser_than_its_account_and_halted_without_it() {
        let missing = decide_for(&on_account(Some(crate::fleet::AccountLookup::Missing)));
        assert_eq!(missing.enforcement.mode, Some(TradingMode::Halted));
        assert_eq!(missing.enforcement.mode_sources, [ModeSource::Account]);
        assert_eq!(
            missing.children,
            ChildrenPlan::Hold,
            "no pod without its account's credentials"
        );
        assert_eq!(missing.problems[0].field, "spec.account");
        let refused = decide_for(&on_account(Some(shared_account(&[], vec![]))));
        assert_eq!(
            refused.enforcement.mode,
            Some(TradingMode::Halted),
            "namespace trading is not allowed"
        );
        assert!(refused.problems[0].message.contains("allowedNamespaces"));
        let trip = tradingbot_crds::account::AccountTrip {
            id: "account-bots-reduceonly-1".into(),
            limit: "bots".into(),
            level: TradingMode::ReduceOnly,
            value: "5".into(),
            threshold: "4".into(),
            time: "t".into(),
        };
        let tripped = decide_for(&on_account(Some(shared_account(&["trading"], vec![trip]))));
        assert_eq!(tripped.enforcement.mode, Some(TradingMode::ReduceOnly));
        assert!(
            tripped
                .enforcement
                .mode_reason
                .as_deref()
                .unwrap()
                .contains("TradingAccount accounts/main")
        );
        let ChildrenPlan::Converge(children) = &tripped.children else {
            panic!("children converge")
        };
        let pod = &children.instances.prod.as_ref().unwrap().pod;
        let volumes = serde_json::to_string(&pod.spec.as_ref().unwrap().volumes).unwrap();
        assert!(
            volumes.contains("coinbase-main"),
            "the account's credentials Secret is mounted"
        );
        let fine = decide_for(&on_account(Some(shared_account(&["trading"], vec![]))));
        assert_eq!(fine.enforcement.mode, Some(TradingMode::Normal));
    }

    #[test]
    fn only_a_new_bot_that_nothing_restricts_has_its_first_status_wait_for_the_children() {
        let new = |spec: tradingbot_crds::TradingBotSpec| {
            observed(fixtures::bot("btc", spec, Default::default()), Slot::Absent, None)
        };
        let without_status = |mut o: Observed| {
            let mut bot = (*o.bot).clone();
            bot.status = None;
            o.bot = std::sync::Arc::new(bot);
            o
        };
        let can_wait = |o: &Observed| enforcement_can_wait(o, &decide_for(o));
        assert!(can_wait(&without_status(new(guarded_spec()))), "a new bot in Normal");
        let mut reduce_only = guarded_spec();
        reduce_only.reduce_only = true;
        let reduce_only = without_status(new(reduce_only));
        assert!(
            !decide_for(&reduce_only).enforcement.history.is_empty() && !can_wait(&reduce_only),
            "spec.reduceOnly restricts it: written first (and audited: who asked for it)"
        );

        let stored = new(guarded_spec());
        assert!(!can_wait(&stored), "a bot with a status: enforcement first, as always");

        let restricted = shared_account(
            &["trading"],
            vec![tradingbot_crds::account::AccountTrip {
                id: "account-bots-reduceonly-1".into(),
                limit: "bots".into(),
                level: TradingMode::ReduceOnly,
                value: "5".into(),
                threshold: "4".into(),
                time: "t".into(),
            }],
        );
        let mut on_restricted = without_status(on_account(Some(restricted)));
        on_restricted.pods.prod = Slot::Absent;
        assert!(
            !can_wait(&on_restricted),
            "an account restricting it: its bot would not know, so status goes first"
        );

        let mut braked = (*without_status(new(guarded_spec())).bot).clone();
        braked.metadata.annotations = Some([(names::ANNOTATION_BRAKE.to_string(), "Halted".to_string())].into());
        assert!(
            !can_wait(&observed(braked, Slot::Absent, None)),
            "a brake is recorded first"
        );
    }

    #[test]
    fn an_emergency_brake_restricts_both_instances_first_and_is_audited_with_its_requester() {
        let mut bot = fixtures::bot("btc", guarded_spec(), running(Default::default()));
        let note = serde_json::json!({"value": "Halted", "by": "alice", "reason": "incident 42", "at": "t"});
        bot.metadata.annotations = Some(
            [
                (names::ANNOTATION_BRAKE.to_string(), "Halted".to_string()),
                (names::audit_annotation(names::ANNOTATION_BRAKE), note.to_string()),
            ]
            .into(),
        );
        let o = observed(
            bot,
            ours(pod("btc", "bot:v1", true)),
            Some(scrape(1, TradingMode::Normal, 0)),
        );
        let d = decide_for(&o);
        assert_eq!(d.enforcement.mode, Some(TradingMode::Halted));
        assert_eq!(d.enforcement.mode_sources, [ModeSource::Brake]);
        assert!(
            d.enforcement
                .mode_reason
                .as_deref()
                .unwrap()
                .contains("by alice: incident 42")
        );
        let brake = d.enforcement.brake.clone().unwrap();
        assert_eq!((brake.by.as_str(), brake.reason.as_str()), ("alice", "incident 42"));
        let kinds: Vec<_> = d.enforcement.history.iter().map(|e| (e.kind, e.who.clone())).collect();
        assert_eq!(
            kinds,
            [
                (tradingbot_crds::audit::AuditKind::BrakeSet, "alice".to_string()),
                (tradingbot_crds::audit::AuditKind::ModeChanged, "alice".to_string())
            ]
        );
        assert!(
            d.trading
                .notices
                .iter()
                .any(|n| n.reason == Reason::BrakeSet && n.warning)
        );
        assert!(
            matches!(d.children, ChildrenPlan::Converge(_)),
            "a brake never stops the operator"
        );
    }

    #[test]
    fn credentials_the_bot_refused_are_reported_from_its_pod() {
        let mut spec = guarded_spec();
        spec.profile = tradingbot_crds::Profile::Prod;
        spec.exchange.credentials_secret = Some("coinbase-prod".into());
        let bot = fixtures::bot("btc", spec, running(Default::default()));
        let message = "credentials from Secret \"coinbase-prod\": no cdp_api_key.json in /var/run/secrets/coinbase";
        let o = observed(bot, ours(fixtures::pod_refusing_credentials("btc", message)), None);
        let d = decide_for(&o);
        assert_eq!(d.credentials, [format!("pod btc: {message}")]);
        assert!(
            matches!(d.children, ChildrenPlan::Converge(_)),
            "the pod is kept: it retries"
        );
    }
}
