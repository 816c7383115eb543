//! The JSON shapes of the Advanced Trade API, read leniently: decimals arrive as strings (or
//! occasionally numbers), optional fields may be missing, null or empty. Every value that
//! reaches the bot is checked here: unparseable or absurd numbers become
//! [`BrokerError::Protocol`], never a panic.

use crate::broker::BrokerError;
use rust_decimal::Decimal;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use std::str::FromStr;

/// Largest magnitude accepted for any price, size or balance. Products of two such values
/// stay far inside `Decimal`'s range, so the bot's arithmetic on them cannot overflow.
pub const MAX_MAGNITUDE: Decimal = Decimal::from_parts(0x107A_4000, 0x5AF3, 0, false, 0); // 1e14

fn shorten(text: &str) -> String {
    let clean: String = text.chars().filter(|c| !c.is_control()).take(40).collect();
    if text.chars().count() > 40 {
        format!("{clean}...")
    } else {
        clean
    }
}

/// Parse a decimal the exchange sent in `field`.
pub fn parse_decimal(field: &str, text: &str) -> Result<Decimal, BrokerError> {
    let trimmed = text.trim();
    let bad = || BrokerError::Protocol(format!("{field}: {:?} is not a usable decimal", shorten(trimmed)));
    if trimmed.is_empty() || trimmed.len() > 64 {
        return Err(bad());
    }
    let value = Decimal::from_str(trimmed)
        .or_else(|_| Decimal::from_scientific(trimmed))
        .map_err(|_| bad())?;
    if value.abs() > MAX_MAGNITUDE {
        return Err(BrokerError::Protocol(format!(
            "{field}: {} is out of range",
            shorten(trimmed)
        )));
    }
    Ok(value.normalize())
}

/// A decimal field: string, number or null.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Num(Option<String>);

impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Value::deserialize(deserializer)? {
            Value::Null => Ok(Num(None)),
            Value::String(s) => Ok(Num(Some(s))),
            Value::Number(n) => Ok(Num(Some(n.to_string()))),
            Value::Bool(_) => Err(D::Error::custom("expected a decimal, got a boolean")),
            Value::Array(_) => Err(D::Error::custom("expected a decimal, got an array")),
            Value::Object(_) => Err(D::Error::custom("expected a decimal, got an object")),
        }
    }
}

impl Num {
    /// The value, required.
    pub fn req(&self, field: &str) -> Result<Decimal, BrokerError> {
        self.opt(field)?
            .ok_or_else(|| BrokerError::Protocol(format!("{field} is missing")))
    }

    /// The value; missing, null and "" are `None`.
    pub fn opt(&self, field: &str) -> Result<Option<Decimal>, BrokerError> {
        match self.0.as_deref().map(str::trim) {
            None | Some("") => Ok(None),
            Some(text) => parse_decimal(field, text).map(Some),
        }
    }

    /// A whole number (e.g. unix seconds sent as a string).
    pub fn int(&self, field: &str) -> Result<i64, BrokerError> {
        let text = self.0.as_deref().map(str::trim).unwrap_or_default();
        text.parse::<i64>()
            .map_err(|_| BrokerError::Protocol(format!("{field}: {:?} is not an integer", shorten(text))))
    }
}

/// A boolean that may arrive as `true`, `"true"` or be missing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flag(pub Option<bool>);

impl<'de> Deserialize<'de> for Flag {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Value::deserialize(deserializer)? {
            Value::Null => Ok(Flag(None)),
            Value::Bool(b) => Ok(Flag(Some(b))),
            Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(Flag(Some(true))),
            Value::String(s) if s.eq_ignore_ascii_case("false") || s.is_empty() => Ok(Flag(Some(false))),
            _ => Err(D::Error::custom("expected a boolean")),
        }
    }
}

impl Flag {
    pub fn is_true(self) -> bool {
        self.0 == Some(true)
    }
}

/// A list that may be missing or null.
fn list<'de, D: Deserializer<'de>, T: Deserialize<'de>>(deserializer: D) -> Result<Vec<T>, D::Error> {
    Ok(Option::<Vec<T>>::deserialize(deserializer)?.unwrap_or_default())
}

/// A string that may be missing, null, or (leniently) a number.
fn text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    match Value::deserialize(deserializer)? {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s)),
        Value::Number(n) => Ok(Some(n.to_string())),
        Value::Bool(b) => Ok(Some(b.to_string())),
        _ => Err(D::Error::custom("expected a string")),
    }
}

/// Unix milliseconds of an RFC 3339 time.
pub fn parse_time_ms(field: &str, text: &str) -> Result<i64, BrokerError> {
    k8s_openapi::jiff::Timestamp::from_str(text.trim())
        .map(|t| t.as_millisecond())
        .map_err(|_| BrokerError::Protocol(format!("{field}: {:?} is not an RFC 3339 time", shorten(text))))
}

/// Decode a whole response body.
pub fn decode<T: for<'de> Deserialize<'de>>(what: &str, body: &[u8]) -> Result<T, BrokerError> {
    serde_json::from_slice(body).map_err(|e| {
        BrokerError::Protocol(format!(
            "{what}: malformed JSON ({}, line {} column {})",
            match e.classify() {
                serde_json::error::Category::Io => "read error",
                serde_json::error::Category::Syntax => "syntax error",
                serde_json::error::Category::Data => "unexpected shape",
                serde_json::error::Category::Eof => "truncated",
            },
            e.line(),
            e.column()
        ))
    })
}

/// Coinbase's "no particular reason" values, which say less than any other field.
pub fn is_placeholder_reason(reason: &str) -> bool {
    matches!(
        reason.trim(),
        "" | "UNKNOWN"
            | "UNKNOWN_FAILURE_REASON"
            | "UNKNOWN_PREVIEW_FAILURE_REASON"
            | "UNKNOWN_CANCEL_FAILURE_REASON"
            | "UNKNOWN_ERROR"
    )
}

// ----- errors ------------------------------------------------------------------------------

/// The body of a non-2xx JSON answer.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ErrorBody {
    #[serde(deserialize_with = "text")]
    pub error: Option<String>,
    #[serde(deserialize_with = "text")]
    pub error_details: Option<String>,
    #[serde(deserialize_with = "text")]
    pub message: Option<String>,
}

// ----- accounts ----------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Money {
    pub value: Num,
    #[serde(deserialize_with = "text")]
    pub currency: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Account {
    #[serde(deserialize_with = "text")]
    pub uuid: Option<String>,
    #[serde(deserialize_with = "text")]
    pub currency: Option<String>,
    pub available_balance: Money,
    pub hold: Money,
    #[serde(rename = "type", deserialize_with = "text")]
    pub kind: Option<String>,
    #[serde(deserialize_with = "text")]
    pub retail_portfolio_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct AccountsPage {
    #[serde(deserialize_with = "list")]
    pub accounts: Vec<Account>,
    pub has_next: Flag,
    #[serde(deserialize_with = "text")]
    pub cursor: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct KeyPermissions {
    pub can_view: Flag,
    pub can_trade: Flag,
    pub can_transfer: Flag,
    #[serde(deserialize_with = "text")]
    pub portfolio_uuid: Option<String>,
    #[serde(deserialize_with = "text")]
    pub portfolio_type: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ServerTime {
    #[serde(deserialize_with = "text")]
    pub iso: Option<String>,
    #[serde(rename = "epochSeconds")]
    pub epoch_seconds: Num,
    #[serde(rename = "epochMillis")]
    pub epoch_millis: Num,
}

// ----- products and market data ------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct PerpetualDetails {
    pub max_leverage: Num,
    pub funding_rate: Num,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct FutureDetails {
    pub contract_size: Num,
    #[serde(deserialize_with = "text")]
    pub contract_expiry_type: Option<String>,
    pub perpetual_details: Option<PerpetualDetails>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Product {
    #[serde(deserialize_with = "text")]
    pub product_id: Option<String>,
    pub price: Num,
    pub base_increment: Num,
    pub quote_increment: Num,
    pub base_min_size: Num,
    pub base_max_size: Num,
    pub quote_min_size: Num,
    #[serde(deserialize_with = "text")]
    pub status: Option<String>,
    pub trading_disabled: Flag,
    pub is_disabled: Flag,
    pub cancel_only: Flag,
    pub limit_only: Flag,
    pub post_only: Flag,
    #[serde(deserialize_with = "text")]
    pub product_type: Option<String>,
    #[serde(deserialize_with = "text")]
    pub product_venue: Option<String>,
    pub future_product_details: Option<FutureDetails>,
}

impl Product {
    pub fn is_perpetual(&self) -> bool {
        self.future_product_details
            .as_ref()
            .is_some_and(|d| d.perpetual_details.is_some() || d.contract_expiry_type.as_deref() == Some("PERPETUAL"))
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ProductsPage {
    #[serde(deserialize_with = "list")]
    pub products: Vec<Product>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct WireCandle {
    pub start: Num,
    pub low: Num,
    pub high: Num,
    pub open: Num,
    pub close: Num,
    pub volume: Num,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct CandlesPage {
    #[serde(deserialize_with = "list")]
    pub candles: Vec<WireCandle>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Level {
    pub price: Num,
    pub size: Num,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct PriceBook {
    #[serde(deserialize_with = "text")]
    pub product_id: Option<String>,
    #[serde(deserialize_with = "list")]
    pub bids: Vec<Level>,
    #[serde(deserialize_with = "list")]
    pub asks: Vec<Level>,
    #[serde(deserialize_with = "text")]
    pub time: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct BestBidAsk {
    #[serde(deserialize_with = "list")]
    pub pricebooks: Vec<PriceBook>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ProductBook {
    pub pricebook: Option<PriceBook>,
}

// ----- orders ------------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct OrderError {
    #[serde(deserialize_with = "text")]
    pub error: Option<String>,
    #[serde(deserialize_with = "text")]
    pub message: Option<String>,
    #[serde(deserialize_with = "text")]
    pub error_details: Option<String>,
    #[serde(deserialize_with = "text")]
    pub preview_failure_reason: Option<String>,
    #[serde(deserialize_with = "text")]
    pub new_order_failure_reason: Option<String>,
}

impl OrderError {
    /// The most specific reason code, skipping Coinbase's "unknown" placeholders.
    pub fn reason(&self) -> Option<String> {
        [
            &self.new_order_failure_reason,
            &self.error,
            &self.preview_failure_reason,
        ]
        .into_iter()
        .flatten()
        .map(|r| r.trim())
        .find(|r| !is_placeholder_reason(r))
        .map(str::to_string)
    }

    pub fn text(&self) -> String {
        [&self.message, &self.error_details]
            .into_iter()
            .flatten()
            .map(|m| m.trim())
            .find(|m| !m.is_empty())
            .unwrap_or("no message")
            .chars()
            .take(300)
            .collect()
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct SuccessResponse {
    #[serde(deserialize_with = "text")]
    pub order_id: Option<String>,
    #[serde(deserialize_with = "text")]
    pub client_order_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct CreateOrderResponse {
    pub success: Flag,
    pub success_response: Option<SuccessResponse>,
    pub error_response: Option<OrderError>,
    #[serde(deserialize_with = "text")]
    pub failure_reason: Option<String>,
    /// Older responses put the order id at the top level.
    #[serde(deserialize_with = "text")]
    pub order_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct WireOrder {
    #[serde(deserialize_with = "text")]
    pub order_id: Option<String>,
    #[serde(deserialize_with = "text")]
    pub client_order_id: Option<String>,
    #[serde(deserialize_with = "text")]
    pub product_id: Option<String>,
    #[serde(deserialize_with = "text")]
    pub side: Option<String>,
    #[serde(deserialize_with = "text")]
    pub status: Option<String>,
    pub order_configuration: Option<serde_json::Map<String, Value>>,
    pub filled_size: Num,
    pub average_filled_price: Num,
    pub total_fees: Num,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct OrderEnvelope {
    pub order: Option<WireOrder>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct OrdersPage {
    #[serde(deserialize_with = "list")]
    pub orders: Vec<WireOrder>,
    pub has_next: Flag,
    #[serde(deserialize_with = "text")]
    pub cursor: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct PreviewResponse {
    pub order_total: Num,
    pub commission_total: Num,
    #[serde(deserialize_with = "list")]
    pub errs: Vec<Value>,
    #[serde(deserialize_with = "list")]
    pub warning: Vec<Value>,
    pub best_bid: Num,
    pub best_ask: Num,
    pub slippage: Num,
    #[serde(deserialize_with = "text")]
    pub preview_id: Option<String>,
    pub success: Flag,
    pub error_response: Option<OrderError>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct CancelItem {
    pub success: Flag,
    #[serde(deserialize_with = "text")]
    pub failure_reason: Option<String>,
    #[serde(deserialize_with = "text")]
    pub order_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct BatchCancelResponse {
    #[serde(deserialize_with = "list")]
    pub results: Vec<CancelItem>,
}

// ----- derivatives -------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct IntxPosition {
    #[serde(deserialize_with = "text")]
    pub product_id: Option<String>,
    #[serde(deserialize_with = "text")]
    pub symbol: Option<String>,
    pub net_size: Num,
    pub entry_vwap: Option<Money>,
    pub vwap: Option<Money>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct IntxPositions {
    #[serde(deserialize_with = "list")]
    pub positions: Vec<IntxPosition>,
}

/// A short human description of a JSON value (for messages about shapes).
pub fn value_text(value: &Value) -> String {
    match value {
        Value::String(s) => shorten(s),
        other => shorten(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn decimals_parse_strictly_and_never_panic() {
        assert_eq!(MAX_MAGNITUDE, dec!(100000000000000));
        assert_eq!(parse_decimal("p", " 0.00000001 ").unwrap(), dec!(0.00000001));
        assert_eq!(parse_decimal("p", "1e-8").unwrap(), dec!(0.00000001));
        assert_eq!(parse_decimal("p", "95000.10").unwrap(), dec!(95000.1));
        for bad in [
            "",
            "abc",
            "1e400",
            "NaN",
            "99999999999999999999999999999999999",
            "1e15",
            "--1",
        ] {
            let err = parse_decimal("price", bad).unwrap_err();
            assert!(
                matches!(err, BrokerError::Protocol(ref m) if m.contains("price")),
                "{bad}: {err}"
            );
        }
        let long = "9".repeat(10_000);
        assert!(parse_decimal("p", &long).unwrap_err().to_string().len() < 200);
    }

    #[test]
    fn lenient_shapes() {
        let p: Product = serde_json::from_str(
            r#"{"product_id":"BTC-USD","base_increment":0.001,"quote_increment":"0.01","trading_disabled":"false","status":null,"extra":[1]}"#,
        )
        .unwrap();
        assert_eq!(p.base_increment.req("b").unwrap(), dec!(0.001));
        assert_eq!(p.base_min_size.opt("m").unwrap(), None);
        assert!(!p.trading_disabled.is_true());
        let page: AccountsPage = serde_json::from_str(r#"{"accounts":null,"has_next":false}"#).unwrap();
        assert!(page.accounts.is_empty());
        assert!(decode::<AccountsPage>("accounts", b"<html>429</html>").is_err());
        assert!(decode::<AccountsPage>("accounts", br#"{"accounts":[{"available_balance":{"value":true}}]}"#).is_err());
        assert_eq!(parse_time_ms("t", "1970-01-01T00:00:01.5Z").unwrap(), 1500);
    }

    #[test]
    fn order_errors_pick_the_specific_reason() {
        let e: OrderError = serde_json::from_str(
            r#"{"error":"UNTRADABLE_PRODUCT","new_order_failure_reason":"UNKNOWN_FAILURE_REASON","message":"trading disabled"}"#,
        )
        .unwrap();
        assert_eq!(e.reason().as_deref(), Some("UNTRADABLE_PRODUCT"));
        assert_eq!(e.text(), "trading disabled");
    }
}
