//! `perps-bot orders preview|place|edit-preview|apply-edit`: one order by hand, through the
//! same gate, quantisation and risk checks as the trading loop. `--reduce-only` refuses
//! anything that would not shrink the current position. Orders carry the bot's client order
//! id prefix, so what they buy is the bot's own; a spot SELL beyond the bot's own inventory is
//! refused. Edits change a resting limit order of the bot's (Coinbase's edit-order API).

use crate::broker::Broker;
use crate::cli::{ApplyEditArgs, EditArgs, OrderArgs, OrderType};
use crate::clock;
use crate::coinbase::CoinbaseBroker;
use crate::config::BotConfig;
use crate::domain::{OrderKind, OrderRequest, TimeInForce};
use crate::execution::quantize::quantize;
use crate::risk::{self, RiskInput, UtcClock};
use crate::trading_state;
use anyhow::Context;
use tradingbot_crds::TradingMode;

/// Build the order the arguments describe, quantised to the product. Pure.
pub fn order_from_args(
    args: &OrderArgs,
    product: &crate::domain::Product,
    reference_price: rust_decimal::Decimal,
    client_id: String,
) -> anyhow::Result<OrderRequest> {
    let kind = match args.order_type {
        OrderType::Market => OrderKind::Market,
        OrderType::Limit => OrderKind::Limit {
            limit_price: args.price.context("--price is required for limit orders")?,
        },
        OrderType::StopLimit => OrderKind::StopLimit {
            stop_price: args.stop.context("--stop is required for stop-limit orders")?,
            limit_price: args.price.context("--price is required for stop-limit orders")?,
        },
    };
    anyhow::ensure!(
        args.quantity > rust_decimal::Decimal::ZERO,
        "--quantity must be positive"
    );
    let tif = match kind {
        OrderKind::Market => TimeInForce::Ioc,
        _ => args.tif.unwrap_or(TimeInForce::Gtc),
    };
    let (quantity, kind) =
        quantize(product, args.side, args.quantity, kind, reference_price).map_err(|r| anyhow::anyhow!("{r}"))?;
    Ok(OrderRequest {
        client_order_id: client_id,
        symbol: args.symbol.clone(),
        side: args.side,
        quantity,
        kind,
        tif,
        reduce_only: args.reduce_only,
        leverage: args.leverage,
        preview_id: None,
    })
}

async fn prepare<B: Broker>(
    broker: &B,
    args: &OrderArgs,
    prefix: &str,
) -> anyhow::Result<(
    OrderRequest,
    crate::domain::Product,
    crate::domain::Quote,
    crate::domain::AccountState,
)> {
    let product = broker
        .products(std::slice::from_ref(&args.symbol))
        .await?
        .into_iter()
        .next()
        .with_context(|| format!("{} is not listed", args.symbol))?;
    let quote = broker.quote(&args.symbol).await?;
    let account = broker.account().await?;
    let client_id = args
        .client_id
        .clone()
        .unwrap_or_else(|| format!("{prefix}manual-{}", uuid::Uuid::new_v4().simple()));
    let order = order_from_args(args, &product, quote.taker_price(args.side), client_id)?;
    Ok((order, product, quote, account))
}

pub async fn preview<B: Broker>(broker: &B, args: &OrderArgs, prefix: &str) -> anyhow::Result<serde_json::Value> {
    let (order, _, _, _) = prepare(broker, args, prefix).await?;
    let preview = broker.preview_order(&order).await?;
    Ok(serde_json::json!({ "order": order, "preview": preview }))
}

pub async fn place<B: Broker>(
    broker: &B,
    config: &BotConfig,
    args: &OrderArgs,
    prefix: &str,
) -> anyhow::Result<serde_json::Value> {
    let (order, product, quote, account) = prepare(broker, args, prefix).await?;
    let position = account.position(&order.symbol);
    let mode = TradingMode::from_switches(config.reduce_only, false);
    trading_state::gate(mode, order.side, order.quantity, position, order.reduce_only)
        .map_err(|r| anyhow::anyhow!("refused: {}", r.message))?;
    let marks = |s: &crate::domain::Symbol| (s == &order.symbol).then(|| quote.mid());
    let now_ms = clock::unix_ms();
    risk::check(
        &config.risk,
        &config.guards,
        &RiskInput {
            symbol: &order.symbol,
            side: order.side,
            quantity: order.quantity,
            price: order.kind.limit_price().unwrap_or(quote.taker_price(order.side)),
            product: &product,
            quote: &quote,
            quote_age_seconds: u64::try_from((now_ms - quote.time_ms).max(0) / 1000).unwrap_or(u64::MAX),
            account: &account,
            marks: &marks,
            clock: UtcClock::at_unix(now_ms / 1000),
        },
    )
    .map_err(|r| anyhow::anyhow!("refused by risk checks: {r}"))?;
    if config.dry_run {
        return Ok(serde_json::json!({ "dry_run": true, "order": order, "position": position }));
    }
    let placed = broker.place_order(&order).await?;
    tracing::info!(event = "order_placed", source = "manual", symbol = %order.symbol, side = %order.side, quantity = %order.quantity, client_order_id = %order.client_order_id, order_id = %placed.order_id, "manual order placed");
    Ok(serde_json::json!({ "order": placed, "position_before": position }))
}

/// The preview id of an edit: `PRICE@SIZE`, `-` for a part left unchanged (it spells out the
/// edit, so `ORDER_ID:PREVIEW_ID` applies exactly what was previewed).
pub fn preview_id(price: Option<rust_decimal::Decimal>, size: Option<rust_decimal::Decimal>) -> String {
    let part = |v: Option<rust_decimal::Decimal>| v.map_or_else(|| "-".to_string(), |d| d.normalize().to_string());
    format!("{}@{}", part(price), part(size))
}

/// `ORDER_ID:PREVIEW_ID` back into the order id, price and size.
pub fn parse_edit(
    text: &str,
) -> anyhow::Result<(String, Option<rust_decimal::Decimal>, Option<rust_decimal::Decimal>)> {
    let usage = || {
        anyhow::anyhow!(
            "{text:?}: expected ORDER_ID:PREVIEW_ID as `orders edit-preview` printed it (PREVIEW_ID is PRICE@SIZE, - for unchanged)"
        )
    };
    let (order_id, preview) = text.split_once(':').ok_or_else(usage)?;
    let (price, size) = preview.split_once('@').ok_or_else(usage)?;
    let part = |p: &str| -> anyhow::Result<Option<rust_decimal::Decimal>> {
        match p.trim() {
            "-" | "" => Ok(None),
            value => value.parse().map(Some).map_err(|_| usage()),
        }
    };
    let (price, size) = (part(price)?, part(size)?);
    anyhow::ensure!(
        !order_id.trim().is_empty() && (price.is_some() || size.is_some()),
        usage()
    );
    Ok((order_id.trim().to_string(), price, size))
}

/// `orders edit-preview ORDER_ID --price P --size S`.
pub async fn edit_preview(broker: &CoinbaseBroker, args: &EditArgs) -> anyhow::Result<serde_json::Value> {
    let preview = broker.preview_edit(&args.order_id, args.price, args.size).await?;
    let id = preview_id(args.price, args.size);
    Ok(serde_json::json!({
        "order_id": args.order_id,
        "preview": preview,
        "preview_id": id,
        "apply": format!("perps-bot orders apply-edit {}:{id}", args.order_id),
    }))
}

/// `orders apply-edit ORDER_ID:PREVIEW_ID`: preview again (prices move), then edit.
pub async fn apply_edit(broker: &CoinbaseBroker, args: &ApplyEditArgs) -> anyhow::Result<serde_json::Value> {
    let (order_id, price, size) = parse_edit(&args.edit)?;
    let preview = broker.preview_edit(&order_id, price, size).await?;
    anyhow::ensure!(
        preview.errors.is_empty(),
        "the exchange would refuse this edit now: {}",
        preview.errors.join(", ")
    );
    let order = broker.edit_order(&order_id, price, size).await?;
    tracing::info!(event = "order_edited", source = "manual", order_id = %order_id, price = ?price, size = ?size, "order edited");
    Ok(serde_json::json!({ "order": order, "preview": preview }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::paper::PaperExchange;
    use crate::cli::{Cli, Command, OrdersCommand};
    use crate::config::ConfigOverrides;
    use clap::Parser;
    use rust_decimal_macros::dec;
    use tradingbot_crds::Profile;

    fn args(line: &[&str]) -> OrderArgs {
        let mut all = vec!["perps-bot", "orders", "place"];
        all.extend_from_slice(line);
        match Cli::try_parse_from(all).unwrap().command {
            Some(Command::Orders {
                action: OrdersCommand::Place(a),
            }) => a,
            _ => unreachable!(),
        }
    }

    #[test]
    fn edit_ids_spell_out_the_edit() {
        let id = preview_id(Some(dec!(95000.50)), None);
        assert_eq!(id, "95000.5@-");
        assert_eq!(
            parse_edit(&format!("o-1:{id}")).unwrap(),
            ("o-1".to_string(), Some(dec!(95000.5)), None)
        );
        assert_eq!(parse_edit("o-1:-@0.2").unwrap().2, Some(dec!(0.2)));
        for bad in ["o-1", "o-1:-@-", ":1@2", "o-1:abc@1"] {
            assert!(parse_edit(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn manual_reduce_only_flattens_but_refuses_to_increase() {
        let flags = ConfigOverrides {
            dry_run: Some(false),
            ..Default::default()
        };
        let config = BotConfig::resolve(Some(Profile::Dev), &Default::default(), &flags).unwrap();
        let paper = PaperExchange::new(&config.paper, &config.symbols, false);
        let btc = "BTC-USD".parse().unwrap();
        paper.set_mark(&btc, dec!(50000));
        let refused = place(
            &paper,
            &config,
            &args(&[
                "--symbol",
                "BTC-USD",
                "--side",
                "buy",
                "--quantity",
                "0.1",
                "--reduce-only",
            ]),
            "pb.local.",
        )
        .await;
        assert!(refused.unwrap_err().to_string().contains("would not reduce"));
        place(
            &paper,
            &config,
            &args(&["--symbol", "BTC-USD", "--side", "buy", "--quantity", "0.1"]),
            "pb.local.",
        )
        .await
        .unwrap();
        let too_much = place(
            &paper,
            &config,
            &args(&[
                "--symbol",
                "BTC-USD",
                "--side",
                "sell",
                "--quantity",
                "0.2",
                "--reduce-only",
            ]),
            "pb.local.",
        )
        .await;
        assert!(too_much.is_err(), "selling more than held would flip the position");
        place(
            &paper,
            &config,
            &args(&[
                "--symbol",
                "BTC-USD",
                "--side",
                "sell",
                "--quantity",
                "0.1",
                "--reduce-only",
            ]),
            "pb.local.",
        )
        .await
        .unwrap();
        assert_eq!(paper.account_now().position(&btc), dec!(0));
    }

    #[tokio::test]
    async fn preview_shows_the_quantised_order() {
        let config = BotConfig::resolve(Some(Profile::Dev), &Default::default(), &Default::default()).unwrap();
        let paper = PaperExchange::new(&config.paper, &config.symbols, false);
        let a = args(&[
            "--symbol",
            "ETH-USD",
            "--side",
            "buy",
            "--quantity",
            "0.123456789123",
            "--type",
            "limit",
            "--price",
            "2999.999",
        ]);
        let shown = preview(&paper, &a, "pb.local.").await.unwrap();
        assert!(
            shown["order"]["client_order_id"]
                .as_str()
                .unwrap()
                .starts_with("pb.local.manual-")
        );
        assert_eq!(shown["order"]["quantity"], "0.12345678");
        assert_eq!(shown["order"]["kind"]["limit_price"], "2999.99");
    }
}
