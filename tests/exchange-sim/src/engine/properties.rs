//! Property test: balances and holds stay consistent under random order flow.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::products::catalogue;

#[derive(Debug, Clone)]
enum Action {
    Limit {
        buy: bool,
        size: u32,
        offset_bps: i64,
        post_only: bool,
    },
    Market {
        buy: bool,
        units: u32,
    },
    Stop {
        buy: bool,
        size: u32,
        offset_bps: i64,
    },
    Tick(u8),
    Shock(i8),
    Cancel(usize),
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        (any::<bool>(), 1..20_000u32, -300..300i64, any::<bool>()).prop_map(|(buy, size, offset_bps, post_only)| {
            Action::Limit {
                buy,
                size,
                offset_bps,
                post_only,
            }
        }),
        (any::<bool>(), 1..50_000u32).prop_map(|(buy, units)| Action::Market { buy, units }),
        (any::<bool>(), 1..20_000u32, 10..300i64).prop_map(|(buy, size, offset_bps)| Action::Stop {
            buy,
            size,
            offset_bps
        }),
        (1..5u8).prop_map(Action::Tick),
        (-8..8i8).prop_map(Action::Shock),
        (0..40usize).prop_map(Action::Cancel),
    ]
}

fn exchange() -> (Exchange, String) {
    let now = Utc::now();
    let specs: Vec<ProductSpec> = catalogue().into_iter().filter(|p| p.id == "BTC-USD").collect();
    let market = Market::new(specs, 3, 30, now);
    let (events, _) = broadcast::channel(16);
    let mut exchange = Exchange::new(market, FeeRates::default(), events);
    let key = KeySpec::new("k", "unused").with_balances([("USD", Decimal::from(100_000)), ("BTC", Decimal::from(2))]);
    let uuid = exchange.upsert_portfolio(&key, now);
    (exchange, uuid)
}

fn check(exchange: &Exchange, uuid: &str) -> Result<(), TestCaseError> {
    let portfolio = exchange.accounts.get(uuid).expect("portfolio");
    let mut held: BTreeMap<String, Decimal> = BTreeMap::new();
    for order in exchange.orders_of(uuid) {
        if order.is_open() {
            prop_assert!(order.remaining() > Decimal::ZERO, "open order with nothing left");
            *held.entry(order.hold_currency.clone()).or_default() += order.hold;
        } else {
            prop_assert_eq!(order.hold, Decimal::ZERO);
        }
    }
    for (currency, balance) in &portfolio.balances {
        prop_assert!(balance.total >= Decimal::ZERO, "{} total {}", currency, balance.total);
        prop_assert!(balance.hold >= Decimal::ZERO);
        prop_assert!(
            balance.hold <= balance.total,
            "{} hold {} > total {}",
            currency,
            balance.hold,
            balance.total
        );
        prop_assert_eq!(
            balance.hold,
            held.get(currency).copied().unwrap_or_default(),
            "hold of {}",
            currency
        );
    }
    let bought: Decimal = exchange
        .fills_of(uuid)
        .map(|f| if f.side == Side::Buy { f.size } else { -f.size })
        .sum();
    prop_assert_eq!(portfolio.balances["BTC"].total, Decimal::from(2) + bought);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn balances_and_holds_stay_consistent(actions in prop::collection::vec(action(), 1..60)) {
        let (mut exchange, uuid) = exchange();
        let caller = Caller { key_name: "k", portfolio_uuid: &uuid };
        let spec = exchange.spec("BTC-USD").cloned().expect("spec");
        for (i, action) in actions.into_iter().enumerate() {
            let now = Utc::now();
            let mid = exchange.mid("BTC-USD").expect("mid");
            let at = |bps: i64| floor_to(mid * (Decimal::ONE + Decimal::new(bps, 4)), spec.quote_increment);
            let size = |units: u32| Decimal::new(i64::from(units), 5);
            let side = |buy: bool| if buy { Side::Buy } else { Side::Sell };
            let config = match action {
                Action::Limit { buy, size: s, offset_bps, post_only } => Some((side(buy), OrderConfig::LimitGtc {
                    base_size: size(s), limit_price: at(offset_bps), post_only,
                })),
                Action::Market { buy, units } => Some((side(buy), if buy {
                    OrderConfig::MarketIoc(MarketSize::Quote(Decimal::from(units)))
                } else {
                    OrderConfig::MarketIoc(MarketSize::Base(size(units)))
                })),
                Action::Stop { buy, size: s, offset_bps } => {
                    let (stop, direction) = if buy { (at(offset_bps), StopDirection::Up) } else { (at(-offset_bps), StopDirection::Down) };
                    Some((side(buy), OrderConfig::StopLimitGtc { base_size: size(s), limit_price: stop, stop_price: stop, stop_direction: direction }))
                }
                Action::Tick(n) => {
                    for _ in 0..n { exchange.tick(now); }
                    None
                }
                Action::Shock(p) => {
                    let _ = exchange.shock("BTC-USD", Decimal::from(p), now);
                    None
                }
                Action::Cancel(n) => {
                    let open: Vec<String> = exchange.orders_of(&uuid).into_iter().filter(|o| o.is_open()).map(|o| o.id.clone()).collect();
                    if let Some(id) = open.get(n % open.len().max(1)) {
                        prop_assert!(exchange.cancel(&uuid, id, now).is_ok());
                    }
                    None
                }
            };
            if let Some((side, config)) = config {
                let intent = OrderIntent {
                    client_order_id: format!("c{i}"),
                    product_id: "BTC-USD".into(),
                    side,
                    config,
                    leverage: None,
                    margin_type: None,
                };
                let _ = exchange.place_order(caller, &intent, now);
            }
            check(&exchange, &uuid)?;
        }
    }
}
