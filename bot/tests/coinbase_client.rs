//! The Coinbase client against the exchange simulator, in process: authentication (and every
//! way a token is refused), JWT claims checked independently with `jsonwebtoken`, pagination,
//! orders and rejections, idempotent retries, rate limits and 5xx, the market data WebSocket
//! (gaps, disconnects, a frozen feed), derivatives gating, account equity and the account
//! snapshot, and malformed responses.
//!
//! Every test starts its own simulator on an ephemeral port and stops it. Waits poll with
//! generous deadlines instead of sleeping for fixed times.

use exchange_sim::{
    FailNext, FaultRequest, Freeze, GeneratedKey, KeyAlgorithm, KeySpec, Permissions, ProductFlagsUpdate, SimConfig,
    Simulator, TimeoutNextOrders, WsDropEvery, generate_key,
};
use perps_bot::broker::{Broker, BrokerError, Granularity};
use perps_bot::coinbase::{self, CoinbaseBroker, ConnectOptions, Credentials, RestClient, RestOptions};
use perps_bot::config::BotConfig;
use perps_bot::domain::{OrderKind, OrderRequest, OrderStatus, Side, Symbol, TimeInForce};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tradingbot_crds::Profile;

const INSTANCE: &str = "test/coinbase-client";

fn init() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

async fn start_sim(tick: Duration) -> Simulator {
    init();
    Simulator::start(SimConfig {
        tick,
        ..SimConfig::default()
    })
    .await
    .expect("the simulator starts")
}

fn credentials(key: &GeneratedKey) -> Credentials {
    Credentials::parse(&key.name, &key.private_key_pem, "test key").expect("generated keys parse")
}

/// REST options for tests: quick backoff, generous timeouts for a slow machine.
fn rest_options(sim: &Simulator) -> RestOptions {
    let mut options = RestOptions::new(sim.api_url(), INSTANCE);
    options.request_timeout = Duration::from_secs(20);
    options.order_timeout = Duration::from_secs(20);
    options.backoff_base = Duration::from_millis(20);
    options.backoff_max = Duration::from_millis(400);
    options
}

fn rest_client(sim: &Simulator, key: Option<&GeneratedKey>, tweak: impl FnOnce(&mut RestOptions)) -> RestClient {
    let mut options = rest_options(sim);
    tweak(&mut options);
    RestClient::new(options, key.map(|k| Arc::new(credentials(k)))).expect("client builds")
}

fn connect_options(sim: &Simulator, key: Option<&GeneratedKey>, websocket: bool) -> ConnectOptions {
    let mut options = ConnectOptions::new(sim.api_url(), websocket.then(|| sim.ws_url()), INSTANCE);
    options.rest = rest_options(sim);
    options.credentials = key.map(credentials);
    options.ws_silence_timeout = Duration::from_secs(10);
    options
}

fn config(symbols: &[&str], dry_run: bool, derivatives: bool) -> BotConfig {
    let mut config = perps_bot::config::profiles::builtin(Profile::Prod);
    config.symbols = symbols.iter().map(|s| s.parse().unwrap()).collect();
    config.dry_run = dry_run;
    config.derivatives = derivatives;
    config
}

fn sym(s: &str) -> Symbol {
    s.parse().unwrap()
}

/// Poll `check` until it returns `Some`, or fail after `deadline`.
async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn order(id: &str, symbol: &str, side: Side, quantity: Decimal, kind: OrderKind, tif: TimeInForce) -> OrderRequest {
    OrderRequest {
        client_order_id: id.to_string(),
        symbol: sym(symbol),
        side,
        quantity,
        kind,
        tif,
        reduce_only: false,
        leverage: None,
        preview_id: None,
    }
}

fn rounded(price: Decimal, increment: Decimal) -> Decimal {
    (price / increment).floor() * increment
}

/// A writer capturing log output for the current (test) thread.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

// ----- authentication ----------------------------------------------------------------------

#[tokio::test]
async fn es256_and_eddsa_keys_authenticate() {
    let sim = start_sim(Duration::from_millis(500)).await;
    for algorithm in [KeyAlgorithm::Es256, KeyAlgorithm::EdDsa] {
        let key = generate_key(algorithm);
        sim.register_key(key.key_spec()).unwrap();
        let client = rest_client(&sim, Some(&key), |_| {});
        let accounts = coinbase::broker::all_accounts(&client).await.expect("authenticated");
        assert!(
            accounts.iter().any(|a| a.currency.as_deref() == Some("USD")),
            "{algorithm:?}"
        );
    }
    assert!(
        sim.stats().jwt_rejections.is_empty(),
        "{:?}",
        sim.stats().jwt_rejections
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn every_refused_token_is_unauthorized() {
    let sim = start_sim(Duration::from_millis(500)).await;
    let key = generate_key(KeyAlgorithm::Es256);
    sim.register_key(key.key_spec()).unwrap();
    // A different public key registered under the name: the signature cannot verify.
    let impostor = generate_key(KeyAlgorithm::Es256);
    let stolen_name = generate_key(KeyAlgorithm::Es256);
    sim.register_key(KeySpec::new(stolen_name.name.clone(), impostor.public_key_pem.clone()))
        .unwrap();
    let unregistered = generate_key(KeyAlgorithm::EdDsa);

    let cases: Vec<(&str, RestClient)> = vec![
        ("bad_signature", rest_client(&sim, Some(&stolen_name), |_| {})),
        ("expired", rest_client(&sim, Some(&key), |o| o.clock_offset_secs = -600)),
        (
            "nbf_in_future",
            rest_client(&sim, Some(&key), |o| o.clock_offset_secs = 600),
        ),
        (
            "uri_mismatch",
            rest_client(&sim, Some(&key), |o| {
                o.sign_host_override = Some("api.coinbase.com".into())
            }),
        ),
        ("unknown_key", rest_client(&sim, Some(&unregistered), |_| {})),
    ];
    for (reason, client) in &cases {
        let error = client.get("/accounts", &[]).await.expect_err(reason);
        let BrokerError::Unauthorized(message) = &error else {
            panic!("{reason}: expected Unauthorized, got {error:?}");
        };
        assert!(message.contains("credentials"), "{reason}: {message}");
        for secret in [
            &key.private_key_pem,
            &stolen_name.private_key_pem,
            &unregistered.private_key_pem,
        ] {
            let body = secret.lines().nth(1).unwrap_or(secret);
            assert!(
                !message.contains(&body[..body.len().min(24)]),
                "{reason}: the key leaked"
            );
        }
        assert_eq!(client.counts().requests, 1, "{reason}: a 401 is not retried");
    }
    let rejections = sim.stats().jwt_rejections;
    for (reason, _) in &cases {
        assert_eq!(rejections.get(*reason), Some(&1), "{reason}: {rejections:?}");
    }
    // A small skew inside the exchange's leeway still works.
    let skewed = rest_client(&sim, Some(&key), |o| o.clock_offset_secs = -3);
    skewed.get("/accounts", &[]).await.expect("small skew is tolerated");
    sim.shutdown().await;
}

fn decoding_key(key: &GeneratedKey) -> jsonwebtoken::DecodingKey {
    use p256::elliptic_curve::sec1::ToEncodedPoint as _;
    use p256::pkcs8::DecodePublicKey as _;
    match key.algorithm {
        KeyAlgorithm::Es256 => {
            let public = p256::PublicKey::from_public_key_pem(&key.public_key_pem).unwrap();
            jsonwebtoken::DecodingKey::from_ec_der(public.to_encoded_point(false).as_bytes())
        }
        KeyAlgorithm::EdDsa => {
            let public = ed25519_dalek::VerifyingKey::from_public_key_pem(&key.public_key_pem).unwrap();
            jsonwebtoken::DecodingKey::from_ed_der(public.as_bytes())
        }
    }
}

#[tokio::test]
async fn jwt_header_and_claims_verify_independently() {
    let sim = start_sim(Duration::from_millis(500)).await;
    for (algorithm, alg) in [
        (KeyAlgorithm::Es256, jsonwebtoken::Algorithm::ES256),
        (KeyAlgorithm::EdDsa, jsonwebtoken::Algorithm::EdDSA),
    ] {
        let key = generate_key(algorithm);
        let client = rest_client(&sim, Some(&key), |_| {});
        let token = client.token_for("GET", "/accounts").unwrap();
        let again = client.token_for("GET", "/accounts").unwrap();

        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.alg, alg);
        assert_eq!(header.kid.as_deref(), Some(key.name.as_str()));
        assert_eq!(header.typ.as_deref(), Some("JWT"));
        let nonce = header.nonce.clone().expect("nonce");
        assert!(
            nonce.len() >= 16 && nonce.chars().all(|c| c.is_ascii_hexdigit()),
            "{nonce}"
        );
        let other_nonce = jsonwebtoken::decode_header(&again).unwrap().nonce.unwrap();
        assert_ne!(nonce, other_nonce, "a fresh nonce per token");

        let mut validation = jsonwebtoken::Validation::new(alg);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "sub"]);
        validation.set_issuer(&["cdp"]);
        validation.validate_nbf = true;
        validation.validate_aud = false;
        validation.leeway = 0;
        let claims = jsonwebtoken::decode::<serde_json::Value>(&token, &decoding_key(&key), &validation)
            .expect("the signature verifies with the public key")
            .claims;
        assert_eq!(claims["iss"], "cdp");
        assert_eq!(claims["sub"], key.name.as_str());
        assert_eq!(
            claims["uri"],
            format!("GET {}/api/v3/brokerage/accounts", sim.host()).as_str()
        );
        let nbf = claims["nbf"].as_i64().unwrap();
        assert_eq!(claims["exp"].as_i64().unwrap(), nbf + 120);
        let now = perps_bot::clock::unix_seconds();
        assert!((nbf - now).abs() <= 5, "nbf {nbf} is not now {now}");

        // The query string is not signed.
        let with_query = client.token_for("GET", "/accounts?limit=5").unwrap();
        let claims = jsonwebtoken::decode::<serde_json::Value>(&with_query, &decoding_key(&key), &validation)
            .unwrap()
            .claims;
        assert_eq!(
            claims["uri"],
            format!("GET {}/api/v3/brokerage/accounts", sim.host()).as_str()
        );
        // A WebSocket token carries no uri.
        let signer = client.signer().unwrap();
        let ws = jsonwebtoken::decode::<serde_json::Value>(signer.ws_token(), &decoding_key(&key), &validation)
            .unwrap()
            .claims;
        assert!(ws.get("uri").is_none());
        // Debug output never shows the private key.
        let debug = format!("{client:?} {signer:?}");
        let secret_line = match algorithm {
            KeyAlgorithm::Es256 => key.private_key_pem.lines().nth(1).unwrap(),
            KeyAlgorithm::EdDsa => key.private_key_pem.as_str(),
        };
        assert!(
            !debug.contains(&secret_line[..24]) && !debug.contains("PRIVATE KEY"),
            "{debug}"
        );
        assert!(debug.contains("redacted"), "{debug}");
    }
    sim.shutdown().await;
}

// ----- accounts ----------------------------------------------------------------------------

#[tokio::test]
async fn accounts_follow_every_page() {
    let sim = start_sim(Duration::from_millis(500)).await;
    let key = generate_key(KeyAlgorithm::Es256);
    sim.register_key(key.key_spec()).unwrap();
    let many: BTreeMap<String, Decimal> = (0..300).map(|i| (format!("T{i:03}"), Decimal::from(i + 1))).collect();
    sim.set_balances(&key.name, many).unwrap();
    let client = rest_client(&sim, Some(&key), |_| {});
    let accounts = coinbase::broker::all_accounts(&client).await.unwrap();
    for i in 0..300 {
        let currency = format!("T{i:03}");
        let account = accounts
            .iter()
            .find(|a| a.currency.as_deref() == Some(currency.as_str()))
            .unwrap_or_else(|| panic!("{currency} missing from {} accounts", accounts.len()));
        assert_eq!(account.available_balance.value.req("v").unwrap(), Decimal::from(i + 1));
    }
    let pages = sim.stats().requests["GET /api/v3/brokerage/accounts"][&200];
    assert!(pages >= 2, "{pages} pages");
    sim.shutdown().await;
}

/// Coins on the account the bot never bought are not its position, not its equity and not
/// sellable; what its own orders bought is, at its cost basis.
#[tokio::test]
async fn only_coins_the_bot_bought_are_its_position_and_equity() {
    let sim = start_sim(Duration::from_millis(200)).await;
    let key = generate_key(KeyAlgorithm::Es256);
    sim.register_key(
        key.key_spec()
            .with_balances([("USD", dec!(1000)), ("BTC", dec!(0.5)), ("ETH", dec!(3))]),
    )
    .unwrap();
    let (_, broker) = coinbase::connect(
        connect_options(&sim, Some(&key), false),
        &config(&["BTC-USD"], false, false),
    )
    .await
    .unwrap();
    let account = broker.account().await.unwrap();
    assert!(
        account.positions.is_empty(),
        "the user's 0.5 BTC is not the bot's: {account:?}"
    );
    assert_eq!(account.cash, dec!(1000));
    let report = broker.inventory().unwrap();
    assert!(report.rebuilt_from_history);
    let btc = &report.symbols[&sym("BTC-USD")];
    assert_eq!((btc.own, btc.held, btc.unowned), (dec!(0), dec!(0.5), dec!(0.5)));

    // A sale of the user's coins is refused before the exchange.
    let sell = order(
        "pb.local.t-1",
        "BTC-USD",
        Side::Sell,
        dec!(0.1),
        OrderKind::Market,
        TimeInForce::Ioc,
    );
    match broker.place_order(&sell).await.unwrap_err() {
        BrokerError::Rejected { reason, .. } => assert_eq!(reason, "SPOT_SHORT"),
        other => panic!("expected SPOT_SHORT, got {other:?}"),
    }
    assert!(sim.order_log().is_empty(), "nothing reached the exchange");

    // What the bot buys (its prefix) is its own, at the fill price; foreign ids are not.
    let buy = order(
        "pb.local.t-2",
        "BTC-USD",
        Side::Buy,
        dec!(0.002),
        OrderKind::Market,
        TimeInForce::Ioc,
    );
    let bought = broker.place_order(&buy).await.unwrap();
    let manual = order(
        "manual-1",
        "BTC-USD",
        Side::Buy,
        dec!(0.003),
        OrderKind::Market,
        TimeInForce::Ioc,
    );
    broker.place_order(&manual).await.unwrap();
    let account = broker.account().await.unwrap();
    assert_eq!(account.positions.len(), 1, "{account:?}");
    let position = &account.positions[0];
    assert_eq!((position.symbol.as_str(), position.quantity), ("BTC-USD", dec!(0.002)));
    assert_eq!(position.entry_price, bought.average_fill_price.unwrap());
    let usd = broker
        .accounts()
        .await
        .unwrap()
        .into_iter()
        .find(|a| a.currency.as_deref() == Some("USD"))
        .map(|a| a.available_balance.value.req("usd").unwrap())
        .unwrap();
    // The bot's cash is the 1000 USD its books opened with less its own buy (value and fee);
    // the manual buy on the same account is not its spending, only less cash to back it.
    let cost = dec!(0.002) * position.entry_price;
    let own_cash = dec!(1000) - cost - bought.fees;
    assert!(bought.fees > Decimal::ZERO);
    assert_eq!(account.cash, own_cash + cost, "its cost basis is folded into cash");
    assert!(
        usd < own_cash - dec!(100),
        "the account paid for the manual buy too: {usd}"
    );
    assert_eq!(account.unbacked_cash, own_cash - usd);
    // Whatever the mark later, equity is its own cash plus its own coins at that mark.
    let mark = position.entry_price * dec!(1.1);
    assert_eq!(account.equity(|_| Some(mark)), own_cash + dec!(0.002) * mark);
    assert_eq!(account.sizing_equity(|_| Some(mark)), usd + dec!(0.002) * mark);
    // Selling its own is fine; one satoshi more is not.
    let too_much = order(
        "pb.local.t-3",
        "BTC-USD",
        Side::Sell,
        dec!(0.00200001),
        OrderKind::Market,
        TimeInForce::Ioc,
    );
    assert!(broker.place_order(&too_much).await.is_err());
    let own = order(
        "pb.local.t-4",
        "BTC-USD",
        Side::Sell,
        dec!(0.002),
        OrderKind::Market,
        TimeInForce::Ioc,
    );
    assert_eq!(broker.place_order(&own).await.unwrap().status, OrderStatus::Filled);
    assert!(broker.account().await.unwrap().positions.is_empty());
    let sells: Vec<_> = sim.order_log().into_iter().filter(|e| e.side == "SELL").collect();
    assert_eq!(
        sells.len(),
        1,
        "only the sale of its own coins reached the exchange: {sells:?}"
    );
    sim.shutdown().await;
}

// ----- orders ------------------------------------------------------------------------------

async fn trading_broker(sim: &Simulator, key: &GeneratedKey, symbols: &[&str]) -> CoinbaseBroker {
    coinbase::connect(connect_options(sim, Some(key), false), &config(symbols, false, false))
        .await
        .expect("connects")
        .1
}

#[tokio::test]
async fn orders_of_every_kind_and_their_rejections() {
    let sim = start_sim(Duration::from_millis(500)).await;
    let key = generate_key(KeyAlgorithm::EdDsa);
    sim.register_key(key.key_spec().with_balances([("USD", dec!(100000)), ("BTC", dec!(1))]))
        .unwrap();
    let broker = trading_broker(&sim, &key, &["BTC-USD", "ETH-USD"]).await;
    let btc = sym("BTC-USD");
    let product = broker.products(std::slice::from_ref(&btc)).await.unwrap().remove(0);
    assert_eq!(
        (product.base_increment, product.quote_increment),
        (dec!(0.00000001), dec!(0.01))
    );
    assert_eq!(product.min_notional, dec!(1));
    let quote = broker.quote(&btc).await.unwrap();
    assert!(quote.bid > Decimal::ZERO && quote.ask > quote.bid, "{quote:?}");
    let tick = product.quote_increment;

    // Market.
    let market = order(
        "m-1",
        "BTC-USD",
        Side::Buy,
        dec!(0.001),
        OrderKind::Market,
        TimeInForce::Ioc,
    );
    let placed = broker.place_order(&market).await.unwrap();
    assert_eq!(placed.status, OrderStatus::Filled, "{placed:?}");
    assert_eq!(
        (placed.filled_quantity, placed.client_order_id.as_str()),
        (dec!(0.001), "m-1")
    );
    assert!(placed.average_fill_price.unwrap() > Decimal::ZERO && placed.fees > Decimal::ZERO);

    // Limit GTC far below the market rests; it is listed open and cancels.
    let low = rounded(quote.bid * dec!(0.8), tick);
    let gtc = order(
        "l-gtc",
        "BTC-USD",
        Side::Buy,
        dec!(0.01),
        OrderKind::Limit { limit_price: low },
        TimeInForce::Gtc,
    );
    let resting = broker.place_order(&gtc).await.unwrap();
    assert_eq!(resting.status, OrderStatus::Open);
    assert_eq!(resting.kind, OrderKind::Limit { limit_price: low });

    // Limit FOK: marketable fills, far away is killed.
    let high = rounded(quote.ask * dec!(1.05), tick);
    let fok = order(
        "l-fok",
        "BTC-USD",
        Side::Buy,
        dec!(0.001),
        OrderKind::Limit { limit_price: high },
        TimeInForce::Fok,
    );
    assert_eq!(broker.place_order(&fok).await.unwrap().status, OrderStatus::Filled);
    let fok_low = order(
        "l-fok-2",
        "BTC-USD",
        Side::Buy,
        dec!(0.001),
        OrderKind::Limit { limit_price: low },
        TimeInForce::Fok,
    );
    let killed = broker.place_order(&fok_low).await.unwrap();
    assert!(
        !killed.status.is_open() && killed.filled_quantity.is_zero(),
        "{killed:?}"
    );

    // Stop-limit buy above the market waits for its trigger.
    let stop = rounded(quote.ask * dec!(1.1), tick);
    let stop_limit = order(
        "s-1",
        "BTC-USD",
        Side::Buy,
        dec!(0.01),
        OrderKind::StopLimit {
            stop_price: stop,
            limit_price: stop + tick * dec!(10),
        },
        TimeInForce::Gtc,
    );
    let pending = broker.place_order(&stop_limit).await.unwrap();
    assert!(pending.status.is_open(), "{pending:?}");
    assert!(matches!(pending.kind, OrderKind::StopLimit { stop_price, .. } if stop_price == stop));

    // Good-till-date.
    let end = perps_bot::clock::rfc3339_ms(perps_bot::clock::unix_ms() + 3_600_000);
    let gtd = order(
        "l-gtd",
        "BTC-USD",
        Side::Buy,
        dec!(0.01),
        OrderKind::Limit { limit_price: low },
        TimeInForce::Gtc,
    );
    assert_eq!(
        broker.place_order_until(&gtd, &end).await.unwrap().status,
        OrderStatus::Open
    );

    // Preview, then place with the preview id.
    let mut previewed = order(
        "p-1",
        "BTC-USD",
        Side::Buy,
        dec!(0.002),
        OrderKind::Market,
        TimeInForce::Ioc,
    );
    let preview = broker.preview_order(&previewed).await.unwrap();
    assert!(preview.errors.is_empty(), "{preview:?}");
    assert!(preview.order_total > Decimal::ZERO && preview.commission_total > Decimal::ZERO);
    previewed.preview_id = preview.preview_id.clone();
    assert!(previewed.preview_id.is_some());
    assert_eq!(
        broker.place_order(&previewed).await.unwrap().status,
        OrderStatus::Filled
    );
    let too_big = order(
        "p-2",
        "BTC-USD",
        Side::Buy,
        dec!(100),
        OrderKind::Market,
        TimeInForce::Ioc,
    );
    let refused = broker.preview_order(&too_big).await.unwrap();
    assert!(
        refused.errors.iter().any(|e| e.contains("INSUFFICIENT_FUND")),
        "{refused:?}"
    );

    // Open orders: the three resting ones; cancel them in one batch.
    let open = broker.open_orders().await.unwrap();
    let mut ids: Vec<&str> = open.iter().map(|o| o.client_order_id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["l-gtc", "l-gtd", "s-1"]);
    let order_ids: Vec<String> = open.iter().map(|o| o.order_id.clone()).collect();
    let results = broker.cancel_orders(&order_ids).await.unwrap();
    assert!(results.iter().all(|r| r.success), "{results:?}");
    assert!(broker.open_orders().await.unwrap().is_empty());
    let again = broker.cancel_orders(&order_ids[..1]).await.unwrap();
    assert!(!again[0].success && again[0].failure_reason.is_some(), "{again:?}");

    // Rejections carry the exchange's reason.
    let reason_of = |e: BrokerError| match e {
        BrokerError::Rejected { reason, message } => {
            assert!(!message.is_empty());
            reason
        }
        other => panic!("expected a rejection, got {other:?}"),
    };
    let broke = order(
        "r-1",
        "BTC-USD",
        Side::Buy,
        dec!(50),
        OrderKind::Market,
        TimeInForce::Ioc,
    );
    assert_eq!(
        reason_of(broker.place_order(&broke).await.unwrap_err()),
        "INSUFFICIENT_FUND"
    );
    let fine = order(
        "r-2",
        "BTC-USD",
        Side::Buy,
        dec!(0.0010000001),
        OrderKind::Market,
        TimeInForce::Ioc,
    );
    assert_eq!(
        reason_of(broker.place_order(&fine).await.unwrap_err()),
        "INVALID_SIZE_PRECISION"
    );
    let odd_price = order(
        "r-3",
        "BTC-USD",
        Side::Buy,
        dec!(0.01),
        OrderKind::Limit {
            limit_price: low + dec!(0.001),
        },
        TimeInForce::Gtc,
    );
    assert_eq!(
        reason_of(broker.place_order(&odd_price).await.unwrap_err()),
        "INVALID_PRICE_PRECISION"
    );
    sim.set_product_flags(
        "ETH-USD",
        ProductFlagsUpdate {
            trading_disabled: Some(true),
            ..Default::default()
        },
    )
    .unwrap();
    let eth = broker.products(&[sym("ETH-USD")]).await.unwrap().remove(0);
    assert!(eth.trading_disabled && eth.untradable_reason().is_some());
    let halted = order(
        "r-4",
        "ETH-USD",
        Side::Buy,
        dec!(0.01),
        OrderKind::Market,
        TimeInForce::Ioc,
    );
    assert_eq!(
        reason_of(broker.place_order(&halted).await.unwrap_err()),
        "UNTRADABLE_PRODUCT"
    );

    // Every request carried our instance.
    let log = sim.order_log();
    assert!(
        log.iter()
            .all(|e| e.client_instance.as_deref() == Some(INSTANCE) && e.key_name == key.name)
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn a_timed_out_order_is_retried_with_its_id_and_exists_once() {
    let sim = start_sim(Duration::from_millis(500)).await;
    let key = generate_key(KeyAlgorithm::Es256);
    sim.register_key(key.key_spec()).unwrap();
    let mut options = connect_options(&sim, Some(&key), false);
    options.rest.order_timeout = Duration::from_millis(1500);
    let (_, broker) = coinbase::connect(options, &config(&["BTC-USD"], false, false))
        .await
        .unwrap();
    sim.inject(FaultRequest {
        timeout_next_orders: Some(TimeoutNextOrders {
            count: 1,
            delay_ms: 8_000,
        }),
        ..Default::default()
    })
    .unwrap();
    let request = order(
        "once-1",
        "BTC-USD",
        Side::Buy,
        dec!(0.001),
        OrderKind::Market,
        TimeInForce::Ioc,
    );
    let placed = broker
        .place_order(&request)
        .await
        .expect("the retry returns the original order");
    assert_eq!(placed.status, OrderStatus::Filled);
    assert!(broker.rest().counts().timeouts >= 1, "{:?}", broker.rest().counts());

    let entries: Vec<_> = sim
        .order_log()
        .into_iter()
        .filter(|e| e.client_order_id == "once-1")
        .collect();
    assert!(entries.len() >= 2, "the order was sent again: {entries:?}");
    assert_eq!(
        entries.iter().filter(|e| !e.replay).count(),
        1,
        "exactly one order: {entries:?}"
    );
    assert!(
        entries
            .iter()
            .all(|e| e.order_id.as_deref() == Some(placed.order_id.as_str()))
    );
    // Placing the same client order id again later returns the same order too.
    let replay = broker.place_order(&request).await.unwrap();
    assert_eq!(replay.order_id, placed.order_id);
    assert_eq!(sim.order_log().iter().filter(|e| !e.replay).count(), 1);
    sim.shutdown().await;
}

// ----- rate limits and server errors -------------------------------------------------------

#[tokio::test]
async fn throttling_and_server_errors_are_retried() {
    let sim = start_sim(Duration::from_millis(500)).await;
    let key = generate_key(KeyAlgorithm::Es256);
    sim.register_key(key.key_spec()).unwrap();
    let client = rest_client(&sim, Some(&key), |_| {});

    for html in [true, false] {
        sim.inject(FaultRequest {
            fail_next: Some(FailNext {
                count: 2,
                status: 429,
                html,
            }),
            ..Default::default()
        })
        .unwrap();
        let before = client.counts();
        let started = Instant::now();
        client.get("/accounts", &[]).await.expect("succeeds after the 429s");
        let after = client.counts();
        assert_eq!(after.rate_limited - before.rate_limited, 2, "html {html}");
        // The exchange said Retry-After: 1 each time.
        assert!(
            started.elapsed() >= Duration::from_millis(1900),
            "{:?}",
            started.elapsed()
        );
    }
    for (status, html) in [(503, true), (500, false), (502, false)] {
        sim.inject(FaultRequest {
            fail_next: Some(FailNext { count: 2, status, html }),
            ..Default::default()
        })
        .unwrap();
        let before = client.counts().server_errors;
        client.get("/accounts", &[]).await.expect("succeeds after the 5xx");
        assert_eq!(client.counts().server_errors - before, 2, "HTTP {status}");
    }
    // Persistent failures end as errors of the right kind.
    let impatient = rest_client(&sim, Some(&key), |o| o.max_attempts = 3);
    sim.inject(FaultRequest {
        fail_next: Some(FailNext {
            count: 3,
            status: 503,
            html: true,
        }),
        ..Default::default()
    })
    .unwrap();
    let error = impatient.get("/accounts", &[]).await.unwrap_err();
    assert!(
        matches!(error, BrokerError::Unavailable(ref m) if m.contains("503")),
        "{error:?}"
    );
    sim.inject(FaultRequest {
        fail_next: Some(FailNext {
            count: 3,
            status: 429,
            html: true,
        }),
        ..Default::default()
    })
    .unwrap();
    let error = impatient.get("/accounts", &[]).await.unwrap_err();
    assert!(
        matches!(error, BrokerError::RateLimited(ref m) if m.contains("HTML")),
        "{error:?}"
    );
    assert_eq!(sim.stats().injected_failures, 4 + 6 + 6);
    sim.shutdown().await;
}

#[tokio::test]
async fn the_client_never_exceeds_the_private_rate_limit() {
    let sim = start_sim(Duration::from_millis(500)).await;
    let key = generate_key(KeyAlgorithm::Es256);
    sim.register_key(key.key_spec()).unwrap();
    let client = Arc::new(rest_client(&sim, Some(&key), |_| {}));
    let started = Instant::now();
    let requests = 95;
    let tasks: Vec<_> = (0..requests)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.get("/key_permissions", &[]).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().expect("every request succeeds");
    }
    // 95 requests at no more than 30 per (padded) second take at least three windows.
    assert!(started.elapsed() >= Duration::from_secs(3), "{:?}", started.elapsed());
    let busiest = client.busiest_second();
    assert!(
        (25..=30).contains(&busiest),
        "{busiest} requests left within one second"
    );
    // The exchange's own count only tells a limiter from none. Its window runs on its own
    // clock, on arrival: on a loaded 2-core machine a stalled scheduler bunches requests that
    // left paced (5, 11 and 28 of 95 seen beside builds and cluster suites), each retried by the
    // client. Without a limiter all 95 arrive at once and at least 65 of them are throttled in
    // the first second alone (30 pass). The client's bound above is the one that matters.
    let throttled = sim.stats().rate_limited;
    assert!(throttled < requests - 30, "throttled {throttled} times: no limiter?");
    assert_eq!(client.counts().requests, requests + client.counts().rate_limited);
    sim.shutdown().await;
}

// ----- market data -------------------------------------------------------------------------

async fn ws_quote_time(broker: &CoinbaseBroker, product: &str) -> Option<i64> {
    broker.feed()?.quote(product).map(|q| q.time_ms)
}

#[tokio::test]
async fn sequence_gaps_reconnect_resubscribe_and_quotes_keep_coming() {
    let sim = start_sim(Duration::from_millis(100)).await;
    let key = generate_key(KeyAlgorithm::EdDsa);
    sim.register_key(key.key_spec()).unwrap();
    let (_, broker) = coinbase::connect(
        connect_options(&sim, Some(&key), true),
        &config(&["BTC-USD"], true, false),
    )
    .await
    .unwrap();
    let btc = sym("BTC-USD");
    let first = eventually("a WebSocket book", Duration::from_secs(30), || async {
        ws_quote_time(&broker, "BTC-USD").await
    })
    .await;
    assert!(sim.stats().jwt_rejections.is_empty(), "subscribe JWTs are accepted");

    sim.inject(FaultRequest {
        ws_drop_every: Some(WsDropEvery { n: 25 }),
        ..Default::default()
    })
    .unwrap();
    let feed = broker.feed().unwrap();
    let mut last_time = first;
    let mut quotes = 0;
    let started = Instant::now();
    loop {
        // Quotes never stop: from the book, or from REST while resynchronising.
        let quote = broker.quote(&btc).await.expect("a quote at any time");
        assert!(quote.time_ms >= last_time - 1_000, "time went backwards: {quote:?}");
        last_time = last_time.max(quote.time_ms);
        quotes += 1;
        let stats = feed.stats();
        if stats.gaps >= 2 && stats.reconnects >= 2 && stats.snapshots >= 3 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "no gaps detected: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(quotes > 0);
    assert!(sim.stats().ws_messages_dropped >= 2);

    sim.clear_faults();
    let resumed_after = feed.stats().snapshots;
    eventually(
        "WebSocket quotes again, newer than before",
        Duration::from_secs(60),
        || async {
            let t = ws_quote_time(&broker, "BTC-USD").await?;
            (t > first && feed.stats().snapshots >= resumed_after).then_some(())
        },
    )
    .await;
    assert!(sim.stats().ws_connections_total >= 3);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_frozen_feed_ages_the_quote_and_recovers_after_unfreeze() {
    let sim = start_sim(Duration::from_millis(100)).await;
    let (_, broker) = coinbase::connect(
        connect_options(&sim, None, true),
        &config(&["BTC-USD", "ETH-USD"], true, false),
    )
    .await
    .unwrap();
    let btc = sym("BTC-USD");
    eventually("a WebSocket book", Duration::from_secs(30), || async {
        ws_quote_time(&broker, "BTC-USD").await
    })
    .await;
    sim.inject(FaultRequest {
        freeze: Some(Freeze {
            frozen: true,
            products: Some(vec!["BTC-USD".into()]),
        }),
        ..Default::default()
    })
    .unwrap();
    // Once the in-flight messages are through, the quote time stops moving.
    let frozen_at = eventually("the quote time to stop", Duration::from_secs(30), || async {
        let a = broker.quote(&btc).await.ok()?.time_ms;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let b = broker.quote(&btc).await.ok()?.time_ms;
        (a == b).then_some(b)
    })
    .await;
    // Heartbeats keep the socket up, ETH keeps moving, BTC keeps aging.
    let eth_before = ws_quote_time(&broker, "ETH-USD").await.unwrap();
    let aged = eventually("BTC staleness to pass 3 s", Duration::from_secs(30), || async {
        let quote = broker.quote(&btc).await.ok()?;
        assert_eq!(quote.time_ms, frozen_at, "a frozen product's time must not advance");
        let age = perps_bot::clock::unix_ms() - quote.time_ms;
        (age > 3_000).then_some(age)
    })
    .await;
    assert!(aged > 3_000);
    assert!(broker.feed().unwrap().stats().connected);
    eventually("ETH to keep moving", Duration::from_secs(30), || async {
        (ws_quote_time(&broker, "ETH-USD").await? > eth_before).then_some(())
    })
    .await;

    sim.inject(FaultRequest {
        freeze: Some(Freeze {
            frozen: false,
            products: Some(vec!["BTC-USD".into()]),
        }),
        ..Default::default()
    })
    .unwrap();
    eventually("BTC quotes to be fresh again", Duration::from_secs(30), || async {
        let quote = broker.quote(&btc).await.ok()?;
        (quote.time_ms > frozen_at && perps_bot::clock::unix_ms() - quote.time_ms < 3_000).then_some(())
    })
    .await;
    sim.shutdown().await;
}

#[tokio::test]
async fn disconnects_reconnect_and_rest_fills_in_meanwhile() {
    let sim = start_sim(Duration::from_millis(100)).await;
    let (_, broker) = coinbase::connect(connect_options(&sim, None, true), &config(&["BTC-USD"], true, false))
        .await
        .unwrap();
    let btc = sym("BTC-USD");
    eventually("a WebSocket book", Duration::from_secs(30), || async {
        ws_quote_time(&broker, "BTC-USD").await
    })
    .await;
    let feed = broker.feed().unwrap();
    let connects = feed.stats().connects;
    sim.inject(FaultRequest {
        ws_disconnect: true,
        ..Default::default()
    })
    .unwrap();
    eventually("a reconnect with a fresh book", Duration::from_secs(60), || async {
        let quote = broker.quote(&btc).await.expect("REST answers while the socket is down");
        assert!(quote.ask > quote.bid);
        (feed.stats().connects > connects && ws_quote_time(&broker, "BTC-USD").await.is_some()).then_some(())
    })
    .await;
    // Public REST fallback was used without credentials, and the feed subscribed without a JWT.
    sim.shutdown().await;
}

#[tokio::test]
async fn rest_quotes_and_candles_without_a_websocket() {
    let sim = start_sim(Duration::from_millis(500)).await;
    let (_, broker) = coinbase::connect(connect_options(&sim, None, false), &config(&["BTC-USD"], true, false))
        .await
        .unwrap();
    let btc = sym("BTC-USD");
    let quote = broker.quote(&btc).await.unwrap();
    assert!(quote.ask > quote.bid && quote.bid_size > Decimal::ZERO);
    let age = perps_bot::clock::unix_ms() - quote.time_ms;
    assert!(
        (-2_000..60_000).contains(&age),
        "the quote carries the book's time, age {age} ms"
    );
    for (granularity, count) in [(Granularity::OneMinute, 400), (Granularity::OneHour, 30)] {
        let candles = broker.candles(&btc, granularity, count).await.unwrap();
        assert_eq!(candles.len(), count, "{granularity:?}");
        assert!(
            candles
                .windows(2)
                .all(|w| w[1].start - w[0].start == granularity.seconds()),
            "oldest first, contiguous"
        );
        let now = perps_bot::clock::unix_seconds();
        let last = candles.last().unwrap();
        assert!(last.start + granularity.seconds() <= now, "only closed candles");
        assert!(
            last.start + 2 * granularity.seconds() > now,
            "up to the last closed one"
        );
        assert!(candles.iter().all(|c| c.low <= c.high && c.open > Decimal::ZERO));
    }
    // Without credentials: a synthetic account, no orders.
    let account = broker.account().await.unwrap();
    assert_eq!((account.cash, account.positions.len()), (dec!(100000), 0));
    assert!(broker.open_orders().await.unwrap().is_empty());
    let refused = broker
        .place_order(&order(
            "x",
            "BTC-USD",
            Side::Buy,
            dec!(0.001),
            OrderKind::Market,
            TimeInForce::Ioc,
        ))
        .await
        .unwrap_err();
    assert!(matches!(refused, BrokerError::Unauthorized(_)), "{refused:?}");
    assert!(sim.order_log().is_empty());
    sim.shutdown().await;
}

// ----- derivatives gating ------------------------------------------------------------------

#[tokio::test]
async fn perpetuals_only_with_the_flag_an_intx_key_and_the_product() {
    let sim = start_sim(Duration::from_millis(500)).await;
    let intx = generate_key(KeyAlgorithm::Es256);
    sim.register_key(intx.key_spec().with_derivatives()).unwrap();
    let spot_only = generate_key(KeyAlgorithm::Es256);
    sim.register_key(spot_only.key_spec()).unwrap();

    // Everything allows it: BTC-PERP trades as BTC-PERP-INTX.
    let mut wanted = config(&["BTC-PERP", "ETH-USD"], false, true);
    wanted.risk.max_notional_per_symbol.insert(sym("BTC-PERP"), dec!(1234));
    let (adjusted, broker) = coinbase::connect(connect_options(&sim, Some(&intx), false), &wanted)
        .await
        .unwrap();
    assert_eq!(adjusted.symbols, vec![sym("BTC-PERP"), sym("ETH-USD")]);
    assert!(adjusted.derivatives);
    let perp = broker.products(&[sym("BTC-PERP")]).await.unwrap().remove(0);
    assert!(perp.is_perpetual);
    assert_eq!(perp.max_leverage, Some(dec!(20)));
    assert_eq!(broker.product_id(&sym("BTC-PERP")).unwrap(), "BTC-PERP-INTX");
    let mut long = order(
        "perp-1",
        "BTC-PERP",
        Side::Buy,
        dec!(0.01),
        OrderKind::Market,
        TimeInForce::Ioc,
    );
    long.leverage = Some(dec!(2));
    let placed = broker.place_order(&long).await.unwrap();
    assert_eq!(
        (placed.status, placed.symbol.as_str()),
        (OrderStatus::Filled, "BTC-PERP")
    );
    let account = broker.account().await.unwrap();
    let position = account
        .positions
        .iter()
        .find(|p| p.symbol == sym("BTC-PERP"))
        .expect("the perp position");
    assert_eq!(position.quantity, dec!(0.01));
    assert_eq!(Some(position.entry_price), placed.average_fill_price);
    assert!(
        account.cash > dec!(99000) && account.cash <= dec!(100000),
        "collateral {}",
        account.cash
    );
    drop(broker);

    // Each missing condition maps to spot with a warning.
    let logs = Logs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let cases = [
        ("flag off", Some(&intx), false, false),
        ("not INTX", Some(&spot_only), true, false),
        ("no credentials", None, true, true),
    ];
    for (case, key, derivatives, dry_run) in cases {
        let (adjusted, broker) = coinbase::connect(connect_options(&sim, key, false), &{
            let mut c = config(&["BTC-PERP", "ETH-USD"], dry_run, derivatives);
            c.risk.max_notional_per_symbol.insert(sym("BTC-PERP"), dec!(1234));
            c
        })
        .await
        .unwrap_or_else(|e| panic!("{case}: {e:#}"));
        assert_eq!(adjusted.symbols, vec![sym("BTC-USD"), sym("ETH-USD")], "{case}");
        assert!(!adjusted.derivatives, "{case}");
        assert_eq!(
            adjusted.risk.max_notional_per_symbol.get(&sym("BTC-USD")),
            Some(&dec!(1234)),
            "{case}"
        );
        assert!(broker.product_id(&sym("BTC-PERP")).is_err(), "{case}");
        assert!(!broker.products(&[sym("BTC-USD")]).await.unwrap()[0].is_perpetual);
    }
    let text = logs.text();
    assert_eq!(text.matches("perpetuals are not available").count(), 3, "{text}");
    assert!(text.contains("COINBASE_ENABLE_DERIVATIVES") && text.contains("INTX") && text.contains("credentials"));
    sim.shutdown().await;
}

#[tokio::test]
async fn a_dry_run_with_credentials_changes_nothing_on_the_exchange() {
    let sim = start_sim(Duration::from_millis(500)).await;
    let key = generate_key(KeyAlgorithm::Es256);
    sim.register_key(key.key_spec()).unwrap();
    let live = trading_broker(&sim, &key, &["BTC-USD"]).await;
    let btc = sym("BTC-USD");
    let quote = live.quote(&btc).await.unwrap();
    let low = rounded(quote.bid * dec!(0.8), dec!(0.01));
    let resting = order(
        "rest-1",
        "BTC-USD",
        Side::Buy,
        dec!(0.01),
        OrderKind::Limit { limit_price: low },
        TimeInForce::Gtc,
    );
    let placed = live.place_order(&resting).await.unwrap();

    let (_, dry) = coinbase::connect(
        connect_options(&sim, Some(&key), false),
        &config(&["BTC-USD"], true, false),
    )
    .await
    .unwrap();
    assert!(dry.is_read_only());
    let open = dry.open_orders().await.unwrap();
    assert_eq!(open.len(), 1, "a dry run still sees the account's orders");
    let results = dry.cancel_orders(std::slice::from_ref(&placed.order_id)).await.unwrap();
    assert_eq!(results[0].failure_reason.as_deref(), Some("DRY_RUN"));
    let refused = dry
        .place_order(&order(
            "dry-1",
            "BTC-USD",
            Side::Buy,
            dec!(0.001),
            OrderKind::Market,
            TimeInForce::Ioc,
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(refused, BrokerError::Rejected { ref reason, .. } if reason == "DRY_RUN"),
        "{refused:?}"
    );
    assert_eq!(live.open_orders().await.unwrap().len(), 1, "the order is untouched");
    assert_eq!(sim.order_log().len(), 1);
    assert!(sim.stats().requests.keys().all(|r| !r.contains("batch_cancel")));
    sim.shutdown().await;
}

// ----- connecting and the account snapshot -------------------------------------------------

#[tokio::test]
async fn missing_or_rejected_credentials_are_named() {
    let sim = start_sim(Duration::from_millis(500)).await;
    let live = config(&["BTC-USD"], false, false);
    let error = coinbase::connect(connect_options(&sim, None, false), &live)
        .await
        .unwrap_err();
    assert!(format!("{error:#}").contains("credentials"), "{error:#}");

    let unknown = generate_key(KeyAlgorithm::Es256);
    let error = coinbase::connect(connect_options(&sim, Some(&unknown), false), &live)
        .await
        .unwrap_err();
    let text = format!("{error:#}");
    assert!(text.contains("credentials") && text.contains(&unknown.name), "{text}");
    assert!(!text.contains("PRIVATE KEY"));
    assert!(
        error
            .chain()
            .any(|c| matches!(c.downcast_ref::<BrokerError>(), Some(BrokerError::Unauthorized(_))))
    );

    let view_only = generate_key(KeyAlgorithm::Es256);
    sim.register_key(view_only.key_spec().with_permissions(Permissions::view_only()))
        .unwrap();
    let error = coinbase::connect(connect_options(&sim, Some(&view_only), false), &live)
        .await
        .unwrap_err();
    assert!(format!("{error:#}").contains("cannot trade"), "{error:#}");
    // ...but it may watch in a dry run.
    coinbase::connect(
        connect_options(&sim, Some(&view_only), false),
        &config(&["BTC-USD"], true, false),
    )
    .await
    .expect("a view-only key may run dry");

    let error = coinbase::account_snapshot_with(rest_options(&sim), credentials(&unknown))
        .await
        .unwrap_err();
    assert!(format!("{error:#}").contains("credentials"), "{error:#}");

    let error = coinbase::connect(connect_options(&sim, None, false), &config(&["NOPE-USD"], true, false))
        .await
        .unwrap_err();
    assert!(format!("{error:#}").contains("NOPE-USD"), "{error:#}");
    sim.shutdown().await;
}

#[tokio::test]
async fn the_account_snapshot_reports_key_fees_balances_and_clock() {
    let sim = start_sim(Duration::from_millis(500)).await;
    let careful = generate_key(KeyAlgorithm::Es256);
    sim.register_key(
        careful
            .key_spec()
            .with_balances([("USD", dec!(2500)), ("BTC", dec!(0.25))]),
    )
    .unwrap();
    let reckless = generate_key(KeyAlgorithm::EdDsa);
    sim.register_key(reckless.key_spec().with_permissions(Permissions {
        can_view: true,
        can_trade: true,
        can_transfer: true,
    }))
    .unwrap();

    let snapshot = coinbase::account_snapshot_with(rest_options(&sim), credentials(&careful))
        .await
        .unwrap();
    assert_eq!(snapshot["broker"], "coinbase");
    assert_eq!(snapshot["key"]["name"], careful.name.as_str());
    assert_eq!(snapshot["key_permissions"]["can_trade"], true);
    assert_eq!(snapshot["key_permissions"]["can_transfer"], false);
    assert_eq!(snapshot["warnings"], serde_json::json!([]));
    assert_eq!(snapshot["fee_tier"]["taker_fee_rate"], "0.006");
    assert!(snapshot["transaction_summary"].is_object());
    let balances = snapshot["balances"].as_array().unwrap();
    let usd = balances.iter().find(|b| b["currency"] == "USD").unwrap();
    assert_eq!(usd["total"], "2500");
    assert!(
        balances
            .iter()
            .any(|b| b["currency"] == "BTC" && b["available"] == "0.25")
    );
    assert!(!snapshot["portfolios"].as_array().unwrap().is_empty());
    assert!(snapshot["server_time"]["epochMillis"].is_string());
    let skew = snapshot["clock_skew_ms"].as_i64().unwrap();
    assert!(skew.abs() < 5_000, "skew {skew}");
    for field in ["timestamp", "local_time"] {
        assert!(snapshot[field].as_str().unwrap().ends_with('Z'), "{field}");
    }
    let text = snapshot.to_string();
    assert!(!text.contains("PRIVATE KEY"));

    let snapshot = coinbase::account_snapshot_with(rest_options(&sim), credentials(&reckless))
        .await
        .unwrap();
    assert_eq!(snapshot["key_permissions"]["can_transfer"], true);
    let warnings = snapshot["warnings"].as_array().unwrap();
    assert!(
        warnings.iter().any(|w| w.as_str().unwrap().contains("can_transfer")),
        "{warnings:?}"
    );
    sim.shutdown().await;
}

// ----- malformed answers -------------------------------------------------------------------

/// A tiny server that answers every request with the next canned response.
async fn canned(responses: Vec<(u16, &'static str, String)>) -> (String, tokio::task::JoinHandle<()>) {
    use axum::http::{HeaderValue, StatusCode, header};
    use axum::response::IntoResponse;
    let queue = Arc::new(Mutex::new(std::collections::VecDeque::from(responses)));
    let app = axum::Router::new().fallback(move || {
        let queue = queue.clone();
        async move {
            let (status, content_type, body) =
                queue
                    .lock()
                    .unwrap()
                    .pop_front()
                    .unwrap_or((500, "text/plain", "exhausted".into()));
            let mut response = (StatusCode::from_u16(status).unwrap(), body).into_response();
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            if status == 429 {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("0"));
            }
            response
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{address}/api/v3/brokerage"), task)
}

#[tokio::test]
async fn malformed_answers_become_errors_not_panics() {
    init();
    let json = "application/json";
    let html = "text/html";
    let responses = vec![
        (200, html, "<html><body>maintenance</body></html>".to_string()),
        (200, json, r#"{"accounts": [{"currency": "USD", "available_balance": {"value": "1e999999"}}]"#.into()),
        (200, json, r#"{"accounts": [{"currency": "USD", "available_balance": {"value": "99999999999999999999999"}}], "has_next": false}"#.into()),
        (200, json, r#"{"accounts": "nope"}"#.into()),
        (200, json, r#"{"success": false, "error_response": {"error": "UNKNOWN_FAILURE_REASON", "preview_failure_reason": "PREVIEW_INVALID_ORDER_CONFIG", "message": "bad"}}"#.into()),
        (418, "text/plain", "teapot".into()),
        (429, html, "<html><title>Too Many</title></html>".into()),
        (200, json, r#"{"pricebooks": [{"product_id": "BTC-USD", "bids": [{"price": "100", "size": "1"}], "asks": [{"price": "99", "size": "1"}], "time": "2024-01-01T00:00:00Z"}]}"#.into()),
        (200, json, r#"{"pricebooks": [{"product_id": "BTC-USD", "bids": [{"price": "100", "size": "1"}], "asks": [{"price": "101", "size": "1"}]}]}"#.into()),
        (200, json, r#"{"products": [{"product_id": "BTC-USD", "base_increment": "0", "quote_increment": "0.01"}]}"#.into()),
    ];
    let (url, server) = canned(responses).await;
    let key = generate_key(KeyAlgorithm::Es256);
    let mut options = RestOptions::new(url, INSTANCE);
    options.max_attempts = 1;
    let rest = Arc::new(RestClient::new(options, Some(Arc::new(credentials(&key)))).unwrap());
    let broker = CoinbaseBroker::new(
        rest.clone(),
        None,
        &[coinbase::Market {
            symbol: sym("BTC-USD"),
            product_id: "BTC-USD".into(),
        }],
        None,
        None,
        false,
    );
    fn protocol<T>(result: Result<T, BrokerError>) -> bool {
        matches!(result, Err(BrokerError::Protocol(_)))
    }
    assert!(protocol(broker.account().await), "an HTML 200");
    assert!(protocol(broker.account().await), "a huge exponent");
    assert!(protocol(broker.account().await), "a number beyond any balance");
    assert!(protocol(broker.account().await), "a wrong shape");
    let rejected = rest.post("/orders", &serde_json::json!({}), None).await.unwrap_err();
    assert_eq!(
        rejected,
        BrokerError::Rejected {
            reason: "PREVIEW_INVALID_ORDER_CONFIG".into(),
            message: "bad".into()
        }
    );
    assert!(protocol(rest.get("/accounts", &[]).await), "HTTP 418");
    let throttled = rest.get("/accounts", &[]).await.unwrap_err();
    assert!(
        matches!(throttled, BrokerError::RateLimited(ref m) if m.contains("Too Many")),
        "{throttled:?}"
    );
    assert!(protocol(broker.quote(&sym("BTC-USD")).await), "a crossed book");
    assert!(protocol(broker.quote(&sym("BTC-USD")).await), "a book without a time");
    assert!(protocol(broker.products(&[sym("BTC-USD")]).await), "a zero increment");
    server.abort();
}
