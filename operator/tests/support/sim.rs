//! The exchange simulator, run in the test process and reachable from pods through the bridge
//! gateway, with keys, credential Secrets and a client of its own for the test.

use exchange_sim::{FaultRequest, Freeze, GeneratedKey, KeyAlgorithm, PriceShock, SimConfig, Simulator, generate_key};
use perps_bot::broker::Broker;
use perps_bot::coinbase::broker::CoinbaseBroker;
use perps_bot::coinbase::credentials::Credentials;
use perps_bot::coinbase::{ConnectOptions, connect};
use perps_bot::config::{BotConfig, ConfigOverrides};
use perps_bot::domain::{Order, OrderKind, OrderRequest, Side, TimeInForce};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;
use test_harness::{TestNamespace, host_from_pods};
use tradingbot_crds::Profile;

pub struct PodExchange {
    pub sim: Simulator,
}

impl PodExchange {
    /// A simulator on all interfaces (pods reach it at the bridge gateway), ticking every 250 ms.
    pub async fn start() -> Self {
        let config = SimConfig {
            bind: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            tick: Duration::from_millis(250),
            private_rate_limit: 0,
            public_rate_limit: 0,
            ..SimConfig::default()
        };
        Self {
            sim: Simulator::start(config).await.expect("the simulator starts"),
        }
    }

    pub fn api_url_for_pods(&self) -> String {
        format!(
            "http://{}:{}/api/v3/brokerage",
            host_from_pods(),
            self.sim.addr().port()
        )
    }

    pub fn ws_url_for_pods(&self) -> String {
        format!("ws://{}:{}/ws", host_from_pods(), self.sim.addr().port())
    }

    /// Operator chart values pointing bots without their own URLs at this simulator.
    pub fn operator_values(&self) -> Value {
        json!({"exchange": {"defaultApiBaseUrl": self.api_url_for_pods(), "defaultWsUrl": self.ws_url_for_pods()}})
    }

    /// Register a trading key holding `balances` (e.g. `[("USD", 10000), ("BTC", 1)]`).
    pub fn key(&self, balances: &[(&str, Decimal)], derivatives: bool) -> GeneratedKey {
        let key = generate_key(KeyAlgorithm::Es256);
        let mut spec = key
            .key_spec()
            .with_balances(balances.iter().map(|(c, v)| (c.to_string(), *v)));
        if derivatives {
            spec = spec.with_derivatives();
        }
        self.sim.register_key(spec).expect("key registered");
        key
    }

    /// A Secret holding the key as Coinbase issues it (cdp_api_key.json).
    pub fn secret(&self, ns: &TestNamespace, name: &str, key: &GeneratedKey) {
        let literal = format!("--from-literal=cdp_api_key.json={}", key.cdp_key_json());
        ns.kubectl(&["create", "secret", "generic", name, &literal]);
    }

    pub fn shock(&self, product_id: &str, percent: i64) {
        self.sim
            .inject(FaultRequest {
                price_shock: Some(PriceShock {
                    product_id: product_id.into(),
                    percent: Decimal::from(percent),
                }),
                ..Default::default()
            })
            .expect("price shock");
    }

    /// Move `products` up and down by `percent` every `every` until the mover is dropped, so
    /// that the bots' moving averages cross and they trade (a test of "never two instances
    /// trade at once" needs instances that trade).
    pub fn keep_moving(&self, products: &[&str], percent: i64, every: Duration) -> MarketMover {
        let url = format!("http://{}/admin/faults", self.sim.addr());
        let products: Vec<String> = products.iter().map(|p| p.to_string()).collect();
        let task = tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut up = true;
            loop {
                tokio::time::sleep(every).await;
                let step = if up { percent } else { -percent };
                for product in &products {
                    let body = json!({"price_shock": {"product_id": product, "percent": step}});
                    let _ = client.post(&url).json(&body).send().await;
                }
                up = !up;
            }
        });
        MarketMover { task }
    }

    pub fn freeze(&self, frozen: bool) {
        self.sim
            .inject(FaultRequest {
                freeze: Some(Freeze { frozen, products: None }),
                ..Default::default()
            })
            .expect("freeze");
    }

    pub fn mid(&self, product_id: &str) -> Decimal {
        self.sim.mid_price(product_id).expect("a listed product")
    }

    /// A client of the simulator with `key` (the test's own, over loopback).
    pub async fn client(&self, key: &GeneratedKey) -> CoinbaseBroker {
        let credentials = Credentials::from_json(&key.cdp_key_json(), "test key").expect("key parses");
        let flags = ConfigOverrides {
            dry_run: Some(false),
            symbols: Some(vec!["BTC-USD".parse().unwrap()]),
            ..Default::default()
        };
        let config = BotConfig::resolve(Some(Profile::Demo), &Default::default(), &flags).unwrap();
        let options = ConnectOptions::new(self.sim.api_url(), None, "test").with_credentials(credentials);
        connect(options, &config).await.expect("the test client connects").1
    }

    /// Rest a limit buy far below the market under a client order id of the bot's identity.
    pub async fn resting_order(&self, client: &CoinbaseBroker, client_order_id: &str) -> Order {
        let price = (self.mid("BTC-USD") / Decimal::TWO).round_dp(2);
        let order = OrderRequest {
            client_order_id: client_order_id.into(),
            symbol: "BTC-USD".parse().unwrap(),
            side: Side::Buy,
            quantity: Decimal::new(1, 3),
            kind: OrderKind::Limit { limit_price: price },
            tif: TimeInForce::Gtc,
            reduce_only: false,
            leverage: None,
            preview_id: None,
        };
        client.place_order(&order).await.expect("resting order placed")
    }
}

/// Stops moving the market when dropped.
pub struct MarketMover {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MarketMover {
    fn drop(&mut self) {
        self.task.abort();
    }
}
