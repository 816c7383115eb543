//! Products, candles, books, tickers, server time and price shocks.

mod common;

use common::{TestSim, dec, now_secs};
use exchange_sim::{FaultRequest, PriceShock};
use rust_decimal::Decimal;
use serde_json::json;

#[tokio::test]
async fn server_time() {
    let t = TestSim::start().await;
    let (status, body) = t.public_get("/api/v3/brokerage/time").await;
    assert_eq!(status, 200);
    let secs: i64 = body["epochSeconds"].as_str().unwrap().parse().unwrap();
    assert!((secs - now_secs()).abs() <= 2);
    assert!(body["epochMillis"].as_str().is_some());
    assert!(body["iso"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test]
async fn products_list_and_filters() {
    let t = TestSim::start().await;
    let (status, body) = t.get("/api/v3/brokerage/products").await;
    assert_eq!(status, 200);
    assert_eq!(body["num_products"], 14);
    let btc = body["products"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["product_id"] == "BTC-USD")
        .unwrap()
        .clone();
    assert_eq!(btc["base_increment"], "0.00000001");
    assert_eq!(btc["quote_increment"], "0.01");
    assert_eq!(btc["base_min_size"], "0.00000001");
    assert_eq!(btc["quote_min_size"], "1");
    assert_eq!(btc["product_type"], "SPOT");
    assert_eq!(btc["trading_disabled"], false);
    assert!(dec(&btc["price"]) > Decimal::ZERO);

    let (_, perps) = t
        .get("/api/v3/brokerage/products?product_type=FUTURE&contract_expiry_type=PERPETUAL")
        .await;
    let ids: Vec<&str> = perps["products"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["product_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["BTC-PERP-INTX", "ETH-PERP-INTX", "SOL-PERP-INTX", "XRP-PERP-INTX"]
    );
    let perp = &perps["products"][0];
    assert_eq!(perp["product_venue"], "INTX");
    assert_eq!(perp["future_product_details"]["contract_expiry_type"], "PERPETUAL");
    assert_eq!(
        perp["future_product_details"]["perpetual_details"]["max_leverage"],
        "20"
    );

    let (_, some) = t
        .get("/api/v3/brokerage/products?product_ids=ETH-USD&product_ids=SOL-USD")
        .await;
    assert_eq!(some["num_products"], 2);

    let (status, _) = t.get("/api/v3/brokerage/products?product_type=BOND").await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn single_product_and_unknown_product() {
    let t = TestSim::start().await;
    let (status, body) = t.get("/api/v3/brokerage/products/ETH-USD").await;
    assert_eq!(status, 200);
    assert_eq!(body["product_id"], "ETH-USD");
    let (status, body) = t.get("/api/v3/brokerage/products/NOPE-USD").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"], "NOT_FOUND");
    assert!(body["message"].as_str().is_some());
}

#[tokio::test]
async fn candles_newest_first_with_limits() {
    let t = TestSim::start().await;
    let end = now_secs();
    let start = end - 100 * 60;
    let path = format!("/api/v3/brokerage/products/BTC-USD/candles?start={start}&end={end}&granularity=ONE_MINUTE");
    let (status, body) = t.get(&path).await;
    assert_eq!(status, 200, "{body}");
    let candles = body["candles"].as_array().unwrap();
    assert!(candles.len() >= 99, "{}", candles.len());
    let starts: Vec<i64> = candles
        .iter()
        .map(|c| c["start"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(starts.windows(2).all(|w| w[0] > w[1]), "not newest first");
    for c in candles {
        let (low, high) = (dec(&c["low"]), dec(&c["high"]));
        assert!(low <= dec(&c["open"]) && dec(&c["open"]) <= high);
        assert!(low <= dec(&c["close"]) && dec(&c["close"]) <= high);
        assert!(c["volume"].is_string());
    }

    let limited = format!("{path}&limit=10");
    let (_, body) = t.get(&limited).await;
    assert_eq!(body["candles"].as_array().unwrap().len(), 10);
    assert_eq!(body["candles"][0]["start"], json!(starts[0].to_string()));

    let hourly = format!(
        "/api/v3/brokerage/market/products/ETH-USD/candles?start={}&end={end}&granularity=ONE_HOUR",
        end - 6 * 3600
    );
    let (status, body) = t.public_get(&hourly).await;
    assert_eq!(status, 200);
    assert!(body["candles"].as_array().unwrap().len() >= 6);

    let too_many = format!(
        "/api/v3/brokerage/products/BTC-USD/candles?start={}&end={end}&granularity=ONE_MINUTE",
        end - 351 * 60
    );
    let (status, body) = t.get(&too_many).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "INVALID_ARGUMENT");

    let exactly = format!(
        "/api/v3/brokerage/products/BTC-USD/candles?start={}&end={end}&granularity=ONE_MINUTE",
        end - 350 * 60
    );
    let (status, body) = t.get(&exactly).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["candles"].as_array().unwrap().len() <= 350);

    for bad in [
        format!("{path}&limit=351"),
        path.replace("ONE_MINUTE", "ONE_WEEK"),
        format!("/api/v3/brokerage/products/BTC-USD/candles?start={end}&end={start}&granularity=ONE_MINUTE"),
        "/api/v3/brokerage/products/BTC-USD/candles?start=abc&end=1&granularity=ONE_MINUTE".to_string(),
        "/api/v3/brokerage/products/BTC-USD/candles?start=1&end=99999999999999999999999&granularity=ONE_MINUTE"
            .to_string(),
    ] {
        let (status, body) = t.get(&bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
}

#[tokio::test]
async fn books_and_ticker() {
    let t = TestSim::start().await;
    let (status, body) = t
        .get("/api/v3/brokerage/best_bid_ask?product_ids=BTC-USD&product_ids=ETH-USD")
        .await;
    assert_eq!(status, 200);
    let books = body["pricebooks"].as_array().unwrap();
    assert_eq!(books.len(), 2);
    for book in books {
        assert!(dec(&book["bids"][0]["price"]) < dec(&book["asks"][0]["price"]));
        assert!(dec(&book["bids"][0]["size"]) > Decimal::ZERO);
        assert!(book["time"].is_string());
    }

    let (status, body) = t.get("/api/v3/brokerage/product_book?product_id=BTC-USD&limit=5").await;
    assert_eq!(status, 200, "{body}");
    let bids = body["pricebook"]["bids"].as_array().unwrap();
    assert_eq!(bids.len(), 5);
    assert!(dec(&bids[0]["price"]) > dec(&bids[1]["price"]));
    let asks = body["pricebook"]["asks"].as_array().unwrap();
    assert!(dec(&asks[0]["price"]) < dec(&asks[1]["price"]));
    let (status, _) = t.get("/api/v3/brokerage/product_book").await;
    assert_eq!(status, 400);

    t.sim.tick(20);
    let (status, body) = t.get("/api/v3/brokerage/products/BTC-USD/ticker?limit=5").await;
    assert_eq!(status, 200, "{body}");
    let trades = body["trades"].as_array().unwrap();
    assert!(!trades.is_empty() && trades.len() <= 5);
    assert!(trades[0]["trade_id"].is_string() && trades[0]["side"].is_string());
    assert!(dec(&body["best_bid"]) < dec(&body["best_ask"]));
}

#[tokio::test]
async fn same_seed_same_prices() {
    let a = TestSim::start().await;
    let b = TestSim::start().await;
    a.sim.tick(25);
    b.sim.tick(25);
    assert_eq!(a.sim.mid_price("SOL-USD"), b.sim.mid_price("SOL-USD"));
    assert_eq!(a.best_bid_ask("SOL-USD").await, b.best_bid_ask("SOL-USD").await);
}

#[tokio::test]
async fn price_shock_moves_best_bid_and_ask() {
    let t = TestSim::start().await;
    let (bid, ask) = t.best_bid_ask("BTC-USD").await;
    let (status, body) = t
        .admin_post(
            "/admin/faults",
            &json!({"price_shock": {"product_id": "BTC-USD", "percent": "-10"}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (bid2, ask2) = t.best_bid_ask("BTC-USD").await;
    let ratio = bid2 / bid;
    assert!(
        ratio > Decimal::new(899, 3) && ratio < Decimal::new(901, 3),
        "{bid} -> {bid2}"
    );
    assert!(ask2 < ask);

    t.sim
        .inject(FaultRequest {
            price_shock: Some(PriceShock {
                product_id: "BTC-USD".into(),
                percent: Decimal::from(20),
            }),
            ..FaultRequest::default()
        })
        .unwrap();
    let (bid3, _) = t.best_bid_ask("BTC-USD").await;
    assert!(bid3 > bid2);

    let (status, _) = t
        .admin_post(
            "/admin/faults",
            &json!({"price_shock": {"product_id": "NOPE", "percent": 5}}),
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = t
        .admin_post(
            "/admin/faults",
            &json!({"price_shock": {"product_id": "BTC-USD", "percent": -100}}),
        )
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn freeze_keeps_the_last_quote_and_time() {
    let t = TestSim::start().await;
    t.admin_post(
        "/admin/faults",
        &json!({"freeze": {"frozen": true, "products": ["ETH-USD"]}}),
    )
    .await;
    let (_, before) = t.get("/api/v3/brokerage/best_bid_ask?product_ids=ETH-USD").await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    t.sim.tick(10);
    let (_, after) = t.get("/api/v3/brokerage/best_bid_ask?product_ids=ETH-USD").await;
    assert_eq!(before, after);
    assert_eq!(t.sim.faults().frozen_products, ["ETH-USD"]);

    t.admin_post("/admin/faults", &json!({"freeze": {"frozen": false}}))
        .await;
    let (_, thawed) = t.get("/api/v3/brokerage/best_bid_ask?product_ids=ETH-USD").await;
    assert_ne!(before["pricebooks"][0]["time"], thawed["pricebooks"][0]["time"]);
}
