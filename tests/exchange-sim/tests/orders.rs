//! Order entry, matching, fills, balances and rejections.

mod common;

use std::collections::BTreeMap;

use common::{TestSim, dec};
use exchange_sim::{CLIENT_INSTANCE_HEADER, ProductFlagsUpdate, SimConfig};
use reqwest::Method;
use rust_decimal::Decimal;
use serde_json::{Value, json};

fn market_buy_quote(coid: &str, product: &str, quote: &str) -> Value {
    json!({
        "client_order_id": coid,
        "product_id": product,
        "side": "BUY",
        "order_configuration": {"market_market_ioc": {"quote_size": quote}},
    })
}

fn limit(coid: &str, side: &str, kind: &str, size: &str, price: Decimal, extra: Value) -> Value {
    let mut config = json!({"base_size": size, "limit_price": price.to_string()});
    if let (Some(c), Some(e)) = (config.as_object_mut(), extra.as_object()) {
        c.extend(e.clone());
    }
    json!({
        "client_order_id": coid,
        "product_id": "BTC-USD",
        "side": side,
        "order_configuration": {kind: config},
    })
}

fn assert_rejected(response: &Value, error: &str) {
    assert_eq!(response["success"], false, "{response}");
    assert_eq!(response["error_response"]["error"], error, "{response}");
    assert!(
        response["error_response"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
    assert!(response["error_response"]["preview_failure_reason"].is_string());
    assert!(response["error_response"]["new_order_failure_reason"].is_string());
    assert!(response["failure_reason"].is_string());
}

async fn fills_of(t: &TestSim, order_id: &str) -> Vec<Value> {
    let (status, body) = t
        .get(&format!(
            "/api/v3/brokerage/orders/historical/fills?order_ids={order_id}"
        ))
        .await;
    assert_eq!(status, 200, "{body}");
    body["fills"].as_array().unwrap().clone()
}

fn shock(t: &TestSim, product: &str, percent: i64) {
    t.sim
        .inject(exchange_sim::FaultRequest {
            price_shock: Some(exchange_sim::PriceShock {
                product_id: product.into(),
                percent: Decimal::from(percent),
            }),
            ..Default::default()
        })
        .unwrap();
}

#[tokio::test]
async fn market_buy_by_quote_fills_as_taker_with_fees() {
    let t = TestSim::start().await;
    let usd_before = t.available("USD").await;
    let response = t.order(market_buy_quote("mb-1", "BTC-USD", "1000")).await;
    assert_eq!(response["success"], true, "{response}");
    let success = &response["success_response"];
    assert_eq!(success["product_id"], "BTC-USD");
    assert_eq!(success["side"], "BUY");
    assert_eq!(success["client_order_id"], "mb-1");
    let order_id = success["order_id"].as_str().unwrap();

    let order = t.order_by_id(order_id).await;
    assert_eq!(order["status"], "FILLED");
    assert_eq!(order["order_type"], "MARKET");
    assert_eq!(order["time_in_force"], "IMMEDIATE_OR_CANCEL");
    let filled = dec(&order["filled_size"]);
    let value = dec(&order["filled_value"]);
    let fees = dec(&order["total_fees"]);
    assert!(filled > Decimal::ZERO);
    assert_eq!(fees, (value * Decimal::new(6, 3)).round_dp(10));
    assert!(value + fees <= Decimal::from(1000));
    assert!(value + fees > Decimal::new(99_990, 2));

    let fills = fills_of(&t, order_id).await;
    assert!(!fills.is_empty());
    assert!(
        fills
            .iter()
            .all(|f| f["liquidity_indicator"] == "TAKER" && f["side"] == "BUY")
    );
    let commission: Decimal = fills.iter().map(|f| dec(&f["commission"])).sum();
    assert_eq!(commission, fees);

    assert_eq!(t.available("USD").await, usd_before - value - fees);
    assert_eq!(t.available("BTC").await, filled);
}

#[tokio::test]
async fn market_sell_by_base_requires_and_credits_balances() {
    let t = TestSim::start().await;
    let response = t
        .order(json!({
            "client_order_id": "ms-0",
            "product_id": "ETH-USD",
            "side": "SELL",
            "order_configuration": {"market_market_ioc": {"base_size": "1"}},
        }))
        .await;
    assert_rejected(&response, "INSUFFICIENT_FUND");

    t.sim
        .set_balances(&t.key.name, BTreeMap::from([("ETH".to_string(), Decimal::from(2))]))
        .unwrap();
    let usd_before = t.available("USD").await;
    let response = t
        .order(json!({
            "client_order_id": "ms-1",
            "product_id": "ETH-USD",
            "side": "SELL",
            "order_configuration": {"market_market_ioc": {"base_size": "1.5"}},
        }))
        .await;
    assert_eq!(response["success"], true, "{response}");
    let order = t
        .order_by_id(response["success_response"]["order_id"].as_str().unwrap())
        .await;
    assert_eq!(order["status"], "FILLED");
    assert_eq!(dec(&order["filled_size"]), Decimal::new(15, 1));
    let proceeds = dec(&order["filled_value"]) - dec(&order["total_fees"]);
    assert_eq!(t.available("USD").await, usd_before + proceeds);
    assert_eq!(t.available("ETH").await, Decimal::new(5, 1));
}

#[tokio::test]
async fn oversized_market_order_walks_the_book() {
    let t = TestSim::start().await;
    let (_, ask) = t.best_bid_ask("BTC-USD").await;
    let response = t
        .order(json!({
            "client_order_id": "big-1",
            "product_id": "BTC-USD",
            "side": "BUY",
            "order_configuration": {"market_market_ioc": {"base_size": "1"}},
        }))
        .await;
    assert_eq!(response["success"], true, "{response}");
    let order = t.order_by_id(response["order_id"].as_str().unwrap()).await;
    assert_eq!(dec(&order["filled_size"]), Decimal::ONE);
    assert!(
        dec(&order["average_filled_price"]) > ask,
        "should pay beyond the best ask"
    );
    let fills = fills_of(&t, response["order_id"].as_str().unwrap()).await;
    assert!(fills.len() > 1);
}

#[tokio::test]
async fn limit_gtc_rests_with_hold_then_fills_as_maker_when_price_crosses() {
    let t = TestSim::start().await;
    let (bid, _) = t.best_bid_ask("BTC-USD").await;
    let price = (bid * Decimal::new(97, 2)).round_dp(2);
    let response = t
        .order(limit(
            "gtc-1",
            "BUY",
            "limit_limit_gtc",
            "0.01",
            price,
            json!({"post_only": false}),
        ))
        .await;
    assert_eq!(response["success"], true, "{response}");
    let id = response["order_id"].as_str().unwrap().to_string();
    let order = t.order_by_id(&id).await;
    assert_eq!(order["status"], "OPEN");
    assert_eq!(order["time_in_force"], "GOOD_UNTIL_CANCELLED");
    let hold = dec(&order["outstanding_hold_amount"]);
    assert_eq!(hold, price * Decimal::new(1, 2) * Decimal::new(1006, 3));

    let (_, accounts) = t.get("/api/v3/brokerage/accounts").await;
    let usd = accounts["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["currency"] == "USD")
        .unwrap()
        .clone();
    assert_eq!(dec(&usd["hold"]["value"]), hold);

    shock(&t, "BTC-USD", -5);
    let order = t.order_by_id(&id).await;
    assert_eq!(order["status"], "FILLED", "{order}");
    assert_eq!(dec(&order["average_filled_price"]), price);
    let fills = fills_of(&t, &id).await;
    assert!(fills.iter().all(|f| f["liquidity_indicator"] == "MAKER"));
    let value = price * Decimal::new(1, 2);
    assert_eq!(dec(&order["total_fees"]), (value * Decimal::new(4, 3)).round_dp(10));
    assert_eq!(
        t.available("USD").await,
        Decimal::from(100_000) - value - dec(&order["total_fees"])
    );
    assert_eq!(t.available("BTC").await, Decimal::new(1, 2));
}

#[tokio::test]
async fn crossing_limit_fills_at_once_and_post_only_is_rejected() {
    let t = TestSim::start().await;
    let (_, ask) = t.best_bid_ask("BTC-USD").await;
    let above = (ask * Decimal::new(101, 2)).round_dp(2);
    let response = t
        .order(limit(
            "po-1",
            "BUY",
            "limit_limit_gtc",
            "0.001",
            above,
            json!({"post_only": true}),
        ))
        .await;
    assert_rejected(&response, "INVALID_LIMIT_PRICE_POST_ONLY");
    assert_eq!(
        response["error_response"]["preview_failure_reason"],
        "PREVIEW_INVALID_LIMIT_PRICE_POST_ONLY"
    );

    let response = t
        .order(limit("cross-1", "BUY", "limit_limit_gtc", "0.001", above, json!({})))
        .await;
    let order = t.order_by_id(response["order_id"].as_str().unwrap()).await;
    assert_eq!(order["status"], "FILLED");
    assert!(dec(&order["average_filled_price"]) <= above);

    let below = (ask * Decimal::new(98, 2)).round_dp(2);
    let response = t
        .order(limit(
            "po-2",
            "BUY",
            "limit_limit_gtc",
            "0.001",
            below,
            json!({"post_only": true}),
        ))
        .await;
    let order = t.order_by_id(response["order_id"].as_str().unwrap()).await;
    assert_eq!(order["status"], "OPEN");
}

#[tokio::test]
async fn gtd_expires_and_releases_its_hold() {
    let t = TestSim::start().await;
    let (bid, _) = t.best_bid_ask("BTC-USD").await;
    let price = (bid * Decimal::new(90, 2)).round_dp(2);
    let end = (chrono::Utc::now() + chrono::Duration::milliseconds(600)).to_rfc3339();
    let response = t
        .order(limit(
            "gtd-1",
            "BUY",
            "limit_limit_gtd",
            "0.01",
            price,
            json!({"end_time": end}),
        ))
        .await;
    let id = response["order_id"].as_str().unwrap().to_string();
    assert_eq!(t.order_by_id(&id).await["status"], "OPEN");
    assert!(t.available("USD").await < Decimal::from(100_000));
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    t.sim.tick(1);
    let order = t.order_by_id(&id).await;
    assert_eq!(order["status"], "EXPIRED");
    assert_eq!(order["time_in_force"], "GOOD_UNTIL_DATE_TIME");
    assert_eq!(t.available("USD").await, Decimal::from(100_000));

    let past = (chrono::Utc::now() - chrono::Duration::seconds(5)).to_rfc3339();
    let response = t
        .order(limit(
            "gtd-2",
            "BUY",
            "limit_limit_gtd",
            "0.01",
            price,
            json!({"end_time": past}),
        ))
        .await;
    assert_rejected(&response, "INVALID_END_TIME");
}

#[tokio::test]
async fn fill_or_kill_fills_completely_or_cancels() {
    let t = TestSim::start().await;
    let (_, ask) = t.best_bid_ask("BTC-USD").await;
    let response = t
        .order(limit("fok-1", "BUY", "limit_limit_fok", "0.5", ask, json!({})))
        .await;
    assert_eq!(response["success"], true, "{response}");
    let order = t.order_by_id(response["order_id"].as_str().unwrap()).await;
    // The best level holds at most 60000 USD, far less than 0.5 BTC at ~95000.
    assert_eq!(order["status"], "CANCELLED");
    assert_eq!(dec(&order["filled_size"]), Decimal::ZERO);
    assert_eq!(order["time_in_force"], "FILL_OR_KILL");

    let generous = (ask * Decimal::new(102, 2)).round_dp(2);
    let response = t
        .order(limit("fok-2", "BUY", "limit_limit_fok", "0.2", generous, json!({})))
        .await;
    let order = t.order_by_id(response["order_id"].as_str().unwrap()).await;
    assert_eq!(order["status"], "FILLED");
    assert_eq!(dec(&order["filled_size"]), Decimal::new(2, 1));
}

#[tokio::test]
async fn immediate_or_cancel_limit_cancels_the_remainder() {
    let t = TestSim::start().await;
    let (_, ask) = t.best_bid_ask("BTC-USD").await;
    let response = t
        .order(limit("ioc-1", "BUY", "sor_limit_ioc", "0.9", ask, json!({})))
        .await;
    let order = t.order_by_id(response["order_id"].as_str().unwrap()).await;
    assert_eq!(order["status"], "CANCELLED", "{order}");
    let filled = dec(&order["filled_size"]);
    assert!(filled > Decimal::ZERO && filled < Decimal::new(9, 1));
    assert_eq!(dec(&order["outstanding_hold_amount"]), Decimal::ZERO);
}

#[tokio::test]
async fn stop_limit_triggers_on_its_direction() {
    let t = TestSim::start().await;
    t.sim
        .set_balances(&t.key.name, BTreeMap::from([("BTC".to_string(), Decimal::ONE)]))
        .unwrap();
    let mid = t.sim.mid_price("BTC-USD").unwrap();
    let stop = (mid * Decimal::new(97, 2)).round_dp(2);
    let limit_price = (mid * Decimal::new(90, 2)).round_dp(2);
    let body = json!({
        "client_order_id": "stop-1",
        "product_id": "BTC-USD",
        "side": "SELL",
        "order_configuration": {"stop_limit_stop_limit_gtc": {
            "base_size": "0.1",
            "limit_price": limit_price.to_string(),
            "stop_price": stop.to_string(),
            "stop_direction": "STOP_DIRECTION_STOP_DOWN",
        }},
    });
    let response = t.order(body).await;
    assert_eq!(response["success"], true, "{response}");
    let id = response["order_id"].as_str().unwrap().to_string();
    let order = t.order_by_id(&id).await;
    assert_eq!(order["status"], "OPEN");
    assert_eq!(order["order_type"], "STOP_LIMIT");
    assert_eq!(order["trigger_status"], "STOP_PENDING");
    assert_eq!(t.available("BTC").await, Decimal::new(9, 1));

    shock(&t, "BTC-USD", -5);
    let order = t.order_by_id(&id).await;
    assert_eq!(order["trigger_status"], "STOP_TRIGGERED");
    assert_eq!(order["status"], "FILLED", "{order}");
    assert_eq!(t.available("BTC").await, Decimal::new(9, 1));

    let wrong = json!({
        "client_order_id": "stop-2",
        "product_id": "BTC-USD",
        "side": "BUY",
        "order_configuration": {"stop_limit_stop_limit_gtc": {
            "base_size": "0.1",
            "limit_price": limit_price.to_string(),
            "stop_price": limit_price.to_string(),
            "stop_direction": "STOP_DIRECTION_STOP_UP",
        }},
    });
    assert_rejected(&t.order(wrong).await, "INVALID_STOP_PRICE");
}

#[tokio::test]
async fn batch_cancel_cancels_open_orders_only() {
    let t = TestSim::start().await;
    let (bid, _) = t.best_bid_ask("BTC-USD").await;
    let price = (bid * Decimal::new(95, 2)).round_dp(2);
    let response = t
        .order(limit("bc-1", "BUY", "limit_limit_gtc", "0.01", price, json!({})))
        .await;
    let id = response["order_id"].as_str().unwrap().to_string();
    assert!(t.available("USD").await < Decimal::from(100_000));
    let (status, body) = t
        .post(
            "/api/v3/brokerage/orders/batch_cancel",
            &json!({"order_ids": [id, "missing"]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][0]["success"], true);
    assert_eq!(body["results"][0]["order_id"], id.as_str());
    assert_eq!(body["results"][1]["success"], false);
    assert_eq!(body["results"][1]["failure_reason"], "UNKNOWN_CANCEL_ORDER");
    assert_eq!(t.order_by_id(&id).await["status"], "CANCELLED");
    assert_eq!(t.available("USD").await, Decimal::from(100_000));

    let (_, again) = t
        .post("/api/v3/brokerage/orders/batch_cancel", &json!({"order_ids": [id]}))
        .await;
    assert_eq!(again["results"][0]["success"], false);
    let (status, _) = t.post("/api/v3/brokerage/orders/batch_cancel", &json!({})).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn rejections_carry_reasons() {
    let t = TestSim::start().await;
    let (bid, _) = t.best_bid_ask("BTC-USD").await;
    let price = (bid * Decimal::new(95, 2)).round_dp(2);
    let cases = [
        (
            limit("r1", "BUY", "limit_limit_gtc", "0.000000001", price, json!({})),
            "INVALID_BASE_SIZE_TOO_SMALL",
        ),
        (
            limit("r2", "BUY", "limit_limit_gtc", "0.123456789", price, json!({})),
            "INVALID_SIZE_PRECISION",
        ),
        (
            limit(
                "r3",
                "BUY",
                "limit_limit_gtc",
                "0.01",
                price + Decimal::new(1, 3),
                json!({}),
            ),
            "INVALID_PRICE_PRECISION",
        ),
        (
            limit("r4", "BUY", "limit_limit_gtc", "0.00000002", price, json!({})),
            "INVALID_QUOTE_SIZE_TOO_SMALL",
        ),
        (
            limit("r5", "BUY", "limit_limit_gtc", "5", price, json!({})),
            "INSUFFICIENT_FUND",
        ),
        (
            limit("r6", "BUY", "limit_limit_gtc", "5000", price, json!({})),
            "INVALID_BASE_SIZE_TOO_LARGE",
        ),
        (market_buy_quote("r7", "NOPE-USD", "10"), "INVALID_PRODUCT_ID"),
        (market_buy_quote("r8", "BTC-PERP-INTX", "10"), "INVALID_PRODUCT_ID"),
        (market_buy_quote("r9", "BTC-USD", "0.5"), "INVALID_QUOTE_SIZE_TOO_SMALL"),
        (
            market_buy_quote("r10", "BTC-USD", "10.001"),
            "INVALID_QUOTE_SIZE_PRECISION",
        ),
        (market_buy_quote("r11", "BTC-USD", "200000"), "INSUFFICIENT_FUND"),
        (
            json!({"client_order_id": "r12", "product_id": "BTC-USD", "side": "BUY", "leverage": "3",
                   "order_configuration": {"market_market_ioc": {"quote_size": "10"}}}),
            "INVALID_LEVERAGE",
        ),
        (
            json!({"client_order_id": "r13", "product_id": "BTC-USD", "side": "BUY",
                   "order_configuration": {"trigger_bracket_gtc": {"base_size": "1"}}}),
            "UNSUPPORTED_ORDER_CONFIGURATION",
        ),
    ];
    for (body, error) in cases {
        let response = t.order(body.clone()).await;
        assert_rejected(&response, error);
    }
    assert_eq!(t.available("USD").await, Decimal::from(100_000));
    let log = t.sim.order_log();
    assert!(log.iter().all(|e| e.status == "FAILED" && e.order_id.is_none()));
    let (_, orders) = t.get("/api/v3/brokerage/orders/historical/batch").await;
    assert_eq!(orders["orders"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn product_status_flags() {
    let t = TestSim::start().await;
    t.sim
        .set_product_flags(
            "BTC-USD",
            ProductFlagsUpdate {
                trading_disabled: Some(true),
                ..Default::default()
            },
        )
        .unwrap();
    assert_rejected(
        &t.order(market_buy_quote("f1", "BTC-USD", "10")).await,
        "UNTRADABLE_PRODUCT",
    );
    let (_, product) = t.get("/api/v3/brokerage/products/BTC-USD").await;
    assert_eq!(product["trading_disabled"], true);

    let (status, _) = t
        .admin_post("/admin/products/ETH-USD", &json!({"cancel_only": true}))
        .await;
    assert_eq!(status, 200);
    assert_rejected(
        &t.order(market_buy_quote("f2", "ETH-USD", "10")).await,
        "ORDER_ENTRY_DISABLED",
    );

    t.admin_post("/admin/products/SOL-USD", &json!({"limit_only": true}))
        .await;
    assert_rejected(
        &t.order(market_buy_quote("f3", "SOL-USD", "10")).await,
        "UNSUPPORTED_ORDER_CONFIGURATION",
    );
    let (status, _) = t
        .admin_post("/admin/products/NOPE", &json!({"cancel_only": true}))
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn malformed_requests_are_400_and_not_logged() {
    let t = TestSim::start().await;
    let bad_bodies = [
        json!({}),
        json!({"product_id": "BTC-USD", "side": "BUY", "order_configuration": {"market_market_ioc": {"quote_size": "10"}}}),
        json!({"client_order_id": "m1", "product_id": "BTC-USD", "side": "HOLD", "order_configuration": {"market_market_ioc": {"quote_size": "10"}}}),
        json!({"client_order_id": "m2", "product_id": "BTC-USD", "side": "BUY", "order_configuration": {"market_market_ioc": {"quote_size": 10}}}),
        json!({"client_order_id": "m3", "product_id": "BTC-USD", "side": "BUY", "order_configuration": {"market_market_ioc": {"quote_size": "1e400"}}}),
        json!({"client_order_id": "m4", "product_id": "BTC-USD", "side": "BUY", "order_configuration": {"market_market_ioc": {"quote_size": "99999999999999999999999999999999999999"}}}),
        json!({"client_order_id": 7, "product_id": "BTC-USD", "side": "BUY"}),
    ];
    for body in bad_bodies {
        let (status, response) = t.post("/api/v3/brokerage/orders", &body).await;
        assert_eq!(status, 400, "{body} -> {response}");
        assert_eq!(response["error"], "INVALID_ARGUMENT");
    }
    let response = t
        .signed(&t.key, Method::POST, "/api/v3/brokerage/orders")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    assert!(t.sim.order_log().is_empty());
}

#[tokio::test]
async fn client_order_id_replay_returns_the_original_order() {
    let t = TestSim::start().await;
    let first = t.order(market_buy_quote("same-id", "BTC-USD", "100")).await;
    let replay = t.order(market_buy_quote("same-id", "BTC-USD", "5000")).await;
    assert_eq!(replay["success"], true);
    assert_eq!(replay["success_response"], first["success_response"]);
    let (_, orders) = t.get("/api/v3/brokerage/orders/historical/batch").await;
    assert_eq!(orders["orders"].as_array().unwrap().len(), 1);
    let log = t.sim.order_log();
    assert_eq!(log.len(), 2);
    assert!(!log[0].replay && log[1].replay);
    assert_eq!(log[0].order_id, log[1].order_id);
}

#[tokio::test]
async fn order_log_records_key_and_client_instance() {
    let t = TestSim::start().await;
    let response = t
        .signed(&t.key, Method::POST, "/api/v3/brokerage/orders")
        .header(CLIENT_INSTANCE_HEADER, "bot-a-0")
        .json(&market_buy_quote("log-1", "ETH-USD", "50"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    t.order(market_buy_quote("log-2", "ETH-USD", "50")).await;
    let (status, body) = t.admin_get("/admin/orders").await;
    assert_eq!(status, 200);
    let entries = body["orders"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0]["seq"], 1);
    assert_eq!(entries[0]["key_name"], t.key.name.as_str());
    assert_eq!(entries[0]["client_instance"], "bot-a-0");
    assert_eq!(entries[0]["client_order_id"], "log-1");
    assert_eq!(entries[0]["order_type"], "MARKET");
    assert_eq!(entries[0]["quote_size"], "50");
    assert_eq!(entries[0]["status"], "FILLED");
    assert_eq!(entries[0]["replay"], false);
    assert!(entries[0]["received_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(entries[1]["client_instance"], Value::Null);
}

#[tokio::test]
async fn order_history_filters_and_pages() {
    let t = TestSim::start().await;
    let (bid, _) = t.best_bid_ask("BTC-USD").await;
    let price = (bid * Decimal::new(95, 2)).round_dp(2);
    for i in 0..5 {
        t.order(limit(
            &format!("h-{i}"),
            "BUY",
            "limit_limit_gtc",
            "0.001",
            price,
            json!({}),
        ))
        .await;
    }
    t.order(market_buy_quote("h-m", "ETH-USD", "20")).await;

    let (_, open) = t
        .get("/api/v3/brokerage/orders/historical/batch?order_status=OPEN")
        .await;
    assert_eq!(open["orders"].as_array().unwrap().len(), 5);
    let (_, filled) = t
        .get("/api/v3/brokerage/orders/historical/batch?order_status=FILLED&product_ids=ETH-USD")
        .await;
    assert_eq!(filled["orders"].as_array().unwrap().len(), 1);

    let (_, page1) = t.get("/api/v3/brokerage/orders/historical/batch?limit=4").await;
    assert_eq!(page1["orders"].as_array().unwrap().len(), 4);
    assert_eq!(page1["has_next"], true);
    assert_eq!(page1["orders"][0]["client_order_id"], "h-m", "newest first");
    let cursor = page1["cursor"].as_str().unwrap();
    let (_, page2) = t
        .get(&format!(
            "/api/v3/brokerage/orders/historical/batch?limit=4&cursor={cursor}"
        ))
        .await;
    assert_eq!(page2["orders"].as_array().unwrap().len(), 2);
    assert_eq!(page2["has_next"], false);

    let (status, _) = t
        .get("/api/v3/brokerage/orders/historical/batch?order_status=WAITING")
        .await;
    assert_eq!(status, 400);
    let (status, body) = t.get("/api/v3/brokerage/orders/historical/does-not-exist").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"], "NOT_FOUND");

    let (_, fills) = t
        .get("/api/v3/brokerage/orders/historical/fills?product_ids=ETH-USD")
        .await;
    let fill = &fills["fills"][0];
    for field in [
        "entry_id",
        "trade_id",
        "order_id",
        "trade_time",
        "trade_type",
        "price",
        "size",
        "commission",
        "product_id",
        "liquidity_indicator",
        "side",
    ] {
        assert!(!fill[field].is_null(), "missing {field}: {fill}");
    }
}

#[tokio::test]
async fn preview_estimates_without_trading() {
    let t = TestSim::start().await;
    let (status, body) = t
        .post(
            "/api/v3/brokerage/orders/preview",
            &json!({"product_id": "BTC-USD", "side": "BUY", "order_configuration": {"market_market_ioc": {"quote_size": "500"}}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["errs"], json!([]));
    assert!(dec(&body["commission_total"]) > Decimal::ZERO);
    assert!(dec(&body["order_total"]) <= Decimal::from(500));
    assert!(dec(&body["best_bid"]) < dec(&body["best_ask"]));
    assert!(body["preview_id"].as_str().is_some_and(|p| !p.is_empty()));
    for field in [
        "base_size",
        "quote_size",
        "slippage",
        "leverage",
        "current_liquidation_buffer",
        "projected_liquidation_buffer",
    ] {
        assert!(body[field].is_string(), "{field}");
    }

    let (_, body) = t
        .post(
            "/api/v3/brokerage/orders/preview",
            &json!({"product_id": "BTC-USD", "side": "BUY", "order_configuration": {"market_market_ioc": {"quote_size": "500000"}}}),
        )
        .await;
    assert_eq!(body["errs"], json!(["PREVIEW_INSUFFICIENT_FUND"]));
    assert!(t.sim.order_log().is_empty());
    assert_eq!(t.available("USD").await, Decimal::from(100_000));
}

#[tokio::test]
async fn too_many_open_orders() {
    let config = SimConfig {
        private_rate_limit: 0,
        ..common::test_config()
    };
    let t = TestSim::with(config, |spec| spec).await;
    let (bid, _) = t.best_bid_ask("BTC-USD").await;
    let price = (bid * Decimal::new(50, 2)).round_dp(2);
    for i in 0..500 {
        let response = t
            .order(limit(
                &format!("many-{i}"),
                "BUY",
                "limit_limit_gtc",
                "0.0001",
                price,
                json!({}),
            ))
            .await;
        assert_eq!(response["success"], true, "{i}: {response}");
    }
    let response = t
        .order(limit("many-500", "BUY", "limit_limit_gtc", "0.0001", price, json!({})))
        .await;
    assert_rejected(&response, "TOO_MANY_OPEN_ORDERS");
    let other = t.order(market_buy_quote("other-product", "ETH-USD", "10")).await;
    assert_eq!(other["success"], true);
}

#[tokio::test]
async fn resting_limit_orders_can_be_previewed_and_edited_in_place() {
    let t = TestSim::start().await;
    let (bid, _) = t.best_bid_ask("BTC-USD").await;
    let low = (bid * Decimal::new(8, 1)).round_dp(2);
    let placed = t
        .order(limit("edit-1", "BUY", "limit_limit_gtc", "0.01", low, json!({})))
        .await;
    let order_id = placed["success_response"]["order_id"].as_str().unwrap().to_string();
    let usd = t.available("USD").await;

    let new_price = (low - Decimal::ONE).to_string();
    let (status, preview) = t
        .post(
            "/api/v3/brokerage/orders/edit_preview",
            &json!({"order_id": order_id, "price": new_price, "size": "0.02"}),
        )
        .await;
    assert_eq!(status, 200, "{preview}");
    assert_eq!(preview["errors"], json!([]), "{preview}");
    assert_eq!(preview["base_size"], "0.02");
    assert!(dec(&preview["order_total"]) > dec(&preview["quote_size"]), "{preview}");
    assert_eq!(t.available("USD").await, usd, "a preview changes nothing");

    let (status, edited) = t
        .post(
            "/api/v3/brokerage/orders/edit",
            &json!({"order_id": order_id, "price": new_price, "size": "0.02"}),
        )
        .await;
    assert_eq!(status, 200, "{edited}");
    assert_eq!(edited["success"], true, "{edited}");
    let order = t.order_by_id(&order_id).await;
    assert_eq!(order["order_configuration"]["limit_limit_gtc"]["base_size"], "0.02");
    assert_eq!(
        order["order_configuration"]["limit_limit_gtc"]["limit_price"],
        new_price
    );
    assert_eq!(order["edit_history"].as_array().unwrap().len(), 1, "{order}");
    assert!(t.available("USD").await < usd, "the larger order holds more");

    // What Coinbase refuses: the same terms again, an unknown order, a market order, a filled one.
    let (_, same) = t
        .post(
            "/api/v3/brokerage/orders/edit",
            &json!({"order_id": order_id, "price": new_price, "size": "0.02"}),
        )
        .await;
    assert_eq!(same["success"], false);
    assert_eq!(
        same["errors"][0]["edit_failure_reason"],
        "EDIT_REQUEST_EQUAL_TO_ORIGINAL_REQUEST"
    );
    let (_, unknown) = t
        .post(
            "/api/v3/brokerage/orders/edit_preview",
            &json!({"order_id": "nope", "price": "1"}),
        )
        .await;
    assert_eq!(unknown["errors"][0]["edit_failure_reason"], "ORDER_NOT_FOUND");
    let market = t.order(market_buy_quote("edit-m", "BTC-USD", "100")).await;
    let market_id = market["success_response"]["order_id"].as_str().unwrap();
    let (_, filled) = t
        .post(
            "/api/v3/brokerage/orders/edit",
            &json!({"order_id": market_id, "price": "1"}),
        )
        .await;
    assert_eq!(
        filled["errors"][0]["edit_failure_reason"],
        "ONLY_OPEN_ORDERS_CAN_BE_EDITED"
    );
    let (status, _) = t
        .post("/api/v3/brokerage/orders/edit", &json!({"order_id": order_id}))
        .await;
    assert_eq!(status, 400, "an edit needs a price or a size");
    let log = t.sim.order_log();
    assert!(
        log.iter()
            .any(|e| e.source == "edit_order" && e.failure_reason.is_none())
    );
}

#[tokio::test]
async fn the_admin_api_places_a_market_order_for_a_key_into_its_history() {
    let t = TestSim::start().await;
    let (status, body) = t
        .admin_post(
            "/admin/orders",
            &json!({"key_name": t.key.name, "client_order_id": "pb.local.seed-1", "product_id": "BTC-USD", "side": "BUY", "base_size": "0.01"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let order = t.order_by_id(body["order_id"].as_str().unwrap()).await;
    assert_eq!(
        (order["status"].as_str(), order["client_order_id"].as_str()),
        (Some("FILLED"), Some("pb.local.seed-1"))
    );
    assert_eq!(t.available("BTC").await, Decimal::new(1, 2));
    let (_, history) = t
        .get("/api/v3/brokerage/orders/historical/batch?product_ids=BTC-USD")
        .await;
    assert_eq!(history["orders"].as_array().unwrap().len(), 1);
    assert_eq!(t.sim.order_log()[0].source, "admin");
    let (status, _) = t
        .admin_post(
            "/admin/orders",
            &json!({"key_name": "nobody", "client_order_id": "x", "product_id": "BTC-USD", "side": "BUY", "base_size": "0.01"}),
        )
        .await;
    assert_eq!(status, 404);
}
