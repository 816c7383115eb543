//! Editing one of the bot's resting limit orders (`POST /orders/edit_preview`, `/orders/edit`):
//! a new price and/or size, same order id. Only the bot's own orders (its client order id
//! prefix) are edited, a dry run edits nothing, and a SELL may not grow beyond what the bot
//! owns (the same rule as a new order).

use super::broker::CoinbaseBroker;
use super::rest::Access;
use super::wire::{self, Num};
use crate::broker::BrokerError;
use crate::domain::{Order, Side};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The exchange's figures for an edit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EditPreview {
    /// Why the exchange would refuse the edit (empty: it would accept it).
    pub errors: Vec<String>,
    pub order_total: Option<Decimal>,
    pub commission_total: Option<Decimal>,
    pub base_size: Option<Decimal>,
    pub quote_size: Option<Decimal>,
    pub best_bid: Option<Decimal>,
    pub best_ask: Option<Decimal>,
    pub slippage: Option<Decimal>,
    pub average_filled_price: Option<Decimal>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct EditError {
    edit_failure_reason: Option<String>,
    preview_failure_reason: Option<String>,
}

impl EditError {
    fn reasons(&self) -> impl Iterator<Item = String> + '_ {
        [&self.edit_failure_reason, &self.preview_failure_reason]
            .into_iter()
            .flatten()
            .filter(|r| !wire::is_placeholder_reason(r) && r.as_str() != "UNKNOWN_EDIT_ORDER_FAILURE_REASON")
            .cloned()
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct EditPreviewResponse {
    errors: Vec<EditError>,
    order_total: Num,
    commission_total: Num,
    base_size: Num,
    quote_size: Num,
    best_bid: Num,
    best_ask: Num,
    slippage: Num,
    average_filled_price: Num,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct EditResponse {
    success: wire::Flag,
    errors: Vec<EditError>,
}

fn body(order_id: &str, price: Option<Decimal>, size: Option<Decimal>) -> Result<Value, BrokerError> {
    if price.is_none() && size.is_none() {
        return Err(BrokerError::Rejected {
            reason: "INVALID_EDIT".into(),
            message: "an edit needs a new price or a new size".into(),
        });
    }
    if price.is_some_and(|p| p <= Decimal::ZERO) || size.is_some_and(|s| s <= Decimal::ZERO) {
        return Err(BrokerError::Rejected {
            reason: "INVALID_EDIT".into(),
            message: "price and size must be positive".into(),
        });
    }
    let mut body = json!({ "order_id": order_id });
    if let Some(p) = price {
        body["price"] = p.normalize().to_string().into();
    }
    if let Some(s) = size {
        body["size"] = s.normalize().to_string().into();
    }
    Ok(body)
}

impl CoinbaseBroker {
    /// The order, if it is the bot's own and may take `size` (a SELL may not offer more than
    /// the bot owns).
    async fn editable(&self, order_id: &str, size: Option<Decimal>) -> Result<Order, BrokerError> {
        let order = self.get_order(order_id).await?;
        let prefix = self
            .inventory_book()
            .map(|b| b.prefix().to_string())
            .unwrap_or_default();
        if prefix.is_empty() || !order.client_order_id.starts_with(&prefix) {
            return Err(BrokerError::Rejected {
                reason: "NOT_OWN_ORDER".into(),
                message: format!("order {order_id} is not this bot's (client order id prefix {prefix:?}): not edited"),
            });
        }
        if let Some(size) = size
            && order.side == Side::Sell
        {
            let remaining_now = (order.quantity - order.filled_quantity).max(Decimal::ZERO);
            let remaining_after = (size - order.filled_quantity).max(Decimal::ZERO);
            self.check_own_sell(&order.symbol, Side::Sell, remaining_after - remaining_now)
                .await?;
        }
        Ok(order)
    }

    /// What an edit of the bot's resting limit order would look like.
    pub async fn preview_edit(
        &self,
        order_id: &str,
        price: Option<Decimal>,
        size: Option<Decimal>,
    ) -> Result<EditPreview, BrokerError> {
        let body = body(order_id, price, size)?;
        self.editable(order_id, size).await?;
        let bytes = self.rest().post("/orders/edit_preview", &body, None).await?;
        let p: EditPreviewResponse = wire::decode("edit preview", &bytes)?;
        Ok(EditPreview {
            errors: p.errors.iter().flat_map(EditError::reasons).collect(),
            order_total: p.order_total.opt("edit preview order_total")?,
            commission_total: p.commission_total.opt("edit preview commission_total")?,
            base_size: p.base_size.opt("edit preview base_size")?,
            quote_size: p.quote_size.opt("edit preview quote_size")?,
            best_bid: p.best_bid.opt("edit preview best_bid")?,
            best_ask: p.best_ask.opt("edit preview best_ask")?,
            slippage: p.slippage.opt("edit preview slippage")?,
            average_filled_price: p.average_filled_price.opt("edit preview average_filled_price")?,
        })
    }

    /// Edit the bot's resting limit order; returns the order as it is afterwards.
    pub async fn edit_order(
        &self,
        order_id: &str,
        price: Option<Decimal>,
        size: Option<Decimal>,
    ) -> Result<Order, BrokerError> {
        if self.is_read_only() {
            return Err(BrokerError::Rejected {
                reason: "DRY_RUN".into(),
                message: "this is a dry run: no order is edited".into(),
            });
        }
        let body = body(order_id, price, size)?;
        self.editable(order_id, size).await?;
        // Read the answer ourselves: a refusal lists its reasons in `errors`.
        let timeout = self.rest().options().order_timeout;
        let bytes = self
            .rest()
            .send(
                reqwest::Method::POST,
                "/orders/edit",
                &[],
                Some(&body),
                Access::Private,
                timeout,
            )
            .await?;
        let response: EditResponse = wire::decode("edit order", &bytes)?;
        if !response.success.is_true() {
            let reasons: Vec<String> = response.errors.iter().flat_map(EditError::reasons).collect();
            return Err(BrokerError::Rejected {
                reason: reasons.first().cloned().unwrap_or_else(|| "EDIT_REFUSED".into()),
                message: format!("the exchange refused the edit of {order_id}: {}", reasons.join(", ")),
            });
        }
        self.get_order(order_id).await
    }
}
