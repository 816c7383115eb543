//! `TradingAccount`: one exchange account (or portfolio) shared by several bots, with one set
//! of limits over all of them. Bots name it with `spec.account`; their credentials then come
//! from the account, and their effective mode is never looser than the account's.
//!
//! The limits use the same two levels, latching, acknowledgement and resume rules as a bot's
//! guards, evaluated by the operator on the sum of what it scrapes from the bots.

// kube-derive's repeated `printcolumn(...)` items trip this lint; they are distinct columns.
#![allow(clippy::duplicated_attributes)]

use crate::decimal::NonNegativeDecimal;
use crate::guards::LevelPair;
use crate::mode::{ModeSource, TradingMode};
use crate::spec::{Levels, OBJECT_NAME_PATTERN, ResumePolicy};
use crate::status::AckRecord;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use rust_decimal::Decimal;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// An exchange account shared by several TradingBots, with limits over all of them.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "trading.gpttrader.io",
    version = "v1alpha1",
    kind = "TradingAccount",
    plural = "tradingaccounts",
    shortname = "ta",
    category = "trading",
    namespaced,
    status = "TradingAccountStatus",
    derive = "PartialEq",
    doc = "An exchange account shared by TradingBots, with limits over all of them.",
    printcolumn(name = "Mode", type_ = "string", json_path = ".status.mode"),
    printcolumn(name = "Bots", type_ = "integer", json_path = ".status.aggregate.bots"),
    printcolumn(name = "Daily Loss", type_ = "string", json_path = ".status.aggregate.dailyLoss"),
    printcolumn(name = "Exposure", type_ = "string", json_path = ".status.aggregate.grossExposure"),
    printcolumn(name = "Trips", type_ = "integer", json_path = ".status.tripCount"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.modeReason", priority = 1)
)]
#[serde(rename_all = "camelCase")]
pub struct TradingAccountSpec {
    /// The Secret holding the account's CDP API key (same keys as a bot's
    /// `exchange.credentialsSecret`). Bots on the account mount the Secret of this name from
    /// their own namespace (the operator never reads or copies Secrets).
    #[schemars(length(min = 1, max = 253), pattern(OBJECT_NAME_PATTERN))]
    pub credentials_secret: String,

    /// Namespaces besides the account's own whose TradingBots may use it. Empty: only bots in
    /// the account's namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100), inner(length(min = 1, max = 63)))]
    pub allowed_namespaces: Vec<String>,

    /// Every bot on the account: only orders that shrink a position.
    #[serde(default)]
    pub reduce_only: bool,

    /// Every bot on the account: no orders at all; open orders are cancelled.
    #[serde(default)]
    pub halted: bool,

    #[serde(default)]
    pub limits: AccountLimits,
}

/// Whole-number levels (counts).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CountLevels {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000000))]
    pub reduce_only_at: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000000))]
    pub halt_at: Option<u32>,
}

/// Limits over every bot on the account, each with a ReduceOnly and a Halted level.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccountLimits {
    /// Sum of the bots' daily losses (each bot's own loss since the UTC day started; one bot's
    /// gain never offsets another's loss), in quote currency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_loss: Option<Levels<NonNegativeDecimal>>,
    /// Sum of the bots' gross exposure (absolute position notionals), in quote currency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gross_exposure: Option<Levels<NonNegativeDecimal>>,
    /// Sum of the bots' resting orders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_orders: Option<CountLevels>,
    /// Number of TradingBots on the account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bots: Option<CountLevels>,
    #[serde(default)]
    pub resume: ResumePolicy,
    /// With `resume: Auto`, healthy evaluations in a row before a trip is released.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub healthy_evaluations_before_resume: Option<u32>,
}

/// The account's limits, named as in `spec.limits`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AccountLimit {
    DailyLoss,
    GrossExposure,
    OpenOrders,
    Bots,
}

impl AccountLimit {
    pub const ALL: [AccountLimit; 4] = [
        AccountLimit::DailyLoss,
        AccountLimit::GrossExposure,
        AccountLimit::OpenOrders,
        AccountLimit::Bots,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AccountLimit::DailyLoss => "dailyLoss",
            AccountLimit::GrossExposure => "grossExposure",
            AccountLimit::OpenOrders => "openOrders",
            AccountLimit::Bots => "bots",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        AccountLimit::ALL.into_iter().find(|l| l.as_str() == name)
    }
}

impl std::fmt::Display for AccountLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn count_pair(levels: &CountLevels) -> LevelPair {
    LevelPair {
        reduce_only_at: levels.reduce_only_at.map(Decimal::from),
        halt_at: levels.halt_at.map(Decimal::from),
    }
}

fn decimal_pair(levels: &Levels<NonNegativeDecimal>) -> LevelPair {
    LevelPair {
        reduce_only_at: levels.reduce_only_at.map(|v| v.value()),
        halt_at: levels.halt_at.map(|v| v.value()),
    }
}

impl AccountLimits {
    pub fn levels(&self, limit: AccountLimit) -> LevelPair {
        match limit {
            AccountLimit::DailyLoss => self.daily_loss.as_ref().map(decimal_pair),
            AccountLimit::GrossExposure => self.gross_exposure.as_ref().map(decimal_pair),
            AccountLimit::OpenOrders => self.open_orders.as_ref().map(count_pair),
            AccountLimit::Bots => self.bots.as_ref().map(count_pair),
        }
        .unwrap_or_default()
    }

    pub fn healthy_evaluations_needed(&self) -> u32 {
        self.healthy_evaluations_before_resume
            .unwrap_or(crate::guards::DEFAULT_HEALTHY_CYCLES_BEFORE_RESUME)
    }
}

/// The sums the limits are evaluated on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountTotals {
    pub daily_loss: Decimal,
    pub gross_exposure: Decimal,
    pub open_orders: u64,
    pub bots: u32,
}

impl AccountTotals {
    pub fn value(&self, limit: AccountLimit) -> Decimal {
        match limit {
            AccountLimit::DailyLoss => self.daily_loss,
            AccountLimit::GrossExposure => self.gross_exposure,
            AccountLimit::OpenOrders => Decimal::from(self.open_orders),
            AccountLimit::Bots => Decimal::from(self.bots),
        }
    }
}

/// A limit level crossed and latched.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccountTrip {
    /// Unique id, used to acknowledge the trip.
    pub id: String,
    /// The limit (`dailyLoss`, `grossExposure`, `openOrders`, `bots`).
    pub limit: String,
    /// `ReduceOnly` or `Halted`.
    pub level: TradingMode,
    /// The account total when it tripped.
    pub value: String,
    pub threshold: String,
    /// When it tripped (RFC 3339).
    pub time: String,
}

/// Every limit level the totals reach: at most one per limit (its highest).
pub fn breaches(limits: &AccountLimits, totals: &AccountTotals) -> Vec<(AccountLimit, TradingMode, Decimal, Decimal)> {
    AccountLimit::ALL
        .into_iter()
        .filter_map(|limit| {
            let value = totals.value(limit);
            let (level, threshold) = limits.levels(limit).breach(value)?;
            Some((limit, level, value, threshold))
        })
        .collect()
}

/// Trips to latch: a breach latches unless a trip of that limit at that or a stricter level is.
pub fn new_trips(
    latched: &[AccountTrip],
    limits: &AccountLimits,
    totals: &AccountTotals,
    unix_seconds: i64,
    rfc3339_now: &str,
) -> Vec<AccountTrip> {
    breaches(limits, totals)
        .into_iter()
        .filter(|(limit, level, _, _)| !latched.iter().any(|t| t.limit == limit.as_str() && t.level >= *level))
        .map(|(limit, level, value, threshold)| AccountTrip {
            id: format!(
                "account-{}-{}-{unix_seconds}",
                limit.as_str().to_ascii_lowercase(),
                level.as_str().to_ascii_lowercase()
            ),
            limit: limit.as_str().to_string(),
            level,
            value: value.normalize().to_string(),
            threshold: threshold.normalize().to_string(),
            time: rfc3339_now.to_string(),
        })
        .collect()
}

/// Is `trip`'s limit back under the trip's level by `totals`?
pub fn has_recovered(trip: &AccountTrip, limits: &AccountLimits, totals: &AccountTotals) -> Result<(), String> {
    let limit = AccountLimit::parse(&trip.limit).ok_or_else(|| format!("unknown limit {:?}", trip.limit))?;
    let value = totals.value(limit);
    match limits.levels(limit).breach(value) {
        Some((level, threshold)) if level >= trip.level => Err(format!(
            "{limit} is still at {} (>= {level} level {threshold})",
            value.normalize()
        )),
        _ => Ok(()),
    }
}

/// The mode latched trips impose, and a reason naming the strictest ones.
pub fn mode_of_trips(trips: &[AccountTrip]) -> (TradingMode, String) {
    let mode = trips.iter().map(|t| t.level).max().unwrap_or_default();
    let names: Vec<String> = trips
        .iter()
        .filter(|t| t.level == mode && mode != TradingMode::Normal)
        .map(|t| {
            format!(
                "account limit {} at {} (>= {}) [trip {}]",
                t.limit, t.value, t.threshold, t.id
            )
        })
        .collect();
    (mode, names.join("; "))
}

/// One bot on the account, as the account's status shows it.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccountBot {
    pub namespace: String,
    pub name: String,
    /// Its daily loss as last scraped (losses only: a gain counts as 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_loss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gross_exposure: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_orders: Option<u64>,
    /// The bot's effective mode as its status says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<TradingMode>,
    /// The operator has metrics of this bot (its figures are in the totals).
    pub reporting: bool,
}

/// The account's totals as status shows them.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccountAggregate {
    pub daily_loss: String,
    pub gross_exposure: String,
    pub open_orders: u64,
    pub bots: u32,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TradingAccountStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The account's own mode: the most restrictive of `spec.halted`, `spec.reduceOnly`, its
    /// latched trips and a deletion in progress. Every bot on the account is at least this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<TradingMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mode_sources: Vec<ModeSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregate: Option<AccountAggregate>,
    /// Each bot's contribution.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bots: Vec<AccountBot>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trips: Vec<AccountTrip>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trip_count: Option<u32>,
    /// The last acknowledgement processed (annotation `trading.gpttrader.io/ack-trip`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_ack: Option<AckRecord>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// A TradingBot's reference to its account (`spec.account`).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccountRef {
    /// The TradingAccount's name.
    #[schemars(length(min = 1, max = 253), pattern(OBJECT_NAME_PATTERN))]
    pub name: String,
    /// Its namespace; the bot's own when omitted (another namespace must be in the account's
    /// `allowedNamespaces`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub namespace: Option<String>,
}

impl AccountRef {
    /// (namespace, name) of the account, for a bot in `bot_namespace`.
    pub fn resolve(&self, bot_namespace: &str) -> (String, String) {
        (
            self.namespace.clone().unwrap_or_else(|| bot_namespace.to_string()),
            self.name.clone(),
        )
    }
}

impl TradingAccount {
    /// May a bot in `namespace` use this account?
    pub fn allows(&self, namespace: &str) -> bool {
        self.metadata.namespace.as_deref() == Some(namespace)
            || self.spec.allowed_namespaces.iter().any(|n| n == namespace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> AccountLimits {
        AccountLimits {
            gross_exposure: Some(Levels {
                reduce_only_at: Some("1000".parse().unwrap()),
                halt_at: Some("2000".parse().unwrap()),
            }),
            bots: Some(CountLevels {
                reduce_only_at: Some(4),
                halt_at: None,
            }),
            ..Default::default()
        }
    }

    fn totals(exposure: i64, bots: u32) -> AccountTotals {
        AccountTotals {
            gross_exposure: Decimal::from(exposure),
            bots,
            ..Default::default()
        }
    }

    #[test]
    fn the_sum_trips_each_limit_once_at_its_highest_level() {
        let trips = new_trips(&[], &limits(), &totals(1500, 3), 100, "t");
        assert_eq!(trips.len(), 1);
        assert_eq!(
            (trips[0].limit.as_str(), trips[0].level),
            ("grossExposure", TradingMode::ReduceOnly)
        );
        assert!(
            new_trips(&trips, &limits(), &totals(1600, 3), 101, "t").is_empty(),
            "already latched"
        );
        let halted = new_trips(&trips, &limits(), &totals(2500, 4), 102, "t");
        let levels: Vec<(&str, TradingMode)> = halted.iter().map(|t| (t.limit.as_str(), t.level)).collect();
        assert_eq!(
            levels,
            [
                ("grossExposure", TradingMode::Halted),
                ("bots", TradingMode::ReduceOnly)
            ]
        );
        let mut all = trips.clone();
        all.extend(halted);
        assert_eq!(mode_of_trips(&all).0, TradingMode::Halted);
    }

    #[test]
    fn recovery_is_judged_against_the_trips_level() {
        let trip = new_trips(&[], &limits(), &totals(2500, 1), 100, "t").remove(0);
        assert!(
            has_recovered(&trip, &limits(), &totals(1500, 1)).is_ok(),
            "below Halted"
        );
        assert!(has_recovered(&trip, &limits(), &totals(2000, 1)).is_err());
    }

    #[test]
    fn only_the_accounts_namespace_and_allowed_ones_may_use_it() {
        let mut account = TradingAccount::new(
            "main",
            TradingAccountSpec {
                credentials_secret: "coinbase-main".into(),
                allowed_namespaces: vec!["team-b".into()],
                reduce_only: false,
                halted: false,
                limits: AccountLimits::default(),
            },
        );
        account.metadata.namespace = Some("team-a".into());
        assert!(account.allows("team-a") && account.allows("team-b") && !account.allows("team-c"));
        let reference = AccountRef {
            name: "main".into(),
            namespace: None,
        };
        assert_eq!(reference.resolve("team-a"), ("team-a".into(), "main".into()));
    }
}
