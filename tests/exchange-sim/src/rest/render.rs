//! JSON pieces shared by several endpoints.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use serde::ser::Error as _;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::market::ProductMarket;
use crate::market::book::Level;
use crate::num::{plain, price_str};
use crate::products::ProductSpec;

/// A decimal rendered as a JSON *number* (for the few fields Coinbase sends as numbers),
/// written digit for digit without passing through a float.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonNumber(pub Decimal);

impl Serialize for JsonNumber {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        RawValue::from_string(plain(self.0))
            .map_err(S::Error::custom)?
            .serialize(serializer)
    }
}

/// `{"value": "12.5", "currency": "USD"}`.
pub fn money(value: Decimal, currency: &str) -> Value {
    json!({ "value": plain(value), "currency": currency })
}

fn levels_json(levels: &[Level], spec: &ProductSpec) -> Vec<Value> {
    levels
        .iter()
        .map(|l| json!({ "price": price_str(l.price, spec.quote_increment), "size": plain(l.size) }))
        .collect()
}

/// A pricebook (`best_bid_ask`, `product_book`) with at most `depth` levels per side.
pub fn pricebook(product: &ProductMarket, depth: usize) -> Value {
    let spec = &product.spec;
    let bids: Vec<Level> = product.book.bids().into_iter().take(depth).collect();
    let asks: Vec<Level> = product.book.asks().into_iter().take(depth).collect();
    json!({
        "product_id": spec.id,
        "bids": levels_json(&bids, spec),
        "asks": levels_json(&asks, spec),
        "time": crate::clock::rfc3339(product.book.time),
    })
}

pub fn currency_name(code: &str) -> &str {
    match code {
        "BTC" => "Bitcoin",
        "ETH" => "Ethereum",
        "SOL" => "Solana",
        "XRP" => "XRP",
        "LTC" => "Litecoin",
        "ADA" => "Cardano",
        "DOGE" => "Dogecoin",
        "BCH" => "Bitcoin Cash",
        "AVAX" => "Avalanche",
        "LINK" => "Chainlink",
        "USD" => "US Dollar",
        "USDC" => "USDC",
        other => other,
    }
}

/// Next funding time of a perpetual (funding is hourly).
fn next_funding(now: DateTime<Utc>) -> String {
    let secs = now.timestamp();
    let next = secs - secs.rem_euclid(3_600) + 3_600;
    crate::clock::from_unix(next)
        .map(crate::clock::rfc3339)
        .unwrap_or_default()
}

/// The product object of `GET /products` and `GET /products/{id}`.
pub fn product(product: &ProductMarket) -> Value {
    let spec = &product.spec;
    let flags = &product.flags;
    let ticker = product.ticker();
    let qi = spec.quote_increment;
    let mut value = json!({
        "product_id": spec.id,
        "price": price_str(ticker.price, qi),
        "price_percentage_change_24h": plain(ticker.price_percent_chg_24_h),
        "volume_24h": plain(ticker.volume_24_h),
        "volume_percentage_change_24h": "0",
        "base_increment": spec.base_increment.to_string(),
        "quote_increment": qi.to_string(),
        "quote_min_size": spec.quote_min_size.to_string(),
        "quote_max_size": spec.quote_max_size.to_string(),
        "base_min_size": spec.base_min_size.to_string(),
        "base_max_size": spec.base_max_size.to_string(),
        "base_name": currency_name(&spec.base),
        "quote_name": currency_name(&spec.quote),
        "watched": false,
        "is_disabled": false,
        "new": false,
        "status": flags.status,
        "cancel_only": flags.cancel_only,
        "limit_only": flags.limit_only,
        "post_only": flags.post_only,
        "trading_disabled": flags.trading_disabled,
        "auction_mode": false,
        "product_type": spec.product_type(),
        "quote_currency_id": spec.quote,
        "base_currency_id": spec.base,
        "fcm_trading_session_details": null,
        "mid_market_price": price_str(product.mid(), qi),
        "alias": "",
        "alias_to": [],
        "base_display_symbol": spec.base,
        "quote_display_symbol": spec.quote,
        "view_only": false,
        "price_increment": qi.to_string(),
        "display_name": if spec.is_perpetual() { format!("{} PERP", spec.base) } else { spec.id.clone() },
        "product_venue": spec.venue(),
        "approximate_quote_24h_volume": plain((ticker.volume_24_h * ticker.price).round_dp(2)),
    });
    if let crate::products::ProductKind::Perpetual {
        contract_size,
        max_leverage,
        funding_rate,
    } = &spec.kind
        && let Some(object) = value.as_object_mut()
    {
        object.insert(
            "future_product_details".into(),
            json!({
                "venue": "INTX",
                "contract_code": spec.base,
                "contract_expiry": null,
                "contract_size": contract_size.to_string(),
                "contract_root_unit": spec.base,
                "group_description": format!("{} Perpetual", currency_name(&spec.base)),
                "contract_expiry_timezone": "",
                "group_short_description": format!("{} PERP", spec.base),
                "risk_managed_by": "MANAGED_BY_VENUE",
                "contract_expiry_type": "PERPETUAL",
                "perpetual_details": {
                    "open_interest": "0",
                    "funding_rate": funding_rate.to_string(),
                    "funding_time": next_funding(product.book.time),
                    "max_leverage": max_leverage.to_string(),
                    "base_asset_uuid": "",
                    "underlying_type": "SPOT",
                },
                "contract_display_name": format!("{} PERP", spec.base),
                "time_to_expiry_ms": null,
                "non_crypto": false,
                "contract_expiry_name": "",
                "twenty_four_by_seven": true,
            }),
        );
    }
    value
}
