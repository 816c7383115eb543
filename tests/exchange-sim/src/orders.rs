//! Orders and fills: request parsing, the stored records and their Coinbase JSON.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::clock::{parse_rfc3339, rfc3339};
use crate::num::{parse_decimal, plain, price_str, round_amount};
use crate::products::ProductSpec;
use crate::side::Side;

/// Size of a market order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarketSize {
    Base(Decimal),
    /// Quote amount to spend (buy, fees included) or to receive (sell, before fees).
    Quote(Decimal),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopDirection {
    Up,
    Down,
}

impl StopDirection {
    pub fn as_str(self) -> &'static str {
        match self {
            StopDirection::Up => "STOP_DIRECTION_STOP_UP",
            StopDirection::Down => "STOP_DIRECTION_STOP_DOWN",
        }
    }
}

/// A supported `order_configuration`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderConfig {
    MarketIoc(MarketSize),
    LimitGtc {
        base_size: Decimal,
        limit_price: Decimal,
        post_only: bool,
    },
    LimitGtd {
        base_size: Decimal,
        limit_price: Decimal,
        end_time: DateTime<Utc>,
        post_only: bool,
    },
    LimitFok {
        base_size: Decimal,
        limit_price: Decimal,
    },
    SorLimitIoc {
        base_size: Decimal,
        limit_price: Decimal,
    },
    StopLimitGtc {
        base_size: Decimal,
        limit_price: Decimal,
        stop_price: Decimal,
        stop_direction: StopDirection,
    },
}

impl OrderConfig {
    pub fn order_type(&self) -> &'static str {
        match self {
            OrderConfig::MarketIoc(_) => "MARKET",
            OrderConfig::StopLimitGtc { .. } => "STOP_LIMIT",
            _ => "LIMIT",
        }
    }

    pub fn time_in_force(&self) -> &'static str {
        match self {
            OrderConfig::MarketIoc(_) | OrderConfig::SorLimitIoc { .. } => "IMMEDIATE_OR_CANCEL",
            OrderConfig::LimitGtd { .. } => "GOOD_UNTIL_DATE_TIME",
            OrderConfig::LimitFok { .. } => "FILL_OR_KILL",
            OrderConfig::LimitGtc { .. } | OrderConfig::StopLimitGtc { .. } => "GOOD_UNTIL_CANCELLED",
        }
    }

    pub fn base_size(&self) -> Option<Decimal> {
        match self {
            OrderConfig::MarketIoc(MarketSize::Base(b)) => Some(*b),
            OrderConfig::MarketIoc(MarketSize::Quote(_)) => None,
            OrderConfig::LimitGtc { base_size, .. }
            | OrderConfig::LimitGtd { base_size, .. }
            | OrderConfig::LimitFok { base_size, .. }
            | OrderConfig::SorLimitIoc { base_size, .. }
            | OrderConfig::StopLimitGtc { base_size, .. } => Some(*base_size),
        }
    }

    pub fn quote_size(&self) -> Option<Decimal> {
        match self {
            OrderConfig::MarketIoc(MarketSize::Quote(q)) => Some(*q),
            _ => None,
        }
    }

    pub fn limit_price(&self) -> Option<Decimal> {
        match self {
            OrderConfig::MarketIoc(_) => None,
            OrderConfig::LimitGtc { limit_price, .. }
            | OrderConfig::LimitGtd { limit_price, .. }
            | OrderConfig::LimitFok { limit_price, .. }
            | OrderConfig::SorLimitIoc { limit_price, .. }
            | OrderConfig::StopLimitGtc { limit_price, .. } => Some(*limit_price),
        }
    }

    pub fn stop_price(&self) -> Option<Decimal> {
        match self {
            OrderConfig::StopLimitGtc { stop_price, .. } => Some(*stop_price),
            _ => None,
        }
    }

    pub fn post_only(&self) -> bool {
        matches!(
            self,
            OrderConfig::LimitGtc { post_only: true, .. } | OrderConfig::LimitGtd { post_only: true, .. }
        )
    }

    pub fn end_time(&self) -> Option<DateTime<Utc>> {
        match self {
            OrderConfig::LimitGtd { end_time, .. } => Some(*end_time),
            _ => None,
        }
    }

    /// The `order_configuration` object as Coinbase echoes it.
    pub fn to_json(&self) -> Value {
        match self {
            OrderConfig::MarketIoc(MarketSize::Base(b)) => {
                json!({ "market_market_ioc": { "base_size": b.to_string() } })
            }
            OrderConfig::MarketIoc(MarketSize::Quote(q)) => {
                json!({ "market_market_ioc": { "quote_size": q.to_string() } })
            }
            OrderConfig::LimitGtc {
                base_size,
                limit_price,
                post_only,
            } => json!({
                "limit_limit_gtc": {
                    "base_size": base_size.to_string(),
                    "limit_price": limit_price.to_string(),
                    "post_only": post_only,
                }
            }),
            OrderConfig::LimitGtd {
                base_size,
                limit_price,
                end_time,
                post_only,
            } => json!({
                "limit_limit_gtd": {
                    "base_size": base_size.to_string(),
                    "limit_price": limit_price.to_string(),
                    "end_time": rfc3339(*end_time),
                    "post_only": post_only,
                }
            }),
            OrderConfig::LimitFok { base_size, limit_price } => json!({
                "limit_limit_fok": {
                    "base_size": base_size.to_string(),
                    "limit_price": limit_price.to_string(),
                }
            }),
            OrderConfig::SorLimitIoc { base_size, limit_price } => json!({
                "sor_limit_ioc": {
                    "base_size": base_size.to_string(),
                    "limit_price": limit_price.to_string(),
                }
            }),
            OrderConfig::StopLimitGtc {
                base_size,
                limit_price,
                stop_price,
                stop_direction,
            } => json!({
                "stop_limit_stop_limit_gtc": {
                    "base_size": base_size.to_string(),
                    "limit_price": limit_price.to_string(),
                    "stop_price": stop_price.to_string(),
                    "stop_direction": stop_direction.as_str(),
                }
            }),
        }
    }
}

/// Body of `POST /orders` and `POST /orders/preview`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CreateOrderBody {
    #[serde(default)]
    pub client_order_id: Option<String>,
    #[serde(default)]
    pub product_id: Option<String>,
    #[serde(default)]
    pub side: Option<String>,
    #[serde(default)]
    pub order_configuration: Option<Value>,
    #[serde(default)]
    pub leverage: Option<String>,
    #[serde(default)]
    pub margin_type: Option<String>,
    // `preview_id` and other fields are accepted and ignored.
}

/// A validated create-order request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderIntent {
    pub client_order_id: String,
    pub product_id: String,
    pub side: Side,
    pub config: OrderConfig,
    pub leverage: Option<Decimal>,
    pub margin_type: Option<String>,
}

/// Why a request could not become an [`OrderIntent`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntentError {
    /// Malformed request: HTTP 400.
    BadRequest(String),
    /// Well-formed but unsupported configuration: a 200 `UNSUPPORTED_ORDER_CONFIGURATION`.
    Unsupported(String),
}

/// Configurations Coinbase has but the simulator does not execute.
const UNSUPPORTED_CONFIGS: [&str; 8] = [
    "market_market_fok",
    "limit_limit_ioc",
    "stop_limit_stop_limit_gtd",
    "trigger_bracket_gtc",
    "trigger_bracket_gtd",
    "twap_limit_gtd",
    "scaled_limit_gtc",
    "sor_limit_fok",
];

impl CreateOrderBody {
    /// Validates the request. Preview requests do not need a `client_order_id`.
    pub fn into_intent(self, require_client_order_id: bool) -> Result<OrderIntent, IntentError> {
        let bad = |m: &str| IntentError::BadRequest(m.to_string());
        let client_order_id = self.client_order_id.unwrap_or_default();
        if require_client_order_id && client_order_id.trim().is_empty() {
            return Err(bad("client_order_id is required"));
        }
        if client_order_id.len() > 128 {
            return Err(bad("client_order_id is too long"));
        }
        let product_id = self
            .product_id
            .filter(|p| !p.is_empty())
            .ok_or_else(|| bad("product_id is required"))?;
        let side = self
            .side
            .as_deref()
            .and_then(Side::parse)
            .ok_or_else(|| bad("side must be BUY or SELL"))?;
        let config = parse_configuration(
            self.order_configuration
                .as_ref()
                .ok_or_else(|| bad("order_configuration is required"))?,
        )?;
        let leverage = match self.leverage.as_deref() {
            None | Some("") => None,
            Some(l) => Some(parse_decimal(l).ok_or_else(|| bad("leverage is not a decimal"))?),
        };
        let margin_type = match self.margin_type.as_deref() {
            None | Some("") => None,
            Some(m @ ("CROSS" | "ISOLATED")) => Some(m.to_string()),
            Some(_) => return Err(bad("margin_type must be CROSS or ISOLATED")),
        };
        Ok(OrderIntent {
            client_order_id,
            product_id,
            side,
            config,
            leverage,
            margin_type,
        })
    }
}

fn parse_configuration(value: &Value) -> Result<OrderConfig, IntentError> {
    let bad = |m: String| IntentError::BadRequest(m);
    let object = value
        .as_object()
        .ok_or_else(|| bad("order_configuration must be an object".into()))?;
    let mut entries = object.iter();
    let (kind, params) = match (entries.next(), entries.next()) {
        (Some(entry), None) => entry,
        (None, _) => {
            return Err(IntentError::Unsupported("order_configuration is empty".into()));
        }
        (Some(_), Some(_)) => {
            return Err(bad("order_configuration must hold exactly one configuration".into()));
        }
    };
    let params = params
        .as_object()
        .ok_or_else(|| bad(format!("{kind} must be an object")))?;
    let decimal = |name: &str| required_decimal(params, kind, name);
    let config = match kind.as_str() {
        "market_market_ioc" => {
            let base = optional_decimal(params, kind, "base_size")?;
            let quote = optional_decimal(params, kind, "quote_size")?;
            match (base, quote) {
                (Some(b), None) => OrderConfig::MarketIoc(MarketSize::Base(b)),
                (None, Some(q)) => OrderConfig::MarketIoc(MarketSize::Quote(q)),
                _ => {
                    return Err(bad(
                        "market_market_ioc needs exactly one of base_size or quote_size".into()
                    ));
                }
            }
        }
        "limit_limit_gtc" => OrderConfig::LimitGtc {
            base_size: decimal("base_size")?,
            limit_price: decimal("limit_price")?,
            post_only: optional_bool(params, kind, "post_only")?,
        },
        "limit_limit_gtd" => {
            let end_time = params
                .get("end_time")
                .and_then(Value::as_str)
                .and_then(parse_rfc3339)
                .ok_or_else(|| bad(format!("{kind}.end_time must be an RFC 3339 time")))?;
            OrderConfig::LimitGtd {
                base_size: decimal("base_size")?,
                limit_price: decimal("limit_price")?,
                end_time,
                post_only: optional_bool(params, kind, "post_only")?,
            }
        }
        "limit_limit_fok" => OrderConfig::LimitFok {
            base_size: decimal("base_size")?,
            limit_price: decimal("limit_price")?,
        },
        "sor_limit_ioc" => OrderConfig::SorLimitIoc {
            base_size: decimal("base_size")?,
            limit_price: decimal("limit_price")?,
        },
        "stop_limit_stop_limit_gtc" => {
            let stop_direction = match params.get("stop_direction").and_then(Value::as_str) {
                Some("STOP_DIRECTION_STOP_UP") => StopDirection::Up,
                Some("STOP_DIRECTION_STOP_DOWN") => StopDirection::Down,
                _ => {
                    return Err(bad(format!(
                        "{kind}.stop_direction must be STOP_DIRECTION_STOP_UP or STOP_DIRECTION_STOP_DOWN"
                    )));
                }
            };
            OrderConfig::StopLimitGtc {
                base_size: decimal("base_size")?,
                limit_price: decimal("limit_price")?,
                stop_price: decimal("stop_price")?,
                stop_direction,
            }
        }
        other if UNSUPPORTED_CONFIGS.contains(&other) => {
            return Err(IntentError::Unsupported(format!(
                "{other} is not supported by the simulator"
            )));
        }
        other => {
            return Err(IntentError::Unsupported(format!("unknown order configuration {other}")));
        }
    };
    Ok(config)
}

fn optional_decimal(params: &Map<String, Value>, kind: &str, name: &str) -> Result<Option<Decimal>, IntentError> {
    match params.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => parse_decimal(s)
            .map(Some)
            .ok_or_else(|| IntentError::BadRequest(format!("{kind}.{name} is not a decimal string"))),
        Some(_) => Err(IntentError::BadRequest(format!(
            "{kind}.{name} must be a decimal string"
        ))),
    }
}

fn required_decimal(params: &Map<String, Value>, kind: &str, name: &str) -> Result<Decimal, IntentError> {
    optional_decimal(params, kind, name)?.ok_or_else(|| IntentError::BadRequest(format!("{kind}.{name} is required")))
}

fn optional_bool(params: &Map<String, Value>, kind: &str, name: &str) -> Result<bool, IntentError> {
    match params.get(name) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(IntentError::BadRequest(format!("{kind}.{name} must be a boolean"))),
    }
}

/// Order lifecycle status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderStatus {
    Pending,
    Open,
    Filled,
    Cancelled,
    Expired,
    Failed,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Pending => "PENDING",
            OrderStatus::Open => "OPEN",
            OrderStatus::Filled => "FILLED",
            OrderStatus::Cancelled => "CANCELLED",
            OrderStatus::Expired => "EXPIRED",
            OrderStatus::Failed => "FAILED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            OrderStatus::Pending,
            OrderStatus::Open,
            OrderStatus::Filled,
            OrderStatus::Cancelled,
            OrderStatus::Expired,
            OrderStatus::Failed,
        ]
        .into_iter()
        .find(|status| status.as_str() == s)
    }

    pub fn is_terminal(self) -> bool {
        !matches!(self, OrderStatus::Pending | OrderStatus::Open)
    }
}

/// Stop-order trigger state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TriggerStatus {
    InvalidOrderType,
    StopPending,
    StopTriggered,
}

impl TriggerStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TriggerStatus::InvalidOrderType => "INVALID_ORDER_TYPE",
            TriggerStatus::StopPending => "STOP_PENDING",
            TriggerStatus::StopTriggered => "STOP_TRIGGERED",
        }
    }
}

/// Maker or taker side of a fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liquidity {
    Maker,
    Taker,
}

impl Liquidity {
    pub fn as_str(self) -> &'static str {
        match self {
            Liquidity::Maker => "MAKER",
            Liquidity::Taker => "TAKER",
        }
    }
}

/// A stored order.
#[derive(Debug, Clone)]
pub struct Order {
    pub id: String,
    /// Creation sequence (orders list newest first by this).
    pub seq: u64,
    pub client_order_id: String,
    pub key_name: String,
    pub portfolio_uuid: String,
    pub product_id: String,
    pub product_type: &'static str,
    pub side: Side,
    pub config: OrderConfig,
    pub status: OrderStatus,
    pub trigger: TriggerStatus,
    pub created_at: DateTime<Utc>,
    pub last_fill_time: Option<DateTime<Utc>>,
    pub filled_size: Decimal,
    pub filled_value: Decimal,
    pub total_fees: Decimal,
    pub number_of_fills: u32,
    /// Funds still reserved, in `hold_currency`.
    pub hold: Decimal,
    /// Hold per unit of unfilled base size.
    pub hold_per_unit: Decimal,
    pub hold_currency: String,
    pub leverage: Decimal,
    pub margin_type: Option<String>,
    pub cancel_message: String,
    /// Accepted edits, oldest first (`edit_history`).
    pub edit_history: Vec<EditRecord>,
}

/// One accepted edit of an order's price and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EditRecord {
    pub price: Decimal,
    pub size: Decimal,
    pub accepted_at: DateTime<Utc>,
}

impl Order {
    /// Unfilled base size (zero for quote-sized market orders once executed).
    pub fn remaining(&self) -> Decimal {
        self.config
            .base_size()
            .map_or(Decimal::ZERO, |b| (b - self.filled_size).max(Decimal::ZERO))
    }

    pub fn is_open(&self) -> bool {
        self.status == OrderStatus::Open
    }

    pub fn average_price(&self) -> Decimal {
        if self.filled_size.is_zero() {
            Decimal::ZERO
        } else {
            round_amount(self.filled_value / self.filled_size)
        }
    }

    pub fn completion_percentage(&self) -> Decimal {
        if self.status == OrderStatus::Filled {
            return Decimal::ONE_HUNDRED;
        }
        let ratio = match (self.config.base_size(), self.config.quote_size()) {
            (Some(b), _) if !b.is_zero() => self.filled_size / b,
            (_, Some(q)) if !q.is_zero() => (self.filled_value + self.total_fees) / q,
            _ => Decimal::ZERO,
        };
        (ratio * Decimal::ONE_HUNDRED).round_dp(2).min(Decimal::ONE_HUNDRED)
    }

    fn total_value_after_fees(&self) -> Decimal {
        match self.side {
            Side::Buy => self.filled_value + self.total_fees,
            Side::Sell => self.filled_value - self.total_fees,
        }
    }

    /// The order object of `GET /orders/historical/{id}` and `/orders/historical/batch`.
    pub fn to_json(&self) -> Value {
        json!({
            "order_id": self.id,
            "product_id": self.product_id,
            "user_id": self.key_name,
            "order_configuration": self.config.to_json(),
            "side": self.side.as_str(),
            "client_order_id": self.client_order_id,
            "status": self.status.as_str(),
            "time_in_force": self.config.time_in_force(),
            "created_time": rfc3339(self.created_at),
            "completion_percentage": plain(self.completion_percentage()),
            "filled_size": plain(self.filled_size),
            "average_filled_price": plain(self.average_price()),
            "fee": "",
            "number_of_fills": self.number_of_fills.to_string(),
            "filled_value": plain(self.filled_value),
            "pending_cancel": false,
            "size_in_quote": self.config.quote_size().is_some(),
            "total_fees": plain(self.total_fees),
            "size_inclusive_of_fees": self.config.quote_size().is_some() && self.side == Side::Buy,
            "total_value_after_fees": plain(self.total_value_after_fees()),
            "trigger_status": self.trigger.as_str(),
            "order_type": self.config.order_type(),
            "reject_reason": "",
            "settled": self.status.is_terminal(),
            "product_type": self.product_type,
            "reject_message": "",
            "cancel_message": self.cancel_message,
            "order_placement_source": "RETAIL_ADVANCED",
            "outstanding_hold_amount": plain(self.hold),
            "is_liquidation": false,
            "last_fill_time": self.last_fill_time.map(rfc3339),
            "edit_history": self.edit_history.iter().map(|e| json!({
                "price": plain(e.price),
                "size": plain(e.size),
                "replace_accept_timestamp": rfc3339(e.accepted_at),
            })).collect::<Vec<_>>(),
            "leverage": if self.product_type == "FUTURE" { plain(self.leverage) } else { String::new() },
            "margin_type": self.margin_type.clone().unwrap_or_default(),
            "retail_portfolio_id": self.portfolio_uuid,
            "originating_order_id": "",
            "attached_order_id": "",
        })
    }

    /// The order object of the `user` WebSocket channel.
    pub fn to_ws_json(&self) -> Value {
        let opt = |d: Option<Decimal>| d.map(plain).unwrap_or_default();
        json!({
            "avg_price": plain(self.average_price()),
            "cancel_reason": self.cancel_message,
            "client_order_id": self.client_order_id,
            "completion_percentage": plain(self.completion_percentage()),
            "contract_expiry_type": if self.product_type == "FUTURE" { "PERPETUAL" } else { "UNKNOWN_CONTRACT_EXPIRY_TYPE" },
            "cumulative_quantity": plain(self.filled_size),
            "filled_value": plain(self.filled_value),
            "leaves_quantity": plain(if self.status.is_terminal() { Decimal::ZERO } else { self.remaining() }),
            "limit_price": opt(self.config.limit_price()),
            "number_of_fills": self.number_of_fills.to_string(),
            "order_id": self.id,
            "order_side": self.side.as_str(),
            "order_type": self.config.order_type(),
            "outstanding_hold_amount": plain(self.hold),
            "post_only": self.config.post_only().to_string(),
            "product_id": self.product_id,
            "product_type": self.product_type,
            "reject_reason": "",
            "retail_portfolio_id": self.portfolio_uuid,
            "risk_managed_by": "UNKNOWN_RISK_MANAGEMENT_TYPE",
            "status": self.status.as_str(),
            "stop_price": opt(self.config.stop_price()),
            "time_in_force": self.config.time_in_force(),
            "total_fees": plain(self.total_fees),
            "total_value_after_fees": plain(self.total_value_after_fees()),
            "trigger_status": self.trigger.as_str(),
            "creation_time": rfc3339(self.created_at),
            "end_time": self.config.end_time().map(rfc3339).unwrap_or_default(),
            "start_time": "",
        })
    }
}

/// One execution of an order.
#[derive(Debug, Clone)]
pub struct Fill {
    pub entry_id: String,
    pub trade_id: String,
    pub order_id: String,
    pub portfolio_uuid: String,
    pub key_name: String,
    pub product_id: String,
    pub side: Side,
    pub price: Decimal,
    pub size: Decimal,
    pub commission: Decimal,
    pub liquidity: Liquidity,
    pub time: DateTime<Utc>,
}

impl Fill {
    /// A fill object of `GET /orders/historical/fills`.
    pub fn to_json(&self, spec: Option<&ProductSpec>) -> Value {
        let price = spec.map_or_else(|| plain(self.price), |s| price_str(self.price, s.quote_increment));
        json!({
            "entry_id": self.entry_id,
            "trade_id": self.trade_id,
            "order_id": self.order_id,
            "trade_time": rfc3339(self.time),
            "trade_type": "FILL",
            "price": price,
            "size": plain(self.size),
            "commission": plain(self.commission),
            "product_id": self.product_id,
            "sequence_timestamp": rfc3339(self.time),
            "liquidity_indicator": self.liquidity.as_str(),
            "size_in_quote": false,
            "user_id": self.key_name,
            "side": self.side.as_str(),
            "retail_portfolio_id": self.portfolio_uuid,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(config: Value) -> CreateOrderBody {
        CreateOrderBody {
            client_order_id: Some("c1".into()),
            product_id: Some("BTC-USD".into()),
            side: Some("BUY".into()),
            order_configuration: Some(config),
            ..Default::default()
        }
    }

    #[test]
    fn parses_each_configuration() {
        let cases = [
            json!({"market_market_ioc": {"quote_size": "10"}}),
            json!({"limit_limit_gtc": {"base_size": "0.1", "limit_price": "100.00", "post_only": true}}),
            json!({"limit_limit_gtd": {"base_size": "0.1", "limit_price": "100", "end_time": "2030-01-01T00:00:00Z"}}),
            json!({"limit_limit_fok": {"base_size": "0.1", "limit_price": "100"}}),
            json!({"sor_limit_ioc": {"base_size": "0.1", "limit_price": "100"}}),
            json!({"stop_limit_stop_limit_gtc": {"base_size": "1", "limit_price": "9", "stop_price": "10", "stop_direction": "STOP_DIRECTION_STOP_DOWN"}}),
        ];
        for case in cases {
            let intent = body(case.clone()).into_intent(true).unwrap();
            assert_eq!(
                intent.config.to_json().as_object().unwrap().keys().next(),
                case.as_object().unwrap().keys().next()
            );
        }
    }

    #[test]
    fn rejects_malformed_and_unsupported() {
        let bad = [
            json!({"market_market_ioc": {}}),
            json!({"market_market_ioc": {"base_size": 1}}),
            json!({"limit_limit_gtc": {"base_size": "1e3", "limit_price": "1"}}),
            json!({"a": {}, "b": {}}),
            json!("market"),
        ];
        for case in bad {
            assert!(matches!(body(case).into_intent(true), Err(IntentError::BadRequest(_))));
        }
        assert!(matches!(
            body(json!({"trigger_bracket_gtc": {}})).into_intent(true),
            Err(IntentError::Unsupported(_))
        ));
        let mut no_id = body(json!({"market_market_ioc": {"quote_size": "10"}}));
        no_id.client_order_id = None;
        assert!(matches!(
            no_id.clone().into_intent(true),
            Err(IntentError::BadRequest(_))
        ));
        assert!(no_id.into_intent(false).is_ok());
    }
}
