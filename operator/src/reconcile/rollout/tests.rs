//! Whole rollouts, step by step, against a simulated world: prod follows what it is told to
//! run, the canary's metrics are whatever the test says.

use super::*;
use tradingbot_crds::Profile;
use tradingbot_crds::actions::parse_rollout_action;
use tradingbot_crds::progressive::{
    AnalysisMetric, AnalysisMetricName, AnalysisPhase, AnalysisSpec, BakeSpec, Comparison, PauseReason,
};
use tradingbot_crds::spec::Promotion;
use tradingbot_crds::status::AckResult;

struct World {
    spec: TradingBotSpec,
    status: TradingBotStatus,
    canary: CanaryView,
    prod: ProdView,
    /// Prod's pod becomes ready on its planned version before the next step.
    prod_follows: bool,
    action: Option<ActionRequest>,
    now: i64,
}

impl World {
    fn new() -> Self {
        let mut spec = TradingBotSpec::for_profile(Profile::Dev);
        spec.image = Some("bot:v1".into());
        spec.rollout.canary.min_healthy_cycles = 3;
        spec.rollout.canary.min_duration_seconds = 60;
        World {
            spec,
            status: TradingBotStatus::default(),
            canary: CanaryView::default(),
            prod: ProdView::default(),
            prod_follows: true,
            action: None,
            now: 1_795_219_200,
        }
    }

    fn step(&mut self) -> RolloutPlan {
        // What prod runs is observed (the ready prod pod), never taken from the plan.
        self.status.current_version = self.prod.ready_image.clone().or(self.status.current_version.clone());
        let plan = plan(&RolloutInputs {
            spec: &self.spec,
            default_image: "bot:default",
            status: &self.status,
            canary: &self.canary,
            prod: &self.prod,
            action: self.action.as_ref(),
            image_by: "argocd-controller",
            approved_by: "argocd-controller",
            now: Timestamp::from_second(self.now).unwrap(),
        });
        self.status.rollout = Some(plan.rollout.clone());
        self.status.rollout_history = plan.history.clone();
        if let Some(record) = &plan.action {
            self.status.last_action = Some(record.clone());
            self.action = None;
        }
        if self.prod_follows {
            // By the next look, prod runs what it was told to run.
            self.prod.ready_image = Some(plan.prod_version.clone());
        }
        plan
    }

    fn phase(&self) -> RolloutPhase {
        self.status.rollout.as_ref().unwrap().phase
    }

    fn ask(&mut self, value: &str) {
        self.action = Some(ActionRequest {
            value: value.into(),
            action: parse_rollout_action(value),
            by: "alice".into(),
            reason: "incident 7".into(),
        });
    }

    fn healthy_canary(&mut self, cycles: u64) {
        self.canary = CanaryView {
            ready: true,
            cycles: Some(cycles),
            cycle_errors: Some(0),
            ..Default::default()
        };
    }

    /// Start a canary of v2 and make it ready.
    fn canary_running(&mut self) {
        self.step();
        self.spec.image = Some("bot:v2".into());
        self.step();
        self.healthy_canary(1);
        self.step();
        assert_eq!(self.phase(), RolloutPhase::CanaryRunning);
    }

    /// v2 through its canary and promoted.
    fn promoted_v2(&mut self) {
        self.canary_running();
        self.healthy_canary(10);
        self.now += 61;
        self.step();
        self.step();
        self.canary = CanaryView::default();
    }

    fn last_action(&self) -> (AckResult, String) {
        let a = self.status.last_action.clone().unwrap();
        (a.result, a.message)
    }
}

fn reasons(plan: &RolloutPlan) -> Vec<&'static str> {
    plan.notices.iter().map(|n| n.reason.as_str()).collect()
}

fn metrics(at: i64, errors: u64) -> MetricsSample {
    MetricsSample {
        counters: CounterSnapshot {
            cycle_errors: errors,
            ..Default::default()
        },
        staleness: Some(Decimal::from(1)),
        at: Timestamp::from_second(at).unwrap(),
    }
}

fn analysis_of(max_errors: &str, gray: Option<&str>) -> AnalysisSpec {
    AnalysisSpec {
        interval_seconds: 10,
        count: 3,
        failure_limit: 0,
        inconclusive_limit: 0,
        metrics: vec![AnalysisMetric {
            name: AnalysisMetricName::CycleErrors,
            max: max_errors.parse().unwrap(),
            inconclusive_above: gray.map(|g| g.parse().unwrap()),
            comparison: Comparison::Absolute,
        }],
    }
}

#[test]
fn first_deployment_needs_no_canary() {
    let mut w = World::new();
    let plan = w.step();
    assert_eq!((plan.prod_version.as_str(), plan.canary_version), ("bot:v1", None));
    assert_eq!(w.phase(), RolloutPhase::Idle);
}

#[test]
fn auto_promotion_after_the_gates_is_recorded_in_the_history() {
    let mut w = World::new();
    w.step();
    w.spec.image = Some("bot:v2".into());
    let plan = w.step();
    assert_eq!(plan.canary_version.as_deref(), Some("bot:v2"));
    assert_eq!(plan.prod_version, "bot:v1");
    assert_eq!(reasons(&plan), ["RolloutStarted"]);
    assert_eq!(plan.audit[0].who, "argocd-controller", "who set spec.image");
    w.healthy_canary(1);
    assert_eq!(reasons(&w.step()), ["CanaryReady"]);
    w.canary.cycles = Some(5);
    w.now += 30;
    assert_eq!(
        w.step().canary_version.as_deref(),
        Some("bot:v2"),
        "min duration not reached"
    );
    w.now += 31;
    let plan = w.step();
    assert_eq!(reasons(&plan), ["CanaryPassed", "Promoting"]);
    assert_eq!((plan.prod_version.as_str(), plan.canary_version), ("bot:v2", None));
    assert_eq!(reasons(&w.step()), ["RolloutPromoted"]);
    assert_eq!(w.phase(), RolloutPhase::Promoted);
    let history = &w.status.rollout_history;
    assert_eq!(history.len(), 1);
    assert_eq!(
        (history[0].revision, history[0].version.as_str(), history[0].outcome),
        (1, "bot:v2", RolloutOutcome::Promoted)
    );
    assert_eq!(history[0].previous_version.as_deref(), Some("bot:v1"));
    assert!(w.step().notices.is_empty(), "a finished rollout stays quiet");
}

#[test]
fn manual_promotion_waits_for_approved_version_or_a_promote_action() {
    let mut w = World::new();
    w.spec.rollout.promotion = Promotion::Manual;
    w.canary_running();
    w.healthy_canary(10);
    w.now += 61;
    let plan = w.step();
    assert_eq!(w.phase(), RolloutPhase::AwaitingPromotion);
    assert!(reasons(&plan).contains(&"AwaitingPromotion"));
    assert!(w.step().notices.is_empty(), "waiting does not repeat the event");
    w.ask("promote@1");
    let plan = w.step();
    assert_eq!(w.phase(), RolloutPhase::Promoting);
    assert_eq!(plan.prod_version, "bot:v2");
    assert_eq!(w.last_action().0, AckResult::Accepted);
    assert!(
        plan.audit
            .iter()
            .any(|a| a.kind == AuditKind::ActionAccepted && a.who == "alice")
    );
}

#[test]
fn approved_version_promotes_and_names_its_committer() {
    let mut w = World::new();
    w.spec.rollout.promotion = Promotion::Manual;
    w.canary_running();
    w.healthy_canary(10);
    w.now += 61;
    w.step();
    w.spec.rollout.approved_version = Some("bot:v2".into());
    let plan = w.step();
    assert_eq!(w.phase(), RolloutPhase::Promoting);
    assert!(plan.audit.iter().any(|a| a.who == "argocd-controller"));
}

#[test]
fn a_failing_canary_aborts_and_is_retried_only_when_asked() {
    let mut w = World::new();
    w.canary_running();
    w.canary.trip = Some("dailyLoss Halted".into());
    let plan = w.step();
    assert_eq!(reasons(&plan), ["RolloutAborted"]);
    assert!(plan.notices[0].warning);
    assert_eq!((plan.prod_version.as_str(), plan.canary_version), ("bot:v1", None));
    assert_eq!(w.phase(), RolloutPhase::Aborted);
    assert_eq!(w.status.rollout_history[0].outcome, RolloutOutcome::Aborted);
    w.canary = CanaryView::default();
    assert_eq!(w.step().canary_version, None, "the same version is not retried");
    w.ask("retry");
    let plan = w.step();
    assert_eq!(
        plan.canary_version.as_deref(),
        Some("bot:v2"),
        "retried without a spec change"
    );
    assert_eq!(w.phase(), RolloutPhase::CanaryStarting);
    assert_eq!(w.status.rollout.as_ref().unwrap().revision, Some(2));
    w.spec.image = Some("bot:v3".into());
    let plan = w.step();
    assert_eq!(plan.canary_version.as_deref(), Some("bot:v3"));
    assert_eq!(w.status.rollout_history[1].outcome, RolloutOutcome::Superseded);
}

#[test]
fn actions_in_the_wrong_state_are_refused_and_recorded_once() {
    let mut w = World::new();
    w.step();
    for value in ["retry", "promote", "pause", "resume", "abort", "undo", "explode"] {
        w.ask(value);
        let plan = w.step();
        let (result, message) = w.last_action();
        assert_eq!(result, AckResult::Refused, "{value}: {message}");
        assert_eq!(reasons(&plan), ["ActionRefused"], "{value}");
        assert_eq!(plan.audit[0].kind, AuditKind::ActionRefused);
    }
    assert_eq!(w.phase(), RolloutPhase::Idle);
}

#[test]
fn too_many_errors_abort() {
    let mut w = World::new();
    w.step();
    w.spec.image = Some("bot:v2".into());
    w.step();
    w.canary = CanaryView {
        ready: true,
        cycles: Some(5),
        cycle_errors: Some(1),
        ..Default::default()
    };
    let plan = w.step();
    assert_eq!(w.phase(), RolloutPhase::Aborted);
    assert!(plan.notices[0].note.contains("maxErrors 0"));
}

#[test]
fn a_crash_looping_canary_aborts() {
    let mut w = World::new();
    w.step();
    w.spec.image = Some("bot:v2".into());
    w.step();
    w.canary = CanaryView {
        restarts: CANARY_MAX_RESTARTS,
        ..Default::default()
    };
    let plan = w.step();
    assert_eq!(w.phase(), RolloutPhase::Aborted);
    assert!(plan.notices[0].note.contains("restarted 3 times"));
}

#[test]
fn reverting_the_image_cancels_and_direct_skips_the_canary() {
    let mut w = World::new();
    w.step();
    w.spec.image = Some("bot:v2".into());
    w.step();
    w.spec.image = Some("bot:v1".into());
    let plan = w.step();
    assert_eq!((reasons(&plan), plan.canary_version), (vec!["RolloutCancelled"], None));
    assert_eq!(w.status.rollout_history[0].outcome, RolloutOutcome::Cancelled);
    w.spec.rollout.strategy = RolloutStrategy::Direct;
    w.spec.image = Some("bot:v9".into());
    let plan = w.step();
    assert_eq!((plan.prod_version.as_str(), plan.canary_version), ("bot:v9", None));
}

#[test]
fn current_version_is_what_prod_is_seen_running() {
    let mut w = World::new();
    w.step();
    w.spec.image = Some("bot:v2".into());
    w.spec.rollout.strategy = RolloutStrategy::Direct;
    w.prod_follows = false;
    let plan = w.step();
    assert_eq!(plan.prod_version, "bot:v2");
    assert_eq!(reasons(&plan), ["VersionChanged"]);
    for _ in 0..3 {
        let plan = w.step();
        assert!(plan.notices.is_empty(), "announced once: {:?}", plan.notices);
        assert_eq!(
            w.status.current_version.as_deref(),
            Some("bot:v1"),
            "prod still runs v1"
        );
    }
    w.prod.ready_image = Some("bot:v2".into());
    w.step();
    assert_eq!(w.status.current_version.as_deref(), Some("bot:v2"));
}

#[test]
fn a_lost_promotion_is_recovered_from_the_prod_pod() {
    let mut w = World::new();
    w.step();
    w.spec.image = Some("bot:v2".into());
    w.step();
    assert_eq!(w.phase(), RolloutPhase::CanaryStarting);
    // The status saying so was lost, but prod already runs the canary's version.
    w.prod.ready_image = Some("bot:v2".into());
    let plan = w.step();
    assert_eq!(w.phase(), RolloutPhase::Promoted);
    assert_eq!((plan.prod_version.as_str(), plan.canary_version), ("bot:v2", None));
}

#[test]
fn the_progress_deadline_aborts_a_canary_that_never_gets_ready_or_stalls() {
    let mut w = World::new();
    w.step();
    w.spec.image = Some("bot:v2".into());
    w.step();
    w.now += 601;
    let plan = w.step();
    assert_eq!(w.phase(), RolloutPhase::Aborted);
    assert!(
        plan.notices[0]
            .note
            .contains("progress deadline: the canary not ready within 600 s")
    );
    // A ready canary whose cycles stop counting.
    let mut w = World::new();
    w.spec.rollout.progress_deadline_seconds = Some(120);
    w.spec.rollout.canary.min_healthy_cycles = 100;
    w.canary_running();
    w.now += 100;
    w.healthy_canary(2);
    w.step();
    assert_eq!(
        w.phase(),
        RolloutPhase::CanaryRunning,
        "a new healthy cycle is progress"
    );
    w.now += 121;
    let plan = w.step();
    assert_eq!(w.phase(), RolloutPhase::Aborted);
    assert!(
        plan.notices[0].note.contains("no new healthy cycle"),
        "{}",
        plan.notices[0].note
    );
}

#[test]
fn a_paused_canary_waits_without_a_deadline_but_still_fails_on_a_trip() {
    let mut w = World::new();
    w.spec.rollout.canary.min_healthy_cycles = 1000;
    w.canary_running();
    w.ask("pause");
    let plan = w.step();
    assert_eq!(reasons(&plan), ["RolloutPaused", "ActionAccepted"]);
    w.healthy_canary(10);
    w.now += 10_000;
    let plan = w.step();
    assert_eq!(
        w.phase(),
        RolloutPhase::CanaryRunning,
        "no promotion, no deadline while paused"
    );
    assert_eq!(plan.canary_version.as_deref(), Some("bot:v2"));
    w.ask("resume");
    w.step();
    assert!(w.status.rollout.as_ref().unwrap().pause.is_none());
    w.ask("pause@2");
    w.step();
    w.canary.trip = Some("drawdownPercent Halted".into());
    w.step();
    assert_eq!(w.phase(), RolloutPhase::Aborted, "a pause never hides a failure");
}

#[test]
fn the_analysis_gates_the_canary_and_a_failure_aborts() {
    let mut w = World::new();
    w.spec.rollout.analysis = Some(analysis_of("0", None));
    w.spec.rollout.canary.min_duration_seconds = 0;
    w.canary_running();
    let start = w.now;
    for (i, errors) in [0, 0, 0, 0].into_iter().enumerate() {
        w.now = start + 10 * i as i64;
        w.canary.metrics = Some(metrics(w.now, errors));
        w.healthy_canary_keep_metrics(10);
        w.step();
    }
    assert_eq!(
        w.phase(),
        RolloutPhase::Promoting,
        "three successful measurements, then promoted"
    );
    w.step();
    assert_eq!(w.phase(), RolloutPhase::Promoted);
    let mut w = World::new();
    w.spec.rollout.analysis = Some(analysis_of("0", None));
    w.canary_running();
    w.canary.metrics = Some(metrics(w.now, 0));
    w.step();
    w.now += 10;
    w.canary.metrics = Some(metrics(w.now, 0));
    w.canary.cycle_errors = Some(0);
    w.step();
    w.now += 10;
    w.canary.metrics = Some(metrics(w.now, 2));
    let plan = w.step();
    assert_eq!(w.phase(), RolloutPhase::Aborted);
    assert!(
        plan.notices[0].note.contains("analysis failed"),
        "{}",
        plan.notices[0].note
    );
}

impl World {
    fn healthy_canary_keep_metrics(&mut self, cycles: u64) {
        let metrics = self.canary.metrics.take();
        self.healthy_canary(cycles);
        self.canary.metrics = metrics;
    }
}

#[test]
fn an_inconclusive_analysis_pauses_for_a_human_who_may_promote() {
    let mut w = World::new();
    w.spec.rollout.analysis = Some(analysis_of("5", Some("1")));
    w.spec.rollout.canary.min_duration_seconds = 0;
    w.canary_running();
    w.canary.metrics = Some(metrics(w.now, 0));
    w.step();
    w.now += 10;
    w.canary.metrics = Some(metrics(w.now, 3));
    w.healthy_canary_keep_metrics(10);
    let plan = w.step();
    assert!(reasons(&plan).contains(&"AnalysisInconclusive"), "{:?}", reasons(&plan));
    let rollout = w.status.rollout.clone().unwrap();
    assert_eq!(rollout.pause.unwrap().reason, PauseReason::AnalysisInconclusive);
    assert_eq!(rollout.analysis.unwrap().phase, AnalysisPhase::Inconclusive);
    w.now += 1000;
    w.step();
    assert_eq!(w.phase(), RolloutPhase::CanaryRunning, "it waits for a human");
    w.ask("promote");
    w.step();
    assert_eq!(
        w.phase(),
        RolloutPhase::Promoting,
        "promote accepts the inconclusive analysis"
    );
    w.step();
    assert_eq!(w.phase(), RolloutPhase::Promoted);
}

#[test]
fn promote_full_skips_the_remaining_gates_of_a_ready_canary() {
    let mut w = World::new();
    w.spec.rollout.analysis = Some(analysis_of("0", None));
    w.spec.rollout.promotion = Promotion::Manual;
    w.step();
    w.spec.image = Some("bot:v2".into());
    w.step();
    w.ask("promote-full");
    w.step();
    assert_eq!(w.last_action().0, AckResult::Refused, "not ready: refused");
    w.healthy_canary(1);
    w.step();
    w.ask("promote-full@2");
    let plan = w.step();
    assert_eq!(w.last_action().0, AckResult::Accepted, "{:?}", w.last_action());
    assert_eq!(plan.prod_version, "bot:v2");
    assert_eq!(w.phase(), RolloutPhase::Promoting);
}

fn baking_world() -> World {
    let mut w = World::new();
    w.spec.rollout.bake = Some(BakeSpec {
        duration_seconds: 300,
        max_restarts: 2,
        analysis: true,
    });
    w.promoted_v2();
    assert_eq!(w.phase(), RolloutPhase::Baking);
    w
}

fn prod_trip(time: &str) -> GuardTrip {
    GuardTrip {
        id: "dailyloss-halted-1".into(),
        guard: "dailyLoss".into(),
        level: tradingbot_crds::TradingMode::Halted,
        value: "1200".into(),
        threshold: "1000".into(),
        time: time.into(),
        instance: tradingbot_crds::Instance::Prod,
    }
}

#[test]
fn a_bake_that_passes_promotes() {
    let mut w = baking_world();
    w.prod.trips = vec![prod_trip("2020-01-01T00:00:00Z")];
    w.now += 100;
    assert_eq!(
        w.step().prod_version,
        "bot:v2",
        "a trip from before the bake does not count"
    );
    w.now += 201;
    let plan = w.step();
    assert_eq!(reasons(&plan), ["RolloutPromoted"]);
    assert_eq!(w.phase(), RolloutPhase::Promoted);
    assert_eq!(
        w.status.rollout_history.last().unwrap().outcome,
        RolloutOutcome::Promoted
    );
}

#[test]
fn a_guard_trip_during_the_bake_rolls_prod_back_once() {
    let mut w = baking_world();
    w.now += 60;
    w.prod.trips = vec![prod_trip(&format!("{:.0}", Timestamp::from_second(w.now).unwrap()))];
    let plan = w.step();
    assert_eq!(reasons(&plan), ["RollingBack"]);
    assert_eq!(plan.prod_version, "bot:v1", "prod goes back to the previous version");
    assert_eq!(w.phase(), RolloutPhase::RollingBack);
    let plan = w.step();
    assert_eq!(reasons(&plan), ["RolledBack"]);
    assert_eq!(w.phase(), RolloutPhase::RolledBack);
    let history = &w.status.rollout_history;
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(
        (history[0].version.as_str(), history[0].outcome),
        ("bot:v2", RolloutOutcome::RolledBack)
    );
    assert!(history[0].reason.contains("guard trip of prod during the bake"));
    // spec.image still names v2: not tried again by itself.
    for _ in 0..3 {
        let plan = w.step();
        assert_eq!(
            (plan.prod_version.as_str(), plan.canary_version.clone()),
            ("bot:v1", None)
        );
        assert!(plan.notices.is_empty());
    }
}

#[test]
fn a_crash_loop_or_a_failed_analysis_during_the_bake_rolls_back() {
    let mut w = baking_world();
    w.prod.restarts = 2;
    let plan = w.step();
    assert!(plan.notices[0].note.contains("crash loop"), "{}", plan.notices[0].note);
    let mut w = World::new();
    w.spec.rollout.analysis = Some(analysis_of("0", None));
    w.spec.rollout.bake = Some(BakeSpec::default());
    w.spec.rollout.canary.min_duration_seconds = 0;
    w.canary_running();
    for i in 0..4 {
        w.now += 10;
        w.canary.metrics = Some(metrics(w.now, 0));
        w.healthy_canary_keep_metrics(10 + i);
        w.step();
    }
    w.step();
    assert_eq!(w.phase(), RolloutPhase::Baking);
    w.prod.metrics = Some(metrics(w.now, 0));
    w.step();
    w.now += 10;
    w.prod.metrics = Some(metrics(w.now, 4));
    let plan = w.step();
    assert_eq!(w.phase(), RolloutPhase::RollingBack);
    assert!(plan.notices[0].note.contains("analysis of prod failed"));
}

#[test]
fn undo_goes_back_a_revision_and_holds_there() {
    let mut w = World::new();
    w.promoted_v2();
    assert_eq!(w.phase(), RolloutPhase::Promoted);
    w.ask("undo");
    let plan = w.step();
    assert_eq!(w.last_action().0, AckResult::Accepted, "{:?}", w.last_action());
    assert_eq!(plan.prod_version, "bot:v1");
    w.step();
    assert_eq!(w.phase(), RolloutPhase::RolledBack);
    let last = w.status.rollout_history.last().unwrap().clone();
    assert_eq!(
        (last.revision, last.version.as_str(), last.outcome),
        (2, "bot:v1", RolloutOutcome::Promoted)
    );
    assert!(last.reason.contains("undo to bot:v1 by alice"), "{}", last.reason);
    assert_eq!(w.step().prod_version, "bot:v1", "spec.image still names v2: held");
    w.ask("undo:1");
    w.step();
    assert_eq!(w.last_action().0, AckResult::Accepted);
    w.step();
    assert_eq!(w.status.current_version.as_deref(), Some("bot:v2"));
    w.ask("undo:9");
    w.step();
    assert!(w.last_action().1.contains("no revision 9"));
}

#[test]
fn the_history_is_bounded() {
    let mut w = World::new();
    w.spec.rollout.revision_history_limit = Some(2);
    w.step();
    for v in 2..6 {
        w.spec.image = Some(format!("bot:v{v}"));
        w.step();
    }
    let history = &w.status.rollout_history;
    assert_eq!(history.len(), 2);
    assert_eq!(history[1].revision, 3, "{history:?}");
}
