//! JSON of the WebSocket channels' events.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::accounts::Portfolio;
use crate::clock::rfc3339;
use crate::engine::Exchange;
use crate::market::book::{BookSide, L2Change};
use crate::market::candles::Candle;
use crate::market::{ProductMarket, TickerData, Trade};
use crate::num::{plain, price_str};
use crate::products::ProductSpec;

/// A `ticker` / `ticker_batch` ticker object.
pub fn ticker(t: &TickerData, spec: &ProductSpec) -> Value {
    let qi = spec.quote_increment;
    json!({
        "type": "ticker",
        "product_id": t.product_id,
        "price": price_str(t.price, qi),
        "volume_24_h": plain(t.volume_24_h),
        "low_24_h": price_str(t.low_24_h, qi),
        "high_24_h": price_str(t.high_24_h, qi),
        "low_52_w": price_str(t.low_52_w, qi),
        "high_52_w": price_str(t.high_52_w, qi),
        "price_percent_chg_24_h": plain(t.price_percent_chg_24_h),
        "best_bid": price_str(t.best_bid, qi),
        "best_bid_quantity": plain(t.best_bid_quantity),
        "best_ask": price_str(t.best_ask, qi),
        "best_ask_quantity": plain(t.best_ask_quantity),
    })
}

/// `l2_data` updates.
pub fn l2_updates(changes: &[L2Change], time: DateTime<Utc>, spec: &ProductSpec) -> Vec<Value> {
    changes
        .iter()
        .map(|c| {
            json!({
                "side": c.side.as_str(),
                "event_time": rfc3339(time),
                "price_level": price_str(c.price, spec.quote_increment),
                "new_quantity": plain(c.size),
            })
        })
        .collect()
}

/// The whole book as `l2_data` snapshot updates (bids best first, then offers).
pub fn l2_snapshot(product: &ProductMarket) -> Vec<Value> {
    let changes: Vec<L2Change> = product
        .book
        .bids()
        .into_iter()
        .map(|l| L2Change {
            side: BookSide::Bid,
            price: l.price,
            size: l.size,
        })
        .chain(product.book.asks().into_iter().map(|l| L2Change {
            side: BookSide::Offer,
            price: l.price,
            size: l.size,
        }))
        .collect();
    l2_updates(&changes, product.book.time, &product.spec)
}

/// A `market_trades` trade.
pub fn trade(t: &Trade, spec: &ProductSpec) -> Value {
    json!({
        "trade_id": t.trade_id,
        "product_id": t.product_id,
        "price": price_str(t.price, spec.quote_increment),
        "size": plain(t.size),
        "side": t.side.as_str(),
        "time": rfc3339(t.time),
    })
}

/// A `candles` candle.
pub fn candle(c: &Candle, spec: &ProductSpec) -> Value {
    let qi = spec.quote_increment;
    json!({
        "start": c.start.to_string(),
        "high": price_str(c.high, qi),
        "low": price_str(c.low, qi),
        "open": price_str(c.open, qi),
        "close": price_str(c.close, qi),
        "volume": plain(c.volume),
        "product_id": spec.id,
    })
}

/// A `status` channel product.
pub fn status_product(product: &ProductMarket) -> Value {
    let spec = &product.spec;
    let flags = &product.flags;
    let status = if flags.trading_disabled {
        "offline"
    } else {
        flags.status.as_str()
    };
    json!({
        "product_type": spec.product_type(),
        "id": spec.id,
        "base_currency": spec.base,
        "quote_currency": spec.quote,
        "base_increment": spec.base_increment.to_string(),
        "quote_increment": spec.quote_increment.to_string(),
        "display_name": spec.id,
        "status": status,
        "status_message": if flags.cancel_only { "cancel only" } else if flags.limit_only { "limit only" } else if flags.post_only { "post only" } else { "" },
        "min_market_funds": spec.quote_min_size.to_string(),
    })
}

/// `positions` of a `user` snapshot.
pub fn positions(exchange: &Exchange, portfolio: &Portfolio) -> Value {
    let perps: Vec<Value> = portfolio
        .open_positions()
        .map(|p| {
            let mark = exchange.mid(&p.product_id).unwrap_or(p.entry_price);
            json!({
                "product_id": p.product_id,
                "portfolio_uuid": portfolio.uuid,
                "vwap": plain(p.entry_price),
                "entry_vwap": plain(p.entry_price),
                "position_side": if p.net_size.is_sign_positive() { "Long" } else { "Short" },
                "margin_type": "Cross",
                "net_size": plain(p.net_size),
                "leverage": plain(p.leverage),
                "mark_price": plain(mark),
                "liquidation_price": plain(p.liquidation_price()),
                "unrealized_pnl": plain(p.unrealized_pnl(mark).round_dp(8)),
                "aggregated_pnl": plain((p.unrealized_pnl(mark) + p.realized_pnl).round_dp(8)),
            })
        })
        .collect();
    json!({ "perpetual_futures_positions": perps, "expiring_futures_positions": [] })
}

/// The `current_time` of a heartbeat, in the Go format Coinbase sends
/// (`2023-06-23 20:31:56.121961769 +0000 UTC m=+91717.525857105`).
pub fn heartbeat_time(now: DateTime<Utc>, uptime: Duration) -> String {
    format!(
        "{} m=+{}.{:09}",
        now.format("%Y-%m-%d %H:%M:%S%.9f +0000 UTC"),
        uptime.as_secs(),
        uptime.subsec_nanos()
    )
}
