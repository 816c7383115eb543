//! Editing a resting limit order (`POST /orders/edit` and `/orders/edit_preview`): a new
//! price and/or size for an open `limit_limit_gtc` order, keeping its order id, with the
//! hold re-computed and a crossing price executed at once as taker.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use super::walk::{Want, crosses, walk};
use super::{Exchange, Liquidity, OrderStatus};
use crate::num::{is_multiple_of, round_amount};
use crate::orders::{EditRecord, OrderConfig};
use crate::side::Side;

/// Why an edit is refused, as Coinbase's `EditOrderFailureReason` / preview reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EditFailure {
    OrderNotFound,
    OnlyOpenOrdersCanBeEdited,
    OnlyLimitOrderEditsSupported,
    CannotEditToBelowFilledSize,
    InvalidEditedSize,
    InvalidEditedPrice,
    EditRequestEqualToOriginalRequest,
    InsufficientFund,
    InvalidLimitPricePostOnly,
    OrderEntryDisabled,
}

impl EditFailure {
    /// `errors[].edit_failure_reason`.
    pub fn edit_failure_reason(self) -> &'static str {
        match self {
            EditFailure::OrderNotFound => "ORDER_NOT_FOUND",
            EditFailure::OnlyOpenOrdersCanBeEdited => "ONLY_OPEN_ORDERS_CAN_BE_EDITED",
            EditFailure::OnlyLimitOrderEditsSupported => "ONLY_LIMIT_ORDER_EDITS_SUPPORTED",
            EditFailure::CannotEditToBelowFilledSize => "CANNOT_EDIT_TO_BELOW_FILLED_SIZE",
            EditFailure::InvalidEditedSize => "INVALID_EDITED_SIZE",
            EditFailure::InvalidEditedPrice => "INVALID_EDITED_PRICE",
            EditFailure::EditRequestEqualToOriginalRequest => "EDIT_REQUEST_EQUAL_TO_ORIGINAL_REQUEST",
            EditFailure::InsufficientFund
            | EditFailure::InvalidLimitPricePostOnly
            | EditFailure::OrderEntryDisabled => "COMMANDER_REJECTED_EDIT_ORDER",
        }
    }

    /// `errors[].preview_failure_reason`.
    pub fn preview_failure_reason(self) -> &'static str {
        match self {
            EditFailure::InsufficientFund => "PREVIEW_INSUFFICIENT_FUND",
            EditFailure::InvalidLimitPricePostOnly => "PREVIEW_INVALID_LIMIT_PRICE_POST_ONLY",
            EditFailure::OrderEntryDisabled => "PREVIEW_ORDER_ENTRY_DISABLED",
            EditFailure::InvalidEditedSize => "PREVIEW_INVALID_SIZE_PRECISION",
            EditFailure::InvalidEditedPrice => "PREVIEW_INVALID_PRICE_PRECISION",
            _ => "UNKNOWN_PREVIEW_FAILURE_REASON",
        }
    }
}

/// What an edit would cost (the `edit_preview` answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EditPreview {
    pub base_size: Decimal,
    pub quote_size: Decimal,
    pub order_total: Decimal,
    pub commission_total: Decimal,
    pub best_bid: Decimal,
    pub best_ask: Decimal,
    pub slippage: Decimal,
    pub average_filled_price: Decimal,
}

/// A validated edit: the new terms and the hold they need.
struct EditPlan {
    size: Decimal,
    price: Decimal,
    new_hold: Decimal,
    preview: EditPreview,
}

impl Exchange {
    /// The economics of an edit, or why it would be refused.
    pub fn preview_edit(
        &self,
        portfolio_uuid: &str,
        order_id: &str,
        price: Option<Decimal>,
        size: Option<Decimal>,
    ) -> Result<EditPreview, EditFailure> {
        self.plan_edit(portfolio_uuid, order_id, price, size)
            .map(|plan| plan.preview)
    }

    /// Applies an edit: new terms, hold adjusted, an `edit_history` entry, and a crossing
    /// price executed at once.
    pub fn edit(
        &mut self,
        portfolio_uuid: &str,
        order_id: &str,
        price: Option<Decimal>,
        size: Option<Decimal>,
        now: DateTime<Utc>,
    ) -> Result<(), EditFailure> {
        let plan = self.plan_edit(portfolio_uuid, order_id, price, size)?;
        let Some(order) = self.orders.get_mut(order_id) else {
            return Err(EditFailure::OrderNotFound);
        };
        if let OrderConfig::LimitGtc {
            base_size, limit_price, ..
        } = &mut order.config
        {
            *base_size = plan.size;
            *limit_price = plan.price;
        }
        order.edit_history.push(EditRecord {
            price: plan.price,
            size: plan.size,
            accepted_at: now,
        });
        let (old_hold, currency, portfolio) = (order.hold, order.hold_currency.clone(), order.portfolio_uuid.clone());
        order.hold = plan.new_hold;
        order.hold_per_unit = match order.side {
            Side::Buy => plan.price * (Decimal::ONE + self.fees.taker_fee_rate),
            Side::Sell => Decimal::ONE,
        };
        if let Some(p) = self.accounts.get_mut(&portfolio) {
            p.release_hold(&currency, old_hold, now);
            p.add_hold(&currency, plan.new_hold, now);
        }
        self.execute_crossing_edit(order_id, now);
        Ok(())
    }

    fn plan_edit(
        &self,
        portfolio_uuid: &str,
        order_id: &str,
        price: Option<Decimal>,
        size: Option<Decimal>,
    ) -> Result<EditPlan, EditFailure> {
        let order = self.order(portfolio_uuid, order_id).ok_or(EditFailure::OrderNotFound)?;
        if order.status != OrderStatus::Open {
            return Err(EditFailure::OnlyOpenOrdersCanBeEdited);
        }
        let OrderConfig::LimitGtc {
            base_size,
            limit_price,
            post_only,
        } = order.config
        else {
            return Err(EditFailure::OnlyLimitOrderEditsSupported);
        };
        let product = self.market.get(&order.product_id).ok_or(EditFailure::OrderNotFound)?;
        let spec = &product.spec;
        if product.flags.cancel_only || product.flags.trading_disabled {
            return Err(EditFailure::OrderEntryDisabled);
        }
        let (new_size, new_price) = (size.unwrap_or(base_size), price.unwrap_or(limit_price));
        if new_size <= Decimal::ZERO || !is_multiple_of(new_size, spec.base_increment) || new_size > spec.base_max_size
        {
            return Err(EditFailure::InvalidEditedSize);
        }
        if new_price <= Decimal::ZERO || !is_multiple_of(new_price, spec.quote_increment) {
            return Err(EditFailure::InvalidEditedPrice);
        }
        if new_size <= order.filled_size {
            return Err(EditFailure::CannotEditToBelowFilledSize);
        }
        if new_size == base_size && new_price == limit_price {
            return Err(EditFailure::EditRequestEqualToOriginalRequest);
        }
        let levels = product.book.liquidity_for(order.side == Side::Buy);
        let crossing = levels.first().is_some_and(|l| crosses(order.side, l.price, new_price));
        if crossing && (post_only || product.flags.post_only) {
            return Err(EditFailure::InvalidLimitPricePostOnly);
        }
        let remaining = new_size - order.filled_size;
        let rate = self.fees.taker_fee_rate;
        let new_hold = match order.side {
            Side::Buy => remaining * new_price * (Decimal::ONE + rate),
            Side::Sell => remaining,
        };
        let portfolio = self.accounts.get(portfolio_uuid).ok_or(EditFailure::OrderNotFound)?;
        if new_hold > portfolio.available(&order.hold_currency) + order.hold {
            return Err(EditFailure::InsufficientFund);
        }
        let value = remaining * new_price;
        let commission = round_amount(value * rate);
        let mid = product.mid();
        let taker = walk(&levels, order.side, Want::Base(remaining), Some(new_price), spec, false);
        let taker_size: Decimal = taker.iter().map(|(_, s)| *s).sum();
        let slippage = if taker_size.is_zero() || mid.is_zero() {
            Decimal::ZERO
        } else {
            let average = taker.iter().map(|(p, s)| p * s).sum::<Decimal>() / taker_size;
            round_amount(((average - mid) / mid).abs())
        };
        Ok(EditPlan {
            size: new_size,
            price: new_price,
            new_hold,
            preview: EditPreview {
                base_size: new_size,
                quote_size: round_amount(value),
                order_total: round_amount(match order.side {
                    Side::Buy => value + commission,
                    Side::Sell => value - commission,
                }),
                commission_total: commission,
                best_bid: product.book.best_bid().map_or(Decimal::ZERO, |l| l.price),
                best_ask: product.book.best_ask().map_or(Decimal::ZERO, |l| l.price),
                slippage,
                average_filled_price: order.average_price(),
            },
        })
    }

    /// An edited price that crosses the book trades at once, as a taker, up to the new limit.
    fn execute_crossing_edit(&mut self, order_id: &str, now: DateTime<Utc>) {
        let Some(order) = self.orders.get(order_id) else { return };
        let (Some(limit), side, remaining) = (order.config.limit_price(), order.side, order.remaining()) else {
            return;
        };
        let Some(product) = self.market.get(&order.product_id) else {
            return;
        };
        let spec = product.spec.clone();
        let levels = product.book.liquidity_for(side == Side::Buy);
        let fills = walk(&levels, side, Want::Base(remaining), Some(limit), &spec, false);
        for (price, size) in fills {
            self.settle(order_id, &spec, price, size, Liquidity::Taker, now);
        }
        if self.orders.get(order_id).is_some_and(|o| o.remaining().is_zero()) {
            self.finish(order_id, OrderStatus::Filled, "", now);
        } else {
            self.emit(order_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{FeeRates, KeySpec};
    use crate::engine::{Caller, PlaceOutcome};
    use crate::market::Market;
    use crate::orders::OrderIntent;
    use crate::products::{ProductSpec, catalogue};

    fn exchange() -> (Exchange, String, String) {
        let now = Utc::now();
        let specs: Vec<ProductSpec> = catalogue().into_iter().filter(|p| p.id == "BTC-USD").collect();
        let market = Market::new(specs, 42, 30, now);
        let (events, _) = tokio::sync::broadcast::channel(16);
        let mut exchange = Exchange::new(market, FeeRates::default(), events);
        let spec = KeySpec::new("k", "unused").with_balances([("USD", Decimal::from(100_000)), ("BTC", Decimal::ONE)]);
        let portfolio = exchange.upsert_portfolio(&spec, now);
        (exchange, "k".to_string(), portfolio)
    }

    fn resting_buy(exchange: &mut Exchange, key: &str, portfolio: &str, price: Decimal) -> String {
        let intent = OrderIntent {
            client_order_id: "c1".into(),
            product_id: "BTC-USD".into(),
            side: Side::Buy,
            config: OrderConfig::LimitGtc {
                base_size: Decimal::new(1, 2),
                limit_price: price,
                post_only: false,
            },
            leverage: None,
            margin_type: None,
        };
        let caller = Caller {
            key_name: key,
            portfolio_uuid: portfolio,
        };
        match exchange.place_order(caller, &intent, Utc::now()) {
            PlaceOutcome::Accepted { order_id, .. } => order_id,
            PlaceOutcome::Rejected(r) => panic!("{r:?}"),
        }
    }

    #[test]
    fn edits_change_terms_and_holds_and_refuse_what_coinbase_refuses() {
        let (mut exchange, key, portfolio) = exchange();
        let low = (exchange.mid("BTC-USD").unwrap() / Decimal::TWO).round_dp(2);
        let id = resting_buy(&mut exchange, &key, &portfolio, low);
        let held = exchange.accounts.get(&portfolio).unwrap().balances["USD"].hold;
        assert!(held > Decimal::ZERO);
        assert_eq!(
            exchange.preview_edit(&portfolio, &id, Some(low), None),
            Err(EditFailure::EditRequestEqualToOriginalRequest)
        );
        assert_eq!(
            exchange.preview_edit(&portfolio, &id, Some(low + Decimal::new(1, 3)), None),
            Err(EditFailure::InvalidEditedPrice)
        );
        assert_eq!(
            exchange.preview_edit(&portfolio, "nope", Some(low), None),
            Err(EditFailure::OrderNotFound)
        );
        let preview = exchange
            .preview_edit(&portfolio, &id, Some(low - Decimal::ONE), Some(Decimal::new(2, 2)))
            .unwrap();
        assert_eq!(preview.base_size, Decimal::new(2, 2));
        exchange
            .edit(
                &portfolio,
                &id,
                Some(low - Decimal::ONE),
                Some(Decimal::new(2, 2)),
                Utc::now(),
            )
            .unwrap();
        let order = exchange.order(&portfolio, &id).unwrap();
        assert_eq!(order.config.base_size(), Some(Decimal::new(2, 2)));
        assert_eq!(order.edit_history.len(), 1);
        let doubled = exchange.accounts.get(&portfolio).unwrap().balances["USD"].hold;
        assert!(doubled > held * Decimal::new(19, 1), "{held} -> {doubled}");

        // A price through the book fills at once.
        let high = exchange.mid("BTC-USD").unwrap() * Decimal::TWO;
        exchange
            .edit(&portfolio, &id, Some(high.round_dp(2)), None, Utc::now())
            .unwrap();
        let order = exchange.order(&portfolio, &id).unwrap();
        assert_eq!(order.status, OrderStatus::Filled);
        assert_eq!(
            exchange.preview_edit(&portfolio, &id, Some(low), None),
            Err(EditFailure::OnlyOpenOrdersCanBeEdited)
        );
        assert_eq!(
            exchange.accounts.get(&portfolio).unwrap().balances["USD"].hold,
            Decimal::ZERO
        );
    }
}
