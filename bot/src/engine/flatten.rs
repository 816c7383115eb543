//! Flat on demand: close the bot's own positions now with reduce-only orders. A request comes
//! from the control file (`flatten: <id>`), the HTTP endpoint (`POST /control/flatten`) or the
//! TradingBot annotation `trading.gpttrader.io/flatten: <id>`; each id is acted on once, also
//! across restarts. The bot first cancels its own resting orders, then closes each own
//! position through the usual gate and checks: allowed in Normal and ReduceOnly, refused when
//! Halted (nothing trades then), and never beyond what the bot itself bought.

use super::{CycleReport, Engine};
use crate::broker::Broker;
use crate::clock;
use crate::domain::{AccountState, Quote, Side, Symbol};
use crate::risk::UtcClock;
use rust_decimal::Decimal;
use std::collections::BTreeMap;

/// What flattening `account` takes: `(symbol, side, quantity)` per own position on the bot's
/// symbols. Pure.
pub fn closing_orders(account: &AccountState, symbols: &[Symbol]) -> Vec<(Symbol, Side, Decimal)> {
    account
        .positions
        .iter()
        .filter(|p| !p.quantity.is_zero() && symbols.contains(&p.symbol))
        .map(|p| {
            let side = if p.quantity > Decimal::ZERO {
                Side::Sell
            } else {
                Side::Buy
            };
            (p.symbol.clone(), side, p.quantity.abs())
        })
        .collect()
}

impl<B: Broker> Engine<B> {
    /// Take note of a flatten request (ignored when this id was already acted on).
    pub(super) fn request_flatten(&mut self, id: String) {
        if self.guards.persisted().last_flatten_request.as_deref() == Some(id.as_str()) {
            tracing::info!(event = "flatten_repeat_ignored", request_id = %id, "this flatten request was already acted on");
            return;
        }
        tracing::warn!(event = "flatten_requested", request_id = %id, "flatten requested: closing the bot's own positions at the next cycle");
        self.pending_flatten = Some(id);
    }

    /// Close every own position now (instead of this cycle's strategy decisions).
    pub(super) async fn flatten(
        &mut self,
        request: &str,
        account: &AccountState,
        quotes: &BTreeMap<Symbol, Quote>,
        marks: &BTreeMap<Symbol, Decimal>,
        report: &mut CycleReport,
    ) {
        if let Err(error) = self.executor.cancel_open_orders(false, |_| Decimal::ZERO).await {
            report.errors.push(format!("flatten: cancelling open orders: {error}"));
        }
        let clock = UtcClock::at_unix(clock::unix_seconds());
        let now_ms = clock::unix_ms();
        let mut refused = Vec::new();
        for (symbol, side, quantity) in closing_orders(account, &self.config.symbols) {
            let (Some(quote), Some(product)) = (quotes.get(&symbol).copied(), self.products.get(&symbol).cloned())
            else {
                refused.push(format!("{symbol}: no market data"));
                continue;
            };
            let outcome = self
                .place(
                    &symbol, &product, &quote, side, quantity, true, account, marks, clock, now_ms,
                )
                .await;
            let note = match outcome {
                Ok(note) => {
                    report.placed += usize::from(note.starts_with("placed"));
                    note
                }
                Err(rejection) => {
                    refused.push(format!("{symbol}: {rejection}"));
                    format!("refused: {rejection}")
                }
            };
            report
                .decisions
                .insert(symbol, ("FLATTEN", format!("flatten request {request}; {note}")));
        }
        for symbol in &self.config.symbols {
            report.decisions.entry(symbol.clone()).or_insert((
                "HOLD",
                format!("flatten request {request}: nothing of the bot's to close"),
            ));
        }
        let result = if refused.is_empty() { "done" } else { "refused" };
        self.app.metrics.flattens.with_label_values(&[result]).inc();
        if refused.is_empty() {
            tracing::warn!(event = "flatten_done", request_id = %request, "own positions closed with reduce-only orders");
        } else {
            tracing::error!(event = "flatten_refused", request_id = %request, refused = %refused.join("; "), "flatten could not close every own position");
        }
        self.guards.set_last_flatten_request(request);
        self.persist_guard_state();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Position;
    use rust_decimal_macros::dec;

    #[test]
    fn flattening_closes_each_own_position_of_the_bots_symbols() {
        let btc: Symbol = "BTC-USD".parse().unwrap();
        let perp: Symbol = "ETH-PERP".parse().unwrap();
        let other: Symbol = "SOL-USD".parse().unwrap();
        let position = |symbol: &Symbol, quantity| Position {
            symbol: symbol.clone(),
            quantity,
            entry_price: dec!(1),
        };
        let account = AccountState {
            cash: dec!(100),
            positions: vec![
                position(&btc, dec!(0.5)),
                position(&perp, dec!(-2)),
                position(&other, dec!(3)),
            ],
            ..AccountState::default()
        };
        assert_eq!(
            closing_orders(&account, &[btc.clone(), perp.clone()]),
            [(btc, Side::Sell, dec!(0.5)), (perp, Side::Buy, dec!(2))]
        );
        assert!(closing_orders(&AccountState::default(), &[other]).is_empty());
    }
}
