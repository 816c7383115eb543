//! Test fixtures: observations of one bot as the caches and the scraper would present them, so
//! the pure steps (decide, report) are tested on whole scenarios without an API server.

use super::observe::{Observed, PerInstance, PodView, Slot};
use crate::cli::GuardSource;
use crate::scrape::{BotSample, Observation};
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateTerminated, ContainerStatus, Pod, PodCondition, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use rust_decimal::Decimal;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tradingbot_crds::names;
use tradingbot_crds::{Profile, TradingBot, TradingBotSpec, TradingBotStatus, TradingMode};

pub const NOW: i64 = 1_795_219_200;

/// A TradingBot `name` in namespace `trading` with `spec` and `status`.
pub fn bot(name: &str, spec: TradingBotSpec, status: TradingBotStatus) -> TradingBot {
    let mut bot = TradingBot::new(name, spec);
    bot.metadata.namespace = Some("trading".into());
    bot.metadata.uid = Some(format!("uid-{name}"));
    bot.metadata.generation = Some(1);
    bot.metadata.resource_version = Some("100".into());
    bot.status = Some(status);
    bot
}

/// A dev bot with a market data staleness guard (ReduceOnly at 10 s, Halted at 30 s).
pub fn guarded_spec() -> TradingBotSpec {
    let mut spec = TradingBotSpec::for_profile(Profile::Dev);
    spec.image = Some("bot:v1".into());
    spec.guards.market_data_staleness_seconds = Some(tradingbot_crds::spec::SecondsLevels {
        reduce_only_at: Some(10),
        halt_at: Some(30),
    });
    spec
}

/// A running bot pod of `version`, ready or not.
pub fn pod(name: &str, version: &str, ready: bool) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("trading".into()),
            uid: Some(format!("pod-uid-{name}")),
            annotations: Some(BTreeMap::from([(
                names::ANNOTATION_VERSION.to_string(),
                version.to_string(),
            )])),
            ..Default::default()
        },
        spec: None,
        status: Some(PodStatus {
            phase: Some("Running".into()),
            pod_ip: Some("10.88.0.9".into()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                ..Default::default()
            }]),
            container_statuses: Some(vec![ContainerStatus {
                name: "perps-bot".into(),
                ready,
                restart_count: 0,
                ..Default::default()
            }]),
            ..Default::default()
        }),
    }
}

/// A pod whose bot exited because of its credentials, with this termination message.
pub fn pod_refusing_credentials(name: &str, message: &str) -> Pod {
    let mut pod = pod(name, "bot:v1", false);
    let status = pod.status.as_mut().expect("status");
    status.container_statuses = Some(vec![ContainerStatus {
        name: "perps-bot".into(),
        ready: false,
        restart_count: 2,
        last_state: Some(ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: 3,
                message: Some(message.into()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }]);
    pod
}

pub fn ours(pod: Pod) -> Slot<PodView> {
    Slot::Ours(PodView::of(Arc::new(pod)))
}

/// A fresh scrape: the bot reports `staleness` seconds, in `mode`.
pub fn scrape(staleness: i64, mode: TradingMode, open_orders: u64) -> Observation {
    let now = Instant::now();
    Observation {
        ok_count: 5,
        since: now - Duration::from_secs(60),
        last_attempt: now,
        last_ok: Some(now),
        last_ok_at: Some(Timestamp::from_second(NOW).expect("a valid time")),
        last_error: None,
        unheld: false,
        sample: Some(BotSample {
            staleness_max: Some(Decimal::from(staleness)),
            trading_mode: Some(mode),
            open_orders: Some(open_orders),
            ..Default::default()
        }),
        errors_in_window: None,
    }
}

/// What gather would return: `prod` (and maybe `canary`) pods and scrapes.
pub fn observed(bot: TradingBot, prod: Slot<PodView>, prod_scrape: Option<Observation>) -> Observed {
    let deleting_for = bot.metadata.deletion_timestamp.as_ref().map(|_| Duration::from_secs(5));
    Observed {
        namespace: "trading".into(),
        name: bot.metadata.name.clone().unwrap_or_default(),
        uid: bot.metadata.uid.clone().unwrap_or_default(),
        bot: Arc::new(bot),
        deleting_for,
        pods: PerInstance {
            prod,
            canary: Slot::Absent,
        },
        legacy_canary_pod: Slot::Absent,
        scrapes: PerInstance {
            prod: prod_scrape,
            canary: None,
        },
        account: None,
        service_monitor_api: false,
        guard_source: GuardSource::Pods,
        now: Timestamp::from_second(NOW).expect("a valid time"),
        instant: Instant::now(),
    }
}
