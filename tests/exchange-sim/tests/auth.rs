//! JWT verification on REST and WebSocket, scopes.

mod common;

use std::time::Duration;

use common::{JwtParts, TestSim, encoding_key, now_secs, status_json, ws_connect, ws_next, ws_send};
use exchange_sim::{KeyAlgorithm, Permissions, generate_key};
use reqwest::Method;
use serde_json::json;

const ACCOUNTS: &str = "/api/v3/brokerage/accounts";

async fn call(t: &TestSim, token: Option<String>) -> (u16, serde_json::Value, Option<String>) {
    let mut request = t.http.get(t.url(ACCOUNTS));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("send");
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let (status, body) = status_json(response).await;
    (status, body, content_type)
}

#[tokio::test]
async fn accepts_es256_and_eddsa_tokens() {
    let t = TestSim::start().await;
    let (status, body) = t.get(ACCOUNTS).await;
    assert_eq!(status, 200, "{body}");

    let ed = generate_key(KeyAlgorithm::EdDsa);
    t.sim.register_key(ed.key_spec()).unwrap();
    let token = JwtParts::rest(&ed, "GET", &t.sim.host(), ACCOUNTS).sign(&ed);
    let (status, body, _) = call(&t, Some(token)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["accounts"].as_array().is_some_and(|a| !a.is_empty()));
}

#[tokio::test]
async fn every_rejection_is_plain_text_401() {
    let t = TestSim::start().await;
    let host = t.sim.host();
    let valid = || JwtParts::rest(&t.key, "GET", &host, ACCOUNTS);
    let other = generate_key(KeyAlgorithm::Es256);
    let now = now_secs();

    let mut cases: Vec<(&str, Option<String>)> = Vec::new();
    cases.push(("missing header", None));
    cases.push(("not a jwt", Some("garbage".into())));
    // Signed by a different key than the one registered under kid.
    cases.push((
        "bad signature",
        Some(valid().sign_with(KeyAlgorithm::Es256, &encoding_key(&other))),
    ));
    let mut expired = valid();
    expired.claims.nbf = Some(now - 300);
    expired.claims.exp = Some(now - 180);
    cases.push(("expired", Some(expired.sign(&t.key))));
    let mut future = valid();
    future.claims.nbf = Some(now + 60);
    future.claims.exp = Some(now + 180);
    cases.push(("nbf in future", Some(future.sign(&t.key))));
    let mut long = valid();
    long.claims.exp = Some(now + 3_600);
    cases.push(("lifetime too long", Some(long.sign(&t.key))));
    let mut wrong_path = valid();
    wrong_path.claims.uri = Some(format!("GET {host}/api/v3/brokerage/orders"));
    cases.push(("wrong uri", Some(wrong_path.sign(&t.key))));
    let wrong_method = JwtParts::rest(&t.key, "POST", &host, ACCOUNTS);
    cases.push(("wrong method in uri", Some(wrong_method.sign(&t.key))));
    let mut wrong_host = valid();
    wrong_host.claims.uri = Some(format!("GET api.coinbase.com{ACCOUNTS}"));
    cases.push(("wrong host in uri", Some(wrong_host.sign(&t.key))));
    let mut no_uri = valid();
    no_uri.claims.uri = None;
    cases.push(("missing uri", Some(no_uri.sign(&t.key))));
    cases.push((
        "unknown key",
        Some(JwtParts::rest(&other, "GET", &host, ACCOUNTS).sign(&other)),
    ));
    let mut kid_sub = valid();
    kid_sub.claims.sub = Some("someone-else".into());
    cases.push(("kid != sub", Some(kid_sub.sign(&t.key))));
    let mut iss = valid();
    iss.claims.iss = Some("coinbase-cloud".into());
    cases.push(("wrong iss", Some(iss.sign(&t.key))));
    let mut no_nonce = valid();
    no_nonce.nonce = None;
    cases.push(("missing nonce", Some(no_nonce.sign(&t.key))));
    let mut no_kid = valid();
    no_kid.kid = None;
    cases.push(("missing kid", Some(no_kid.sign(&t.key))));
    let mut typ = valid();
    typ.typ = Some("JWS".into());
    cases.push(("wrong typ", Some(typ.sign(&t.key))));

    for (name, token) in cases {
        let (status, body, content_type) = call(&t, token).await;
        assert_eq!(status, 401, "{name}: {body}");
        assert_eq!(body, json!("Unauthorized"), "{name}");
        assert!(content_type.is_some_and(|c| c.starts_with("text/plain")), "{name}");
    }
    let rejections = t.sim.stats().jwt_rejections;
    for reason in [
        "missing_header",
        "malformed_token",
        "bad_signature",
        "expired",
        "nbf_in_future",
        "lifetime_too_long",
        "uri_mismatch",
        "missing_uri",
        "unknown_key",
        "sub_mismatch",
        "wrong_iss",
        "missing_nonce",
        "missing_kid",
        "wrong_typ",
    ] {
        assert!(rejections.contains_key(reason), "{reason} not counted: {rejections:?}");
    }
}

#[tokio::test]
async fn query_string_is_not_part_of_the_uri_claim() {
    let t = TestSim::start().await;
    let (status, body) = t.get("/api/v3/brokerage/accounts?limit=2").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["size"], 2);
}

#[tokio::test]
async fn nbf_within_leeway_is_accepted() {
    let t = TestSim::start().await;
    let mut parts = JwtParts::rest(&t.key, "GET", &t.sim.host(), ACCOUNTS);
    parts.claims.nbf = Some(now_secs() + 3);
    parts.claims.exp = Some(now_secs() + 120);
    let (status, body, _) = call(&t, Some(parts.sign(&t.key))).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn view_only_key_cannot_trade() {
    let t = TestSim::with(common::test_config(), |spec| {
        spec.with_permissions(Permissions::view_only())
    })
    .await;
    let (status, body) = t.get(ACCOUNTS).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = t
        .post(
            "/api/v3/brokerage/orders",
            &json!({
                "client_order_id": "view-only-1",
                "product_id": "BTC-USD",
                "side": "BUY",
                "order_configuration": {"market_market_ioc": {"quote_size": "10"}}
            }),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error_details"], "Missing required scopes");
    assert!(t.sim.order_log().is_empty());

    let (status, perms) = t.get("/api/v3/brokerage/key_permissions").await;
    assert_eq!(status, 200);
    assert_eq!(perms["can_view"], true);
    assert_eq!(perms["can_trade"], false);
    assert_eq!(perms["portfolio_type"], "DEFAULT");
    assert!(perms["portfolio_uuid"].as_str().is_some_and(|u| !u.is_empty()));
}

#[tokio::test]
async fn trade_only_key_cannot_read() {
    let perms = Permissions {
        can_view: false,
        can_trade: true,
        can_transfer: false,
    };
    let t = TestSim::with(common::test_config(), |spec| spec.with_permissions(perms)).await;
    let (status, body) = t.get(ACCOUNTS).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error_details"], "Missing required scopes");
}

#[tokio::test]
async fn public_endpoints_need_no_token() {
    let t = TestSim::start().await;
    for path in [
        "/api/v3/brokerage/time",
        "/api/v3/brokerage/market/products",
        "/api/v3/brokerage/market/products/BTC-USD",
        "/api/v3/brokerage/market/products/BTC-USD/ticker",
        "/api/v3/brokerage/market/product_book?product_id=BTC-USD",
    ] {
        let (status, body) = t.public_get(path).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    let (status, _) = t.public_get("/api/v3/brokerage/products").await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn signed_request_for_any_method_and_path() {
    let t = TestSim::start().await;
    let response = t
        .signed(&t.key, Method::POST, "/api/v3/brokerage/orders/batch_cancel")
        .json(&json!({"order_ids": ["nope"]}))
        .send()
        .await
        .unwrap();
    let (status, body) = status_json(response).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][0]["failure_reason"], "UNKNOWN_CANCEL_ORDER");
}

#[tokio::test]
async fn websocket_user_channel_requires_a_valid_jwt() {
    let t = TestSim::start().await;
    let mut ws = ws_connect(&t.sim.ws_url()).await;
    ws_send(&mut ws, json!({"type": "subscribe", "channel": "user"})).await;
    let error = ws_next(&mut ws, Duration::from_secs(5)).await.unwrap();
    assert_eq!(error["type"], "error", "{error}");

    let mut bad = JwtParts::ws(&t.key);
    bad.claims.iss = Some("nope".into());
    ws_send(
        &mut ws,
        json!({"type": "subscribe", "channel": "user", "jwt": bad.sign(&t.key)}),
    )
    .await;
    let error = ws_next(&mut ws, Duration::from_secs(5)).await.unwrap();
    assert_eq!(error, json!({"type": "error", "message": "authentication failure"}));

    let jwt = JwtParts::ws(&t.key).sign(&t.key);
    ws_send(&mut ws, json!({"type": "subscribe", "channel": "user", "jwt": jwt})).await;
    let ack = ws_next(&mut ws, Duration::from_secs(5)).await.unwrap();
    assert_eq!(ack["channel"], "subscriptions", "{ack}");
    let snapshot = ws_next(&mut ws, Duration::from_secs(5)).await.unwrap();
    assert_eq!(snapshot["channel"], "user");
    assert_eq!(snapshot["events"][0]["type"], "snapshot");
}
