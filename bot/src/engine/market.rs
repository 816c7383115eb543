//! What the engine reads besides quotes and the account: one-minute closes for the volatility
//! guard (at most once a minute per symbol, whatever the cycle interval), and the broker's
//! own-inventory and own-cash figures (metrics, coins that left the bot's books without a
//! trade, which must not count as a trading loss, and the cash books the guards' references
//! belong to).

use super::Engine;
use crate::broker::{Broker, Granularity};
use crate::domain::{Quote, Symbol};
use crate::telemetry::metrics::f;
use futures::future::join_all;
use rust_decimal::Decimal;
use std::collections::BTreeMap;

/// The age in seconds of each symbol's newest quote. A symbol without any quote yet is
/// warming up: its age counts from the engine's start (`running_ms`), so one missed quote at
/// start is not "infinitely stale", while a feed that never delivers still trips the guard
/// once it is older than the levels. Pure.
pub fn staleness_of(
    symbols: &[Symbol],
    last_quotes: &BTreeMap<Symbol, Quote>,
    now_ms: i64,
    running_ms: i64,
) -> BTreeMap<Symbol, Decimal> {
    symbols
        .iter()
        .map(|s| {
            let age_ms = last_quotes.get(s).map_or(running_ms, |q| (now_ms - q.time_ms).max(0));
            (s.clone(), Decimal::from(age_ms) / Decimal::from(1000))
        })
        .collect()
}

impl<B: Broker> Engine<B> {
    /// Read the latest closed one-minute candles of every symbol whose minute moved on.
    pub(super) async fn refresh_minute_closes(&mut self, now_ms: i64) {
        let minute = now_ms.div_euclid(60_000);
        let count = self.guards.volatility_window() + 1;
        let due: Vec<Symbol> = self
            .config
            .symbols
            .iter()
            .filter(|s| self.closes_minute.get(*s) != Some(&minute))
            .cloned()
            .collect();
        if due.is_empty() {
            return;
        }
        let broker = &self.broker;
        let results = join_all(
            due.iter()
                .map(|s| async move { (s.clone(), broker.candles(s, Granularity::OneMinute, count).await) }),
        )
        .await;
        for (symbol, result) in results {
            match result {
                Ok(candles) => {
                    let closes: Vec<Decimal> = candles.iter().map(|c| c.close).collect();
                    self.guards.record_closes(&symbol, &closes);
                    self.closes_minute.insert(symbol, minute);
                }
                Err(error) => {
                    tracing::warn!(%symbol, %error, "one-minute candles unavailable: volatility not updated")
                }
            }
        }
    }

    /// Export the broker's inventory and cash figures; coins this process took off the books
    /// (the account held less than the ledger) lower the loss guards' references by their
    /// value, and the references belong to the bot's cash books in use.
    pub(super) fn account_for_inventory(&mut self, marks: &BTreeMap<Symbol, Decimal>) {
        let Some(report) = self.broker.inventory() else {
            return;
        };
        let metrics = &self.app.metrics;
        for (symbol, figures) in &report.symbols {
            let label = [symbol.as_str()];
            metrics.inventory.with_label_values(&label).set(f(figures.own));
            metrics
                .inventory_unowned
                .with_label_values(&label)
                .set(f(figures.unowned));
            let (caps_seen, removed_seen) = self.inventory_seen.get(symbol).copied().unwrap_or_default();
            let new_caps = figures.caps.saturating_sub(caps_seen);
            if new_caps > 0 {
                metrics.inventory_capped.with_label_values(&label).inc_by(new_caps);
            }
            let removed = figures.removed_since_start - removed_seen;
            if removed > Decimal::ZERO {
                let value = removed * marks.get(symbol).copied().unwrap_or_default();
                tracing::warn!(event = "inventory_transfer_out", symbol = %symbol, quantity = %removed, value = %value, "coins left the bot's books without a trade: not counted as a trading loss");
                self.guards.record_transfer_out(value);
            }
            self.inventory_seen
                .insert(symbol.clone(), (figures.caps, figures.removed_since_start));
        }
        if let Some(cash) = &report.cash {
            metrics.cash_unbacked.set(f(cash.unbacked));
            if self.guards.use_books(&cash.books) {
                tracing::warn!(event = "cash_books_changed", books = %cash.books, baseline = %cash.baseline, "the cash books were opened anew (their file was lost or removed): the day-start and peak references restart from this cycle");
            }
        }
        self.inventory = Some(report);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guards::GuardMonitor;
    use rust_decimal_macros::dec;
    use tradingbot_crds::{Instance, TradingMode};

    #[test]
    fn a_symbol_without_a_quote_at_start_is_warming_up_not_infinitely_stale() {
        let (btc, eth): (Symbol, Symbol) = ("BTC-USD".parse().unwrap(), "ETH-USD".parse().unwrap());
        let now = 1_800_000_000_000;
        let quote = Quote {
            bid: dec!(1),
            bid_size: dec!(1),
            ask: dec!(2),
            ask_size: dec!(1),
            time_ms: now - 2_000,
        };
        let quotes = BTreeMap::from([(btc.clone(), quote)]);
        let symbols = [btc.clone(), eth.clone()];
        // One missed quote in the first cycle (200 ms after start): 0.2 s, not forever.
        let ages = staleness_of(&symbols, &quotes, now, 200);
        assert_eq!((ages[&btc], ages[&eth]), (dec!(2), dec!(0.2)));
        let spot = crate::config::profiles::builtin(tradingbot_crds::Profile::Spot).guards;
        let mut guards = GuardMonitor::new(spot.clone(), true, None);
        guards.measure(dec!(1000), now, ages, &[]);
        assert!(
            guards.evaluate(Instance::Prod, now).is_empty(),
            "no trip, no latched Halt"
        );
        // A feed that never delivers is stale once the levels pass (spot: 180 s / 360 s).
        let mut guards = GuardMonitor::new(spot, true, None);
        guards.measure(dec!(1000), now, staleness_of(&symbols, &quotes, now, 400_000), &[]);
        guards.evaluate(Instance::Prod, now);
        assert_eq!(guards.mode().0, TradingMode::Halted);
    }
}
