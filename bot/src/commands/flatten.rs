//! `perps-bot flatten`: close the bot's own positions now, from a shell (in an incident, from
//! inside the bot's pod). The bot's resting orders are cancelled first, then each own position
//! is closed with a reduce-only order through the same gate, quantisation and risk checks as
//! the trading loop. Coins on the account the bot did not buy are never touched. A dry run
//! shows the orders without sending (or cancelling) anything. Prints JSON; exits 1 when any
//! position could not be closed.

use crate::broker::Broker;
use crate::clock;
use crate::config::BotConfig;
use crate::domain::Symbol;
use crate::engine::flatten::closing_orders;
use crate::execution::build_order;
use crate::risk::{self, Rejection, RiskInput, UtcClock};
use crate::trading_state;
use serde_json::{Value, json};
use tradingbot_crds::TradingMode;

/// Cancel the bot's open orders (those with `prefix`); how many were cancelled.
async fn cancel_own<B: Broker>(broker: &B, prefix: &str, dry_run: bool) -> anyhow::Result<usize> {
    let ids: Vec<String> = broker
        .open_orders()
        .await?
        .into_iter()
        .filter(|o| o.client_order_id.starts_with(prefix))
        .map(|o| o.order_id)
        .collect();
    if dry_run || ids.is_empty() {
        return Ok(0);
    }
    Ok(broker.cancel_orders(&ids).await?.iter().filter(|r| r.success).count())
}

/// Flatten the bot identity `prefix`'s own positions on `broker`.
pub async fn run<B: Broker>(broker: &B, config: &BotConfig, prefix: &str) -> anyhow::Result<Value> {
    let cancelled = cancel_own(broker, prefix, config.dry_run).await?;
    let account = broker.account().await?;
    let products = broker.products(&config.symbols).await?;
    let mode = TradingMode::from_switches(config.reduce_only, false);
    let (mut closed, mut refused) = (Vec::new(), Vec::new());
    for (symbol, side, quantity) in closing_orders(&account, &config.symbols) {
        let Some(product) = products.iter().find(|p| p.symbol == symbol) else {
            refused.push(json!({"symbol": symbol, "reason": "product rules unavailable"}));
            continue;
        };
        let quote = broker.quote(&symbol).await?;
        let client_id = format!("{prefix}flatten-{}", uuid::Uuid::new_v4().simple());
        let position = account.position(&symbol);
        let checked = build_order(config, product, &quote, side, quantity, true, client_id).and_then(|order| {
            trading_state::gate(mode, order.side, order.quantity, position, true)?;
            let marks = |s: &Symbol| (s == &symbol).then(|| quote.mid());
            let now_ms = clock::unix_ms();
            risk::check(
                &config.risk,
                &config.guards,
                &RiskInput {
                    symbol: &symbol,
                    side,
                    quantity: order.quantity,
                    price: order.kind.limit_price().unwrap_or(quote.taker_price(side)),
                    product,
                    quote: &quote,
                    quote_age_seconds: u64::try_from((now_ms - quote.time_ms).max(0) / 1000).unwrap_or(u64::MAX),
                    account: &account,
                    marks: &marks,
                    clock: UtcClock::at_unix(now_ms / 1000),
                },
            )?;
            Ok::<_, Rejection>(order)
        });
        match checked {
            Err(rejection) => refused.push(json!({"symbol": symbol, "reason": rejection.to_string()})),
            Ok(order) if config.dry_run => closed.push(json!({"dry_run": true, "order": order})),
            Ok(order) => match broker.place_order(&order).await {
                Ok(placed) => {
                    tracing::warn!(event = "order_placed", source = "flatten", symbol = %symbol, side = %side, quantity = %order.quantity, client_order_id = %order.client_order_id, order_id = %placed.order_id, "flatten order placed");
                    closed.push(json!({"order": placed}));
                }
                Err(error) => refused.push(json!({"symbol": symbol, "reason": error.to_string()})),
            },
        }
    }
    let result = json!({
        "dry_run": config.dry_run,
        "cancelled_orders": cancelled,
        "positions_before": account.positions,
        "closed": closed,
        "refused": refused,
    });
    if refused.is_empty() {
        Ok(result)
    } else {
        println!("{}", serde_json::to_string_pretty(&result)?);
        anyhow::bail!(
            "flatten: {} position(s) could not be closed (see refused)",
            refused.len()
        )
    }
}
