//! The WebSocket feed: subscriptions, heartbeats, level2, gaps, freezes, disconnects.

mod common;

use std::time::{Duration, Instant};

use common::{JwtParts, TestSim, Ws, dec, ws_connect, ws_next, ws_next_on, ws_send};
use exchange_sim::SimConfig;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(5);

async fn live() -> TestSim {
    let config = SimConfig {
        tick: Duration::from_millis(100),
        ..common::test_config()
    };
    TestSim::with(config, |spec| spec).await
}

async fn subscribe(ws: &mut Ws, channel: &str, products: &[&str]) -> Value {
    ws_send(
        ws,
        json!({"type": "subscribe", "channel": channel, "product_ids": products}),
    )
    .await;
    ws_next_on(ws, "subscriptions", WAIT).await.expect("subscriptions ack")
}

/// Collects messages for `duration`.
async fn collect(ws: &mut Ws, duration: Duration) -> Vec<Value> {
    let deadline = Instant::now() + duration;
    let mut messages = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match ws_next(ws, left).await {
            Some(m) => messages.push(m),
            None => break,
        }
    }
    messages
}

#[tokio::test]
async fn subscribe_ack_and_heartbeats_every_second() {
    let t = live().await;
    let mut ws = ws_connect(&t.sim.ws_url()).await;
    let ack = subscribe(&mut ws, "heartbeats", &[]).await;
    assert_eq!(ack["sequence_num"], 0);
    assert!(ack["events"][0]["subscriptions"]["heartbeats"].is_array(), "{ack}");
    assert!(ack["timestamp"].as_str().unwrap().ends_with('Z'));

    let mut beats = Vec::new();
    while beats.len() < 3 {
        let message = ws_next_on(&mut ws, "heartbeats", Duration::from_secs(3))
            .await
            .expect("heartbeat");
        beats.push((Instant::now(), message));
    }
    for (i, (_, beat)) in beats.iter().enumerate() {
        let event = &beat["events"][0];
        assert_eq!(event["heartbeat_counter"], i as u64 + 1, "{beat}");
        assert!(event["current_time"].as_str().unwrap().contains("+0000 UTC"));
        assert_eq!(beat["sequence_num"], i as u64 + 1, "one sequence number per message");
    }
    for pair in beats.windows(2) {
        let gap = pair[1].0 - pair[0].0;
        assert!(
            gap > Duration::from_millis(700) && gap < Duration::from_millis(1400),
            "{gap:?}"
        );
    }
}

#[tokio::test]
async fn level2_snapshot_then_updates_with_offer_side() {
    let t = live().await;
    let mut ws = ws_connect(&t.sim.ws_url()).await;
    subscribe(&mut ws, "level2", &["BTC-USD"]).await;
    let snapshot = ws_next_on(&mut ws, "l2_data", WAIT).await.expect("snapshot");
    let event = &snapshot["events"][0];
    assert_eq!(event["type"], "snapshot");
    assert_eq!(event["product_id"], "BTC-USD");
    let updates = event["updates"].as_array().unwrap();
    assert!(updates.iter().any(|u| u["side"] == "bid"));
    assert!(updates.iter().any(|u| u["side"] == "offer"));
    for u in updates {
        assert!(dec(&u["new_quantity"]) > rust_decimal::Decimal::ZERO);
        assert!(u["price_level"].is_string() && u["event_time"].is_string());
    }
    let first = snapshot["sequence_num"].as_u64().unwrap();
    let mut saw_removal = false;
    for expected in first + 1..=first + 5 {
        let update = ws_next_on(&mut ws, "l2_data", WAIT).await.expect("update");
        assert_eq!(update["sequence_num"].as_u64().unwrap(), expected);
        let event = &update["events"][0];
        assert_eq!(event["type"], "update");
        for u in event["updates"].as_array().unwrap() {
            assert!(u["side"] == "bid" || u["side"] == "offer", "{u}");
            saw_removal |= u["new_quantity"] == "0";
        }
    }
    assert!(saw_removal, "moving prices remove levels with new_quantity 0");
}

#[tokio::test]
async fn ticker_trades_candles_and_status_channels() {
    let t = live().await;
    let mut ws = ws_connect(&t.sim.ws_url()).await;
    subscribe(&mut ws, "ticker", &["ETH-USD"]).await;
    let snapshot = ws_next_on(&mut ws, "ticker", WAIT).await.unwrap();
    assert_eq!(snapshot["events"][0]["type"], "snapshot");
    let ticker = &snapshot["events"][0]["tickers"][0];
    for field in [
        "product_id",
        "price",
        "volume_24_h",
        "low_24_h",
        "high_24_h",
        "best_bid",
        "best_bid_quantity",
        "best_ask",
        "best_ask_quantity",
        "price_percent_chg_24_h",
    ] {
        assert!(ticker[field].is_string(), "{field}: {ticker}");
    }
    assert_eq!(ticker["type"], "ticker");
    let update = ws_next_on(&mut ws, "ticker", WAIT).await.unwrap();
    assert_eq!(update["events"][0]["type"], "update");

    for (channel, key) in [
        ("market_trades", "trades"),
        ("candles", "candles"),
        ("status", "products"),
    ] {
        subscribe(&mut ws, channel, &["ETH-USD"]).await;
        let snapshot = ws_next_on(&mut ws, channel, WAIT).await.unwrap();
        assert_eq!(snapshot["events"][0]["type"], "snapshot", "{snapshot}");
        assert!(snapshot["events"][0][key].is_array(), "{snapshot}");
    }
    t.admin_post("/admin/products/ETH-USD", &json!({"cancel_only": true}))
        .await;
    let status = ws_next_on(&mut ws, "status", WAIT).await.unwrap();
    assert_eq!(status["events"][0]["type"], "update");
    assert_eq!(status["events"][0]["products"][0]["id"], "ETH-USD");
}

#[tokio::test]
async fn subscribe_errors() {
    let t = live().await;
    let mut ws = ws_connect(&t.sim.ws_url()).await;
    for request in [
        json!({"type": "subscribe", "channel": "level3", "product_ids": ["BTC-USD"]}),
        json!({"type": "subscribe", "channel": "level2"}),
        json!({"type": "subscribe", "channel": "ticker", "product_ids": ["NOPE-USD"]}),
        json!({"type": "dance", "channel": "ticker", "product_ids": ["BTC-USD"]}),
        json!("not an object"),
    ] {
        ws_send(&mut ws, request.clone()).await;
        let reply = ws_next(&mut ws, WAIT).await.expect("reply");
        assert_eq!(reply["type"], "error", "{request}: {reply}");
        assert!(reply["message"].is_string());
    }
}

#[tokio::test]
async fn dropped_messages_show_up_as_sequence_gaps() {
    let t = live().await;
    let mut ws = ws_connect(&t.sim.ws_url()).await;
    subscribe(&mut ws, "ticker", &["BTC-USD"]).await;
    t.admin_post("/admin/faults", &json!({"ws_drop_every": {"n": 3}})).await;
    let messages = collect(&mut ws, Duration::from_millis(1500)).await;
    let sequences: Vec<u64> = messages.iter().filter_map(|m| m["sequence_num"].as_u64()).collect();
    assert!(sequences.len() >= 5, "{sequences:?}");
    assert!(sequences.windows(2).all(|w| w[1] > w[0]));
    assert!(
        sequences.windows(2).any(|w| w[1] - w[0] > 1),
        "expected gaps: {sequences:?}"
    );
    assert!(
        sequences.iter().all(|s| (s + 1) % 3 != 0),
        "every 3rd message dropped: {sequences:?}"
    );
    assert!(t.sim.stats().ws_messages_dropped > 0);
}

#[tokio::test]
async fn freeze_stops_market_data_but_not_heartbeats() {
    let t = live().await;
    let mut ws = ws_connect(&t.sim.ws_url()).await;
    subscribe(&mut ws, "heartbeats", &[]).await;
    subscribe(&mut ws, "ticker", &["ETH-USD"]).await;
    subscribe(&mut ws, "level2", &["ETH-USD"]).await;
    assert!(ws_next_on(&mut ws, "l2_data", WAIT).await.is_some());
    let (status, _) = t
        .admin_post(
            "/admin/faults",
            &json!({"freeze": {"frozen": true, "products": ["ETH-USD"]}}),
        )
        .await;
    assert_eq!(status, 200);
    collect(&mut ws, Duration::from_millis(300)).await;
    let frozen = collect(&mut ws, Duration::from_millis(2300)).await;
    let channels: Vec<&str> = frozen.iter().filter_map(|m| m["channel"].as_str()).collect();
    assert!(!channels.contains(&"ticker"), "{channels:?}");
    assert!(!channels.contains(&"l2_data"), "{channels:?}");
    assert!(
        channels.iter().filter(|c| **c == "heartbeats").count() >= 2,
        "{channels:?}"
    );

    t.admin_post("/admin/faults", &json!({"freeze": {"frozen": false}}))
        .await;
    assert!(
        ws_next_on(&mut ws, "ticker", WAIT).await.is_some(),
        "ticker resumes after thaw"
    );
}

#[tokio::test]
async fn no_subscription_within_five_seconds_closes_the_connection() {
    let t = live().await;
    let mut ws = ws_connect(&t.sim.ws_url()).await;
    let started = Instant::now();
    let message = ws_next(&mut ws, Duration::from_secs(8)).await;
    let elapsed = started.elapsed();
    assert!(message.is_none());
    assert!(
        elapsed >= Duration::from_millis(4500) && elapsed < Duration::from_millis(7000),
        "{elapsed:?}"
    );
}

#[tokio::test]
async fn ws_disconnect_closes_every_connection() {
    let t = live().await;
    let mut a = ws_connect(&t.sim.ws_url()).await;
    let mut b = ws_connect(&t.sim.ws_url()).await;
    subscribe(&mut a, "heartbeats", &[]).await;
    subscribe(&mut b, "heartbeats", &[]).await;
    assert_eq!(t.sim.stats().ws_connections_open, 2);
    t.admin_post("/admin/faults", &json!({"ws_disconnect": true})).await;
    let started = Instant::now();
    for ws in [&mut a, &mut b] {
        loop {
            if ws_next(ws, Duration::from_secs(2)).await.is_none() {
                break;
            }
        }
    }
    assert!(started.elapsed() < Duration::from_secs(2));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(t.sim.stats().ws_connections_open, 0);
    let mut c = ws_connect(&t.sim.ws_url()).await;
    subscribe(&mut c, "heartbeats", &[]).await;
}

#[tokio::test]
async fn user_channel_streams_order_updates() {
    let t = live().await;
    let mut ws = ws_connect(&t.sim.ws_url()).await;
    let jwt = JwtParts::ws(&t.key).sign(&t.key);
    ws_send(
        &mut ws,
        json!({"type": "subscribe", "channel": "user", "product_ids": [], "jwt": jwt}),
    )
    .await;
    ws_next_on(&mut ws, "subscriptions", WAIT).await.unwrap();
    let snapshot = ws_next_on(&mut ws, "user", WAIT).await.unwrap();
    assert_eq!(snapshot["events"][0]["orders"], json!([]));
    assert!(snapshot["events"][0]["positions"].is_object());

    let response = t
        .order(
            json!({"client_order_id": "ws-1", "product_id": "BTC-USD", "side": "BUY",
                      "order_configuration": {"market_market_ioc": {"quote_size": "20"}}}),
        )
        .await;
    let order_id = response["order_id"].as_str().unwrap();
    let update = ws_next_on(&mut ws, "user", WAIT).await.unwrap();
    let order = &update["events"][0]["orders"][0];
    assert_eq!(update["events"][0]["type"], "update");
    assert_eq!(order["order_id"], order_id);
    assert_eq!(order["status"], "FILLED");
    assert_eq!(order["client_order_id"], "ws-1");
    assert!(dec(&order["cumulative_quantity"]) > rust_decimal::Decimal::ZERO);
}
