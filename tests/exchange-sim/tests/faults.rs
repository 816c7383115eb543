//! Rate limits, injected failures, order timeouts, latency, admin token, stats and reset.

mod common;

use std::time::{Duration, Instant};

use common::{TestSim, status_json};
use exchange_sim::{SimConfig, Simulator};
use reqwest::Method;
use serde_json::json;

fn market_order(coid: &str) -> serde_json::Value {
    json!({
        "client_order_id": coid,
        "product_id": "BTC-USD",
        "side": "BUY",
        "order_configuration": {"market_market_ioc": {"quote_size": "25"}},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_rate_limit_answers_429_with_headers() {
    let t = TestSim::start().await;
    // Signed first, then sent together: the 40 requests land in one one-second window however
    // slowly this machine signs JWTs (signing one by one on a loaded machine spread them out).
    let requests: Vec<_> = (0..40)
        .map(|_| {
            t.signed(&t.key, Method::GET, "/api/v3/brokerage/key_permissions")
                .send()
        })
        .collect();
    let mut limited = None;
    for response in futures::future::join_all(requests).await {
        let response = response.unwrap();
        if response.status().as_u16() == 429 {
            limited.get_or_insert(response);
        } else {
            assert_eq!(response.headers()["x-ratelimit-limit"], "30");
        }
    }
    let response = limited.expect("no 429 among 40 requests sent together");
    let headers = response.headers().clone();
    assert_eq!(headers["x-ratelimit-limit"], "30");
    assert_eq!(headers["x-ratelimit-remaining"], "0");
    assert!(headers["x-ratelimit-reset"].to_str().unwrap().parse::<u64>().unwrap() > 0);
    assert!(headers["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
    let (_, body) = status_json(response).await;
    assert_eq!(body["error"], "RATE_LIMIT_EXCEEDED");
    assert!(t.sim.stats().rate_limited >= 1);

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, _) = t.get("/api/v3/brokerage/key_permissions").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn public_rate_limit_is_per_ip() {
    let t = TestSim::start().await;
    let mut statuses = Vec::new();
    for _ in 0..15 {
        let (status, _) = t.public_get("/api/v3/brokerage/time").await;
        statuses.push(status);
    }
    assert!(statuses.iter().take(10).all(|s| *s == 200), "{statuses:?}");
    assert!(statuses.contains(&429), "{statuses:?}");
}

#[tokio::test]
async fn fail_next_injects_json_and_html_errors() {
    let t = TestSim::start().await;
    let (status, state) = t
        .admin_post("/admin/faults", &json!({"fail_next": {"count": 2, "status": 503}}))
        .await;
    assert_eq!(status, 200, "{state}");
    assert_eq!(state["fail_next"]["count"], 2);
    for _ in 0..2 {
        let (status, body) = t.get("/api/v3/brokerage/accounts").await;
        assert_eq!(status, 503);
        assert_eq!(body["error"], "UNAVAILABLE");
    }
    let (status, _) = t.get("/api/v3/brokerage/accounts").await;
    assert_eq!(status, 200);

    t.admin_post(
        "/admin/faults",
        &json!({"fail_next": {"count": 1, "status": 429, "html": true}}),
    )
    .await;
    let response = t
        .signed(&t.key, Method::GET, "/api/v3/brokerage/accounts")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 429);
    assert!(response.headers().contains_key("x-ratelimit-limit"));
    assert!(response.headers().contains_key("retry-after"));
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let text = response.text().await.unwrap();
    assert!(text.contains("<html>") && text.contains("Too Many Requests"), "{text}");

    t.admin_post(
        "/admin/faults",
        &json!({"fail_next": {"count": 1, "status": 502, "html": true}}),
    )
    .await;
    let (status, body) = t.get("/api/v3/brokerage/accounts").await;
    assert_eq!(status, 502);
    assert!(body.as_str().is_some_and(|b| b.contains("Bad Gateway")));
    assert_eq!(t.sim.stats().injected_failures, 4);

    let (status, _) = t
        .admin_post("/admin/faults", &json!({"fail_next": {"count": 1, "status": 418}}))
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn timed_out_order_exists_and_a_retry_creates_nothing() {
    let t = TestSim::start().await;
    t.admin_post(
        "/admin/faults",
        &json!({"timeout_next_orders": {"count": 1, "delay_ms": 2000}}),
    )
    .await;
    let token_request = t
        .signed(&t.key, Method::POST, "/api/v3/brokerage/orders")
        .json(&market_order("retry-me"))
        .timeout(Duration::from_millis(300));
    let first = token_request.send().await;
    assert!(first.is_err_and(|e| e.is_timeout()), "client should time out");

    // The order was executed although the client never saw the answer.
    let (_, orders) = t.get("/api/v3/brokerage/orders/historical/batch").await;
    assert_eq!(orders["orders"].as_array().unwrap().len(), 1);
    let original = orders["orders"][0]["order_id"].as_str().unwrap().to_string();

    let started = Instant::now();
    let retry = t.order(market_order("retry-me")).await;
    assert!(started.elapsed() < Duration::from_millis(1500), "retry is not delayed");
    assert_eq!(retry["success"], true);
    assert_eq!(retry["success_response"]["order_id"], original.as_str());
    let (_, orders) = t.get("/api/v3/brokerage/orders/historical/batch").await;
    assert_eq!(orders["orders"].as_array().unwrap().len(), 1, "exactly one order");
    let log = t.sim.order_log();
    assert_eq!(log.len(), 2);
    assert!(log[1].replay);
}

#[tokio::test]
async fn latency_delays_responses_until_cleared() {
    let t = TestSim::start().await;
    t.admin_post("/admin/faults", &json!({"latency_ms": 300})).await;
    let started = Instant::now();
    let (status, _) = t.get("/api/v3/brokerage/accounts").await;
    assert_eq!(status, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
    let (_, state) = t.admin_post("/admin/faults", &json!({"clear": true})).await;
    assert_eq!(state["latency_ms"], 0);
    let started = Instant::now();
    t.get("/api/v3/brokerage/accounts").await;
    assert!(started.elapsed() < Duration::from_millis(300));
}

#[tokio::test]
async fn admin_token_is_enforced_when_configured() {
    let config = SimConfig {
        admin_token: Some("s3cret".into()),
        ..common::test_config()
    };
    let sim = Simulator::start(config).await.unwrap();
    let http = common::http();
    let url = format!("{}/admin/stats", sim.base_url());
    let response = http.get(&url).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 401);
    let response = http.get(&url).bearer_auth("wrong").send().await.unwrap();
    assert_eq!(response.status().as_u16(), 401);
    let response = http.get(&url).bearer_auth("s3cret").send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    sim.shutdown().await;
}

#[tokio::test]
async fn admin_registers_keys_and_sets_balances() {
    let t = TestSim::start().await;
    let key = exchange_sim::generate_key(exchange_sim::KeyAlgorithm::EdDsa);
    let (status, info) = t
        .admin_post(
            "/admin/keys",
            &json!({"name": key.name, "public_key_pem": key.public_key_pem, "balances": {"USD": "5", "BTC": "0.5"}}),
        )
        .await;
    assert_eq!(status, 200, "{info}");
    assert_eq!(info["algorithm"], "EdDSA");
    let (status, _) = t
        .admin_post("/admin/keys", &json!({"name": "x", "public_key_pem": "nope"}))
        .await;
    assert_eq!(status, 400);
    let (status, _) = t
        .admin_post(
            "/admin/balances",
            &json!({"key_name": t.key.name, "balances": {"USD": "42.5"}}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(t.available("USD").await, rust_decimal::Decimal::new(425, 1));
    let (status, _) = t
        .admin_post(
            "/admin/balances",
            &json!({"key_name": "ghost", "balances": {"USD": "1"}}),
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = t
        .admin_post(
            "/admin/balances",
            &json!({"key_name": t.key.name, "balances": {"USD": "-1"}}),
        )
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn stats_count_requests_and_reset_restores_everything() {
    let t = TestSim::start().await;
    t.order(market_order("s-1")).await;
    t.get("/api/v3/brokerage/accounts").await;
    let (_, stats) = t.admin_get("/admin/stats").await;
    assert_eq!(stats["requests"]["POST /api/v3/brokerage/orders"]["200"], 1);
    assert_eq!(stats["requests"]["GET /api/v3/brokerage/accounts"]["200"], 1);
    t.http.get(t.url("/nope")).send().await.unwrap();
    let (_, stats) = t.admin_get("/admin/stats").await;
    assert_eq!(stats["requests"]["GET unmatched"]["404"], 1);

    t.admin_post("/admin/faults", &json!({"latency_ms": 10})).await;
    let (status, _) = t.admin_post("/admin/reset", &json!({})).await;
    assert_eq!(status, 200);
    assert!(t.sim.order_log().is_empty());
    assert_eq!(t.sim.faults().latency_ms, 0);
    assert_eq!(t.available("USD").await, rust_decimal::Decimal::from(100_000));
    assert_eq!(t.available("BTC").await, rust_decimal::Decimal::ZERO);
    let (_, orders) = t.get("/api/v3/brokerage/orders/historical/batch").await;
    assert_eq!(orders["orders"], json!([]));
}

#[tokio::test]
async fn unknown_paths_and_methods() {
    let t = TestSim::start().await;
    let (status, body) = t.public_get("/api/v3/brokerage/nothing-here").await;
    assert_eq!(status, 404, "{body}");
    let response = t.http.delete(t.url("/api/v3/brokerage/time")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 405);
    let (status, _) = t.public_get("/healthz").await;
    assert_eq!(status, 200);
}
