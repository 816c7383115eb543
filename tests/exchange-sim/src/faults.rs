//! Fault injection state, driven by `POST /admin/faults`.

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// Fail the next `count` private REST requests with `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailNext {
    pub count: u32,
    pub status: u16,
    /// HTML body (as a fronting proxy would send) instead of JSON.
    #[serde(default)]
    pub html: bool,
}

/// Execute the next `count` create-order requests but answer only after `delay_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeoutNextOrders {
    pub count: u32,
    pub delay_ms: u64,
}

/// Drop every `n`-th WebSocket message (its sequence number is still consumed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WsDropEvery {
    pub n: u64,
}

/// Stall market data for some products (all when `products` is absent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Freeze {
    pub frozen: bool,
    #[serde(default)]
    pub products: Option<Vec<String>>,
}

/// Jump a product's mid price by `percent` (e.g. `-10`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriceShock {
    pub product_id: String,
    #[serde(deserialize_with = "decimal_string_or_number")]
    pub percent: Decimal,
}

/// Body of `POST /admin/faults`; every field is optional and applied in order:
/// `clear` first, then the others.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultRequest {
    #[serde(default, deserialize_with = "flag", skip_serializing_if = "std::ops::Not::not")]
    pub clear: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_next: Option<FailNext>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_next_orders: Option<TimeoutNextOrders>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ws_drop_every: Option<WsDropEvery>,
    #[serde(default, deserialize_with = "flag", skip_serializing_if = "std::ops::Not::not")]
    pub ws_disconnect: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freeze: Option<Freeze>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_shock: Option<PriceShock>,
}

/// Accepts `true`, `{}` or any non-null, non-false value as "do it".
fn flag<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    Ok(!matches!(
        Value::deserialize(deserializer)?,
        Value::Null | Value::Bool(false)
    ))
}

/// Admin convenience: a decimal given as `"-10"` or `-10`.
fn decimal_string_or_number<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Decimal, D::Error> {
    let text = match Value::deserialize(deserializer)? {
        Value::String(s) => s,
        Value::Number(n) => n.to_string(),
        other => return Err(serde::de::Error::custom(format!("expected a decimal, got {other}"))),
    };
    crate::num::parse_decimal(&text).ok_or_else(|| serde::de::Error::custom(format!("invalid decimal {text}")))
}

/// Current injected faults (as returned by the admin API).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultState {
    pub latency_ms: u64,
    pub fail_next: Option<FailNext>,
    pub timeout_next_orders: Option<TimeoutNextOrders>,
    pub ws_drop_every: Option<u64>,
    /// Filled in from the market when reported.
    #[serde(default)]
    pub frozen_products: Vec<String>,
}

impl FaultState {
    /// Consumes one `fail_next` injection, if armed.
    pub fn take_failure(&mut self) -> Option<(u16, bool)> {
        let fail = self.fail_next.as_mut()?;
        let taken = (fail.status, fail.html);
        fail.count = fail.count.saturating_sub(1);
        if fail.count == 0 {
            self.fail_next = None;
        }
        Some(taken)
    }

    /// Consumes one `timeout_next_orders` injection, returning the delay.
    pub fn take_order_delay(&mut self) -> Option<u64> {
        let timeout = self.timeout_next_orders.as_mut()?;
        let delay = timeout.delay_ms;
        timeout.count = timeout.count.saturating_sub(1);
        if timeout.count == 0 {
            self.timeout_next_orders = None;
        }
        Some(delay)
    }
}

/// Validation limits of fault parameters.
pub fn validate(request: &FaultRequest) -> Result<(), String> {
    if request.latency_ms.is_some_and(|ms| ms > 60_000) {
        return Err("latency_ms must be at most 60000".into());
    }
    if let Some(fail) = &request.fail_next
        && !matches!(fail.status, 429 | 500 | 502 | 503)
    {
        return Err("fail_next.status must be 429, 500, 502 or 503".into());
    }
    if request
        .timeout_next_orders
        .as_ref()
        .is_some_and(|t| t.delay_ms > 600_000)
    {
        return Err("timeout_next_orders.delay_ms must be at most 600000".into());
    }
    if let Some(shock) = &request.price_shock
        && (shock.percent <= Decimal::from(-100) || shock.percent > Decimal::from(1_000))
    {
        return Err("price_shock.percent must be in (-100, 1000]".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_consumes() {
        let req: FaultRequest = serde_json::from_str(
            r#"{"fail_next":{"count":2,"status":503},"ws_disconnect":{},"price_shock":{"product_id":"BTC-USD","percent":-10}}"#,
        )
        .unwrap();
        assert!(req.ws_disconnect);
        assert_eq!(req.price_shock.as_ref().unwrap().percent, Decimal::from(-10));
        let mut state = FaultState {
            fail_next: req.fail_next.clone(),
            ..Default::default()
        };
        assert_eq!(state.take_failure(), Some((503, false)));
        assert_eq!(state.take_failure(), Some((503, false)));
        assert_eq!(state.take_failure(), None);
        let bad: FaultRequest = serde_json::from_str(r#"{"fail_next":{"count":1,"status":404}}"#).unwrap();
        assert!(validate(&bad).is_err());
    }
}
