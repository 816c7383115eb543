//! No request input makes the simulator fail: arbitrary bodies, tokens and queries get
//! documented 4xx answers (or 200 business outcomes), never a 5xx or a dropped connection.

mod common;

use common::TestSim;
use exchange_sim::SimConfig;
use proptest::prelude::*;
use reqwest::Method;
use serde_json::{Value, json};

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        "[a-zA-Z0-9_.\\-]{0,12}".prop_map(Value::String),
        prop_oneof![
            Just("BTC-USD"),
            Just("BTC-PERP-INTX"),
            Just("BUY"),
            Just("SELL"),
            Just("0.001"),
            Just("1e9"),
            Just("-1"),
            Just("99999999999999999999999999999"),
            Just("0.0000000000000000000000000001"),
            Just("2030-01-01T00:00:00Z"),
            Just("STOP_DIRECTION_STOP_UP"),
        ]
        .prop_map(|s| Value::String(s.to_string())),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("client_order_id".to_string()),
                    Just("product_id".to_string()),
                    Just("side".to_string()),
                    Just("order_configuration".to_string()),
                    Just("market_market_ioc".to_string()),
                    Just("limit_limit_gtc".to_string()),
                    Just("limit_limit_gtd".to_string()),
                    Just("limit_limit_fok".to_string()),
                    Just("sor_limit_ioc".to_string()),
                    Just("stop_limit_stop_limit_gtc".to_string()),
                    Just("base_size".to_string()),
                    Just("quote_size".to_string()),
                    Just("limit_price".to_string()),
                    Just("stop_price".to_string()),
                    Just("stop_direction".to_string()),
                    Just("end_time".to_string()),
                    Just("post_only".to_string()),
                    Just("leverage".to_string()),
                    Just("order_ids".to_string()),
                    Just("size".to_string()),
                    Just("fail_next".to_string()),
                    Just("freeze".to_string()),
                    Just("price_shock".to_string()),
                    "[a-z_]{1,8}",
                ],
                inner,
                0..6,
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A request body shaped like an order with fuzzed leaves.
fn order_like() -> impl Strategy<Value = Value> {
    let config_kind = prop_oneof![
        Just("market_market_ioc"),
        Just("limit_limit_gtc"),
        Just("limit_limit_gtd"),
        Just("limit_limit_fok"),
        Just("sor_limit_ioc"),
        Just("stop_limit_stop_limit_gtc"),
        Just("twap_limit_gtd"),
    ];
    (
        json_value(),
        config_kind,
        json_value(),
        json_value(),
        json_value(),
        json_value(),
        json_value(),
    )
        .prop_map(|(id, kind, base, quote, price, stop, leverage)| {
            json!({
                "client_order_id": id,
                "product_id": "BTC-USD",
                "side": "BUY",
                "leverage": leverage,
                "order_configuration": {kind: {
                    "base_size": base, "quote_size": quote, "limit_price": price,
                    "stop_price": stop, "stop_direction": "STOP_DIRECTION_STOP_DOWN",
                    "end_time": "2035-01-01T00:00:00Z"
                }},
            })
        })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn unlimited() -> SimConfig {
    SimConfig {
        private_rate_limit: 0,
        public_rate_limit: 0,
        ..common::test_config()
    }
}

fn assert_documented(status: u16, path: &str, body: &Value) {
    assert!(matches!(status, 200 | 400 | 401 | 404), "{path}: {status} {body}");
}

#[test]
fn arbitrary_bodies_never_break_the_api() {
    let rt = runtime();
    let t = rt.block_on(TestSim::with(unlimited(), |spec| spec.with_derivatives()));
    let paths = [
        "/api/v3/brokerage/orders",
        "/api/v3/brokerage/orders/preview",
        "/api/v3/brokerage/orders/batch_cancel",
        "/api/v3/brokerage/orders/close_position",
    ];
    let config = ProptestConfig {
        cases: 96,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(body in prop_oneof![json_value(), order_like()], index in 0..paths.len())| {
        let path = paths[index];
        let (status, response) = rt.block_on(t.post(path, &body));
        assert_documented(status, path, &response);
    });
    proptest!(config, |(body in json_value())| {
        for path in ["/admin/faults", "/admin/keys", "/admin/balances", "/admin/products/BTC-USD"] {
            let (status, response) = rt.block_on(t.admin_post(path, &body));
            assert_documented(status, path, &response);
            rt.block_on(t.admin_post("/admin/faults", &json!({"clear": true})));
        }
    });
    // The simulator still works afterwards.
    let (status, _) = rt.block_on(t.get("/api/v3/brokerage/accounts"));
    assert_eq!(status, 200);
}

#[test]
fn arbitrary_tokens_are_unauthorized() {
    let rt = runtime();
    let t = rt.block_on(TestSim::with(unlimited(), |spec| spec));
    let config = ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(token in "[ -~]{0,300}", prefix in prop_oneof![Just("Bearer "), Just(""), Just("Basic ")])| {
        let header = format!("{prefix}{token}");
        let Ok(value) = reqwest::header::HeaderValue::from_str(&header) else { return Ok(()); };
        let response = rt
            .block_on(async { t.http.get(t.url("/api/v3/brokerage/accounts")).header("authorization", value).send().await })
            .expect("send");
        prop_assert_eq!(response.status().as_u16(), 401);
    });
    // Structurally valid JWT with garbage claims.
    proptest!(config, |(claims in json_value())| {
        let key = jsonwebtoken::EncodingKey::from_secret(b"x");
        let token = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap_or_default();
        let response = rt
            .block_on(async { t.http.get(t.url("/api/v3/brokerage/accounts")).bearer_auth(token).send().await })
            .expect("send");
        prop_assert_eq!(response.status().as_u16(), 401);
    });
}

#[test]
fn arbitrary_queries_and_paths_get_documented_answers() {
    let rt = runtime();
    let t = rt.block_on(TestSim::with(unlimited(), |spec| spec));
    let config = ProptestConfig {
        cases: 96,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let targets = [
        "/api/v3/brokerage/products/BTC-USD/candles",
        "/api/v3/brokerage/products",
        "/api/v3/brokerage/accounts",
        "/api/v3/brokerage/orders/historical/batch",
        "/api/v3/brokerage/orders/historical/fills",
        "/api/v3/brokerage/product_book",
        "/api/v3/brokerage/best_bid_ask",
        "/api/v3/brokerage/products/BTC-USD/ticker",
    ];
    let key = prop_oneof![
        Just("start"),
        Just("end"),
        Just("granularity"),
        Just("limit"),
        Just("cursor"),
        Just("product_ids"),
        Just("order_status"),
        Just("product_id"),
        Just("product_type"),
        Just("start_date"),
        Just("offset"),
    ];
    let value = prop_oneof![
        "[0-9]{0,25}",
        "-[0-9]{1,20}",
        "[A-Z_]{0,14}",
        "[ -~]{0,16}",
        Just("ONE_MINUTE".to_string()),
        Just("ONE_DAY".to_string()),
    ];
    proptest!(config, |(index in 0..targets.len(), pairs in prop::collection::vec((key, value), 0..5))| {
        let query: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs.iter().map(|(k, v)| (*k, v.as_str())))
            .finish();
        let path = format!("{}?{query}", targets[index]);
        let response = rt.block_on(async { t.signed(&t.key, Method::GET, &path).send().await }).expect("send");
        let status = response.status().as_u16();
        prop_assert!(matches!(status, 200 | 400 | 404), "{} -> {}", path, status);
    });
    proptest!(config, |(segment in "[a-zA-Z0-9_.~%-]{1,40}")| {
        for template in ["/api/v3/brokerage/products/{}", "/api/v3/brokerage/orders/historical/{}", "/api/v3/brokerage/intx/positions/{}"] {
            let path = template.replace("{}", &segment);
            let response = rt.block_on(async { t.signed(&t.key, Method::GET, &path).send().await }).expect("send");
            let status = response.status().as_u16();
            prop_assert!(matches!(status, 200 | 400 | 404), "{} -> {}", path, status);
        }
    });
}
