//! Accounts, portfolios, fee summary and perpetuals.

mod common;

use std::collections::BTreeSet;

use common::{TestSim, dec};
use rust_decimal::Decimal;
use serde_json::json;

#[tokio::test]
async fn accounts_paginate_with_cursor() {
    let t = TestSim::start().await;
    let mut seen = BTreeSet::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v3/brokerage/accounts?limit=5&cursor={c}"),
            None => "/api/v3/brokerage/accounts?limit=5".to_string(),
        };
        let (status, body) = t.get(&path).await;
        assert_eq!(status, 200, "{body}");
        let accounts = body["accounts"].as_array().unwrap();
        assert_eq!(body["size"], accounts.len());
        for a in accounts {
            assert!(
                seen.insert(a["uuid"].as_str().unwrap().to_string()),
                "duplicate account"
            );
            assert!(a["available_balance"]["value"].is_string());
            assert!(a["hold"]["currency"].is_string());
        }
        pages += 1;
        if body["has_next"] == false {
            assert_eq!(body["cursor"], "");
            break;
        }
        assert_eq!(accounts.len(), 5);
        cursor = Some(body["cursor"].as_str().unwrap().to_string());
    }
    // USD, USDC and the ten spot base currencies.
    assert_eq!(seen.len(), 12);
    assert_eq!(pages, 3);

    let (_, default_page) = t.get("/api/v3/brokerage/accounts").await;
    assert_eq!(default_page["size"], 12);
    let (status, _) = t.get("/api/v3/brokerage/accounts?limit=251").await;
    assert_eq!(status, 400);
    let (status, _) = t.get("/api/v3/brokerage/accounts?cursor=zzz").await;
    assert_eq!(status, 400);

    let uuid = seen.iter().next().unwrap();
    let (status, body) = t.get(&format!("/api/v3/brokerage/accounts/{uuid}")).await;
    assert_eq!(status, 200);
    assert_eq!(body["account"]["uuid"], uuid.as_str());
    let (status, _) = t.get("/api/v3/brokerage/accounts/unknown").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn transaction_summary_uses_numbers_and_string_rates() {
    let t = TestSim::start().await;
    t.order(
        json!({"client_order_id": "ts-1", "product_id": "BTC-USD", "side": "BUY",
                   "order_configuration": {"market_market_ioc": {"quote_size": "1000"}}}),
    )
    .await;
    let response = t
        .signed(&t.key, reqwest::Method::GET, "/api/v3/brokerage/transaction_summary")
        .send()
        .await
        .unwrap();
    let text = response.text().await.unwrap();
    let body: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(body["total_volume"].is_number(), "{text}");
    assert!(body["total_fees"].is_number());
    assert_eq!(body["fee_tier"]["taker_fee_rate"], "0.006");
    assert_eq!(body["fee_tier"]["maker_fee_rate"], "0.004");
    assert!(body["fee_tier"]["pricing_tier"].is_string());
    let fees: Decimal = text
        .split("\"total_fees\":")
        .nth(1)
        .and_then(|rest| rest.split([',', '}']).next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(fees > Decimal::from(5) && fees < Decimal::from(7), "{fees}");
}

#[tokio::test]
async fn portfolios_and_breakdown() {
    let t = TestSim::start().await;
    let (_, perms) = t.get("/api/v3/brokerage/key_permissions").await;
    let uuid = perms["portfolio_uuid"].as_str().unwrap().to_string();
    let (status, body) = t.get("/api/v3/brokerage/portfolios").await;
    assert_eq!(status, 200);
    assert_eq!(body["portfolios"][0]["uuid"], uuid.as_str());
    assert_eq!(body["portfolios"][0]["type"], "DEFAULT");
    let (status, body) = t.get(&format!("/api/v3/brokerage/portfolios/{uuid}")).await;
    assert_eq!(status, 200, "{body}");
    let breakdown = &body["breakdown"];
    assert_eq!(
        dec(&breakdown["portfolio_balances"]["total_balance"]["value"]),
        Decimal::from(100_000)
    );
    assert!(breakdown["spot_positions"][0]["total_balance_fiat"].is_number());
    let (status, _) = t.get("/api/v3/brokerage/portfolios/other").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn perpetuals_open_report_and_close_a_position() {
    let t = TestSim::with(common::test_config(), |spec| spec.with_derivatives()).await;
    let (_, perms) = t.get("/api/v3/brokerage/key_permissions").await;
    assert_eq!(perms["portfolio_type"], "INTX");
    let uuid = perms["portfolio_uuid"].as_str().unwrap().to_string();

    let bad_leverage = t
        .order(
            json!({"client_order_id": "p-0", "product_id": "BTC-PERP-INTX", "side": "BUY", "leverage": "50",
                      "order_configuration": {"market_market_ioc": {"base_size": "0.1"}}}),
        )
        .await;
    assert_eq!(bad_leverage["error_response"]["error"], "INVALID_LEVERAGE");

    let open = t
        .order(
            json!({"client_order_id": "p-1", "product_id": "BTC-PERP-INTX", "side": "BUY", "leverage": "5",
                      "margin_type": "CROSS", "order_configuration": {"market_market_ioc": {"base_size": "0.5"}}}),
        )
        .await;
    assert_eq!(open["success"], true, "{open}");
    let usd_after_open = t.available("USD").await;
    assert!(usd_after_open < Decimal::from(100_000), "fee charged");
    assert!(usd_after_open > Decimal::from(99_000), "no notional debited");

    let (status, positions) = t.get(&format!("/api/v3/brokerage/intx/positions/{uuid}")).await;
    assert_eq!(status, 200, "{positions}");
    let position = &positions["positions"][0];
    assert_eq!(position["symbol"], "BTC-PERP-INTX");
    assert_eq!(dec(&position["net_size"]), Decimal::new(5, 1));
    assert_eq!(position["position_side"], "POSITION_SIDE_LONG");
    assert_eq!(position["leverage"], "5");
    let entry = dec(&position["entry_vwap"]["value"]);
    let liquidation = dec(&position["liquidation_price"]["value"]);
    assert!(liquidation < entry && liquidation > entry * Decimal::new(8, 1));
    let (status, single) = t
        .get(&format!("/api/v3/brokerage/intx/positions/{uuid}/BTC-PERP-INTX"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(single["position"]["net_size"], position["net_size"]);
    let (status, summary) = t.get(&format!("/api/v3/brokerage/intx/portfolio/{uuid}")).await;
    assert_eq!(status, 200);
    assert!(dec(&summary["portfolios"][0]["position_notional"]) > Decimal::ZERO);
    let (status, balances) = t.get(&format!("/api/v3/brokerage/intx/balances/{uuid}")).await;
    assert_eq!(status, 200);
    assert!(
        balances["portfolio_balances"][0]["balances"]
            .as_array()
            .is_some_and(|b| !b.is_empty())
    );
    let (status, _) = t.get("/api/v3/brokerage/cfm/balance_summary").await;
    assert_eq!(status, 200);

    let (status, closed) = t
        .post(
            "/api/v3/brokerage/orders/close_position",
            &json!({"client_order_id": "p-close", "product_id": "BTC-PERP-INTX"}),
        )
        .await;
    assert_eq!(status, 200, "{closed}");
    assert_eq!(closed["success"], true, "{closed}");
    assert_eq!(closed["success_response"]["side"], "SELL");
    let (_, positions) = t.get(&format!("/api/v3/brokerage/intx/positions/{uuid}")).await;
    assert_eq!(positions["positions"], json!([]));
    let (_, again) = t
        .post(
            "/api/v3/brokerage/orders/close_position",
            &json!({"client_order_id": "p-close-2", "product_id": "BTC-PERP-INTX"}),
        )
        .await;
    assert_eq!(again["error_response"]["error"], "NO_OPEN_POSITION");
    let log = t.sim.order_log();
    assert_eq!(log.iter().filter(|e| e.source == "close_position").count(), 2);
}

#[tokio::test]
async fn short_perpetual_without_base_balance() {
    let t = TestSim::with(common::test_config(), |spec| spec.with_derivatives()).await;
    let short = t
        .order(
            json!({"client_order_id": "s-1", "product_id": "ETH-PERP-INTX", "side": "SELL", "leverage": "2",
                      "order_configuration": {"market_market_ioc": {"base_size": "1"}}}),
        )
        .await;
    assert_eq!(short["success"], true, "{short}");
    let (_, perms) = t.get("/api/v3/brokerage/key_permissions").await;
    let uuid = perms["portfolio_uuid"].as_str().unwrap();
    let (_, positions) = t.get(&format!("/api/v3/brokerage/intx/positions/{uuid}")).await;
    assert_eq!(positions["positions"][0]["position_side"], "POSITION_SIDE_SHORT");
    assert_eq!(dec(&positions["positions"][0]["net_size"]), Decimal::NEGATIVE_ONE);

    let huge = t
        .order(
            json!({"client_order_id": "s-2", "product_id": "ETH-PERP-INTX", "side": "SELL", "leverage": "1",
                      "order_configuration": {"market_market_ioc": {"base_size": "100"}}}),
        )
        .await;
    assert_eq!(huge["error_response"]["error"], "INSUFFICIENT_FUND");
}

#[tokio::test]
async fn the_admin_api_deposits_and_withdraws_only_what_is_available() {
    let t = TestSim::start().await;
    let transfer = |amount: &str| json!({"key_name": t.key.name, "currency": "USD", "amount": amount});
    let (status, body) = t.admin_post("/admin/transfers", &transfer("2500")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (dec(&body["total"]), dec(&body["available"])),
        (Decimal::from(102500), Decimal::from(102500))
    );
    assert_eq!(t.available("USD").await, Decimal::from(102500));
    // A resting buy holds 100 USD (plus its fee): that much cannot be withdrawn.
    let resting = t
        .order(json!({
            "client_order_id": "rest-1", "product_id": "BTC-USD", "side": "BUY",
            "order_configuration": {"limit_limit_gtc": {"base_size": "0.1", "limit_price": "1000"}}
        }))
        .await;
    assert_eq!(resting["success"], true, "{resting}");
    let available = t.available("USD").await;
    assert!(available < Decimal::from(102400), "{available}");
    let (status, body) = t
        .admin_post(
            "/admin/transfers",
            &transfer(&format!("-{}", available + Decimal::new(1, 2))),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["message"].as_str().unwrap().contains("available"), "{body}");
    let (status, body) = t
        .admin_post("/admin/transfers", &transfer(&format!("-{available}")))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(dec(&body["available"]), Decimal::ZERO);
    assert!(dec(&body["total"]) > Decimal::ZERO, "the hold stays");
    for (body, expected) in [
        (transfer("0"), 400),
        (json!({"key_name": "nobody", "currency": "USD", "amount": "1"}), 404),
    ] {
        assert_eq!(t.admin_post("/admin/transfers", &body).await.0, expected, "{body}");
    }
    // Transfers are not the starting balances: a reset restores those.
    t.admin_post("/admin/reset", &json!({})).await;
    assert_eq!(t.available("USD").await, Decimal::from(100000));
}
