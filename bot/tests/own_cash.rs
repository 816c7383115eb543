//! A bot's cash is its own, on the exchange simulator: several bots on one key (one trading
//! big, one dry run, one trading small), deposits and withdrawals on the account, and a
//! restart. Each bot's equity, PnL, daily loss and trips move only with its own fills and the
//! marks of its own coins; the exchange's order history (and balances) show what the other
//! bots and the person really did to the account meanwhile, so a bot that took the account's
//! cash for its own would be seen.

mod support;

use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use serde_json::Value;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use support::{BotProcess, Exchange, dec, metrics_json, wait_until};

const MINUTE: Duration = Duration::from_secs(60);

/// Short moving averages (noise alone crosses them), no trailing stop, market orders sized at
/// `fraction` of equity.
fn active(fraction: &str) -> String {
    format!(
        "short_window: 2\nlong_window: 3\nepsilon_bps: \"0\"\ntrailing_stop_percent: \"0\"\n\
         position_fraction: \"{fraction}\"\nmax_position_notional: \"20000\"\nslippage_guard_bps: \"100000\"\n\
         entry_filters: {{}}\n"
    )
}

/// Windows no crossover reaches within a test: the bot never trades by itself.
const STILL: &str = "trailing_stop_percent: \"0\"\nshort_window: 500\nlong_window: 1000\nentry_filters: {}\n";

/// A dailyLoss level and a 5% drawdown level, both far below what the account's cash moves
/// by in these tests; trips release by themselves after 2 healthy cycles.
fn guarded(strategy: &str, daily_loss: &str) -> String {
    format!(
        "{strategy}guards:\n  dailyLoss: {{reduceOnlyAt: \"{daily_loss}\"}}\n  drawdownPercent: {{reduceOnlyAt: \"5\"}}\n  \
         resume: Auto\n  healthyCyclesBeforeResume: 2\n"
    )
}

/// One bot process with its own identity (`--bot-id`) and folder.
struct Bot {
    process: BotProcess,
    dir: PathBuf,
    prefix: String,
}

impl Bot {
    fn start(exchange: &Exchange, id: &str, config: &str, flags: &[&str]) -> Self {
        let dir = exchange.path(id);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.yaml"), config).unwrap();
        let (config, metrics, state) = (
            dir.join("config.yaml"),
            dir.join("metrics.json"),
            dir.join("guard-state.json"),
        );
        let mut args = vec![
            "--profile",
            "demo",
            "--config",
            config.to_str().unwrap(),
            "--symbols",
            "BTC-USD",
            "--interval",
            "0.3",
            "--bot-id",
            id,
            "--metrics-file",
            metrics.to_str().unwrap(),
            "--state-file",
            state.to_str().unwrap(),
            "--metrics-addr",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(flags);
        // Waits read this process's figures only (a restarted bot starts a new file).
        let _ = std::fs::remove_file(&metrics);
        let log = dir.join("bot.log");
        let process = BotProcess::start(&args, &exchange.env(), exchange.dir.path(), &log);
        Self {
            process,
            dir,
            prefix: format!("pb.{id}."),
        }
    }

    fn metrics(&self) -> Value {
        metrics_json(&self.dir.join("metrics.json")).unwrap_or_default()
    }

    fn cycles(&self) -> u64 {
        self.metrics()["cycles"].as_u64().unwrap_or(0)
    }

    async fn wait_cycles(&self, more: u64) {
        let target = self.cycles() + more;
        wait_until(&format!("{} cycles of {}", more, self.prefix), MINUTE, || {
            self.cycles() >= target
        })
        .await;
    }

    fn guard_state(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.dir.join("guard-state.json")).unwrap()).unwrap()
    }

    fn stop(&mut self) {
        let status = tokio::task::block_in_place(|| self.process.stop());
        assert!(status.success(), "{}", self.process.log());
    }
}

fn equity(m: &Value) -> Decimal {
    dec(&m["equity"])
}

fn pnl(m: &Value) -> Decimal {
    dec(&m["pnl_today"])
}

fn cash(m: &Value) -> Value {
    m["inventory"]["cash"].clone()
}

fn own_btc(m: &Value) -> Decimal {
    dec(&m["inventory"]["symbols"]["BTC-USD"]["own"])
}

fn shock(exchange: &Exchange, percent: i64) {
    exchange
        .sim
        .inject(exchange_sim::FaultRequest {
            price_shock: Some(exchange_sim::PriceShock {
                product_id: "BTC-USD".into(),
                percent: Decimal::from(percent),
            }),
            ..Default::default()
        })
        .unwrap();
}

/// What a bot with no losses of its own shows whatever happened to the account.
fn assert_untouched(who: &str, m: &Value, start_equity: Decimal) {
    assert_eq!(equity(m), start_equity, "{who}'s equity moved: {m:#}");
    assert_eq!(pnl(m), Decimal::ZERO, "{who}: {m:#}");
    assert_eq!(dec(&m["drawdown_percent"]), Decimal::ZERO, "{who}: {m:#}");
    assert_eq!(m["trips"], serde_json::json!([]), "{who}: {m:#}");
}

/// Three bots on one key. A trades 10% of its equity per entry (thousands of USD); B runs the
/// same strategy dry; C trades 0.2% per entry. B and C have loss levels of 500 USD and a 5%
/// drawdown level, which A's spending would cross many times over if the account's cash were
/// theirs. While the account's USD falls by thousands, B's equity does not move at all (it
/// sees the account short of its cash, `unbacked`, so it would size on less), C's PnL is only
/// its own small trading, nothing trips; at the end each bot's cash is its books' baseline
/// plus exactly its own fills' cash flow as the exchange recorded it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_bots_trades_on_the_same_account_are_not_a_bots_loss() {
    let start_usd = dec!(100000);
    let exchange = Exchange::start(Duration::from_millis(200), &[("USD", start_usd)]).await;
    let mut a = Bot::start(&exchange, "a", &active("0.1"), &["--dry-run=false", "--disable-guards"]);
    let mut b = Bot::start(&exchange, "b", &guarded(&active("0.1"), "500"), &["--dry-run"]);
    let mut c = Bot::start(&exchange, "c", &guarded(&active("0.002"), "500"), &["--dry-run=false"]);
    for bot in [&a, &b, &c] {
        bot.wait_cycles(3).await;
    }
    let b_start = equity(&b.metrics());
    assert_eq!(cash(&b.metrics())["baseline"], cash(&b.metrics())["cash"]);

    let (mut deepest_drop, mut b_unbacked) = (Decimal::ZERO, Decimal::ZERO);
    let (mut c_worst, mut round) = (Decimal::ZERO, 0);
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let (mb, mc) = (b.metrics(), c.metrics());
        assert_untouched("B (dry run)", &mb, b_start);
        assert_eq!(mc["trips"], serde_json::json!([]), "C tripped: {mc:#}");
        for m in [&mb, &mc] {
            assert_eq!(m["trading_mode"], "Normal", "{m:#}");
        }
        c_worst = c_worst.min(pnl(&mc));
        b_unbacked = b_unbacked.max(dec(&cash(&mb)["unbacked"]));
        deepest_drop = deepest_drop.max(start_usd - exchange.balance("USD").await);
        let traded = |filled: &std::collections::BTreeMap<(String, String), (usize, Decimal)>, side: &str| {
            filled
                .get(&("BTC-USD".to_string(), side.to_string()))
                .is_some_and(|f| f.1 > Decimal::ZERO)
        };
        let (fa, fc) = (exchange.filled_by(&a.prefix).await, exchange.filled_by(&c.prefix).await);
        if deepest_drop > dec!(5000)
            && b_unbacked > dec!(5000)
            && traded(&fa, "BUY")
            && traded(&fa, "SELL")
            && traded(&fc, "BUY")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not enough trading yet: drop {deepest_drop}, B unbacked {b_unbacked}, A {fa:?}, C {fc:?}\n{}",
            a.process.log()
        );
        round += 1;
        if round % 10 == 0 {
            shock(&exchange, if round % 20 == 0 { 2 } else { -2 });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "account USD fell by up to {deepest_drop}; B saw up to {b_unbacked} of its cash unbacked; C's worst PnL {c_worst}"
    );
    assert!(c_worst > dec!(-500), "C lost only on its own small trades: {c_worst}");
    for bot in [&mut a, &mut b, &mut c] {
        bot.stop();
    }

    // The exchange's records: B placed nothing; A and C traded; each bot's cash is its own.
    assert!(
        exchange.orders_of(&b.prefix).await.is_empty(),
        "the dry run placed nothing"
    );
    assert!(
        b.process.log().contains("\"event\":\"order_dry_run\""),
        "B would have traded"
    );
    assert_untouched("B (dry run)", &b.metrics(), b_start);
    for bot in [&a, &c] {
        let books = cash(&bot.metrics());
        let flow = exchange.cash_flow_of(&bot.prefix).await;
        let expected = dec(&books["baseline"]) + flow;
        assert!(
            (dec(&books["cash"]) - expected).abs() < dec!(0.000001),
            "{}: cash {} is not the baseline plus its own fills' {flow}",
            bot.prefix,
            books["cash"]
        );
    }
    let flows = exchange.cash_flow_of(&a.prefix).await + exchange.cash_flow_of(&c.prefix).await;
    assert!(
        (exchange.balance("USD").await - (start_usd + flows)).abs() < dec!(0.000001),
        "the account moved by A's and C's fills together"
    );
}

/// A bot holding 0.05 BTC of its own on an account where a person withdraws and deposits USD:
/// a withdrawal of 15,000 (far over its 150 USD loss level and 5% drawdown level) trips
/// nothing and a deposit is no profit; after a price fall trips its dailyLoss guard
/// (resume: Auto after 2 healthy cycles), a deposit of 50,000 does not release it, and a
/// withdrawal adds no trip. Its unbacked cash shows it would size only on what is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deposits_and_withdrawals_neither_trip_nor_release_anything() {
    let exchange = Exchange::start(Duration::from_millis(200), &[("USD", dec!(20000))]).await;
    exchange.place("pb.d.seed-1", "BTC-USD", "BUY", dec!(0.05));
    let mut d = Bot::start(&exchange, "d", &guarded(STILL, "150"), &["--dry-run=false"]);
    d.wait_cycles(3).await;
    let m = d.metrics();
    assert_eq!(own_btc(&m), dec!(0.05), "the bot's own coins: {m:#}");
    let near = |value: Decimal, expected: Decimal| (value - expected).abs() < dec!(30);

    exchange.transfer("USD", dec!(-15000));
    d.wait_cycles(4).await;
    let m = d.metrics();
    assert!(near(pnl(&m), Decimal::ZERO), "a withdrawal is no loss: {m:#}");
    assert_eq!(m["trips"], serde_json::json!([]), "{m:#}");
    assert!(dec(&cash(&m)["unbacked"]) > dec!(14999), "sized on what is left: {m:#}");
    exchange.transfer("USD", dec!(30000));
    d.wait_cycles(4).await;
    let m = d.metrics();
    assert!(near(pnl(&m), Decimal::ZERO), "a deposit is no profit: {m:#}");
    assert_eq!(dec(&cash(&m)["unbacked"]), Decimal::ZERO);
    assert_eq!(m["trips"], serde_json::json!([]));

    shock(&exchange, -8);
    wait_until("the dailyLoss trip", MINUTE, || {
        d.metrics()["trips"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t["guard"] == "dailyLoss"))
    })
    .await;
    let tripped = d.metrics();
    let loss = pnl(&tripped);
    assert!(loss < dec!(-150), "{tripped:#}");
    exchange.transfer("USD", dec!(50000));
    d.wait_cycles(8).await;
    let m = d.metrics();
    assert!(near(pnl(&m), loss), "the deposit is not a recovery: {m:#}");
    assert_eq!(m["trips"], tripped["trips"], "still latched: {m:#}");
    assert_eq!(m["trading_mode"], "ReduceOnly");
    exchange.transfer("USD", dec!(-60000));
    d.wait_cycles(4).await;
    let m = d.metrics();
    assert!(near(pnl(&m), loss), "{m:#}");
    assert_eq!(m["trips"], tripped["trips"], "no new trip: {m:#}");
    assert!(!d.process.log().contains("guard_released"), "{}", d.process.log());
    d.stop();
    assert_eq!(
        exchange.orders_of("pb.d.").await.len(),
        1,
        "only the seed order: the bot sold nothing"
    );
}

/// A restart keeps the day-start reference: the bot owns 0.05 BTC and is down about 5% on
/// them; while it is stopped a person withdraws 5,000 USD and another bot buys 0.02 BTC on the
/// account. The restarted bot goes on from the same books and the same day-start equity: its
/// PnL is what it was, not thousands lower, and not reset to zero. Only when its books are
/// removed (inventory.json deleted) do they open anew, and the references restart with them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_the_day_start_reference() {
    let exchange = Exchange::start(Duration::from_millis(200), &[("USD", dec!(20000))]).await;
    exchange.place("pb.r.seed-1", "BTC-USD", "BUY", dec!(0.05));
    let flags = ["--dry-run=false"];
    let config = guarded(STILL, "1000");
    let mut r = Bot::start(&exchange, "r", &config, &flags);
    r.wait_cycles(3).await;
    shock(&exchange, -5);
    wait_until("the loss of the fall", MINUTE, || pnl(&r.metrics()) < dec!(-150)).await;
    r.wait_cycles(2).await;
    r.stop();
    let before = r.metrics();
    let day_start = r.guard_state()["day_start_equity"].clone();
    let books: Value = serde_json::from_slice(&std::fs::read(r.dir.join("inventory.json")).unwrap()).unwrap();
    assert!(
        books["books"]["baseline"].is_string(),
        "the books are persisted: {books:#}"
    );

    exchange.transfer("USD", dec!(-5000));
    exchange.place("pb.other.1", "BTC-USD", "BUY", dec!(0.02));
    let mut r = Bot::start(&exchange, "r", &config, &flags);
    r.wait_cycles(3).await;
    let after = r.metrics();
    assert_eq!(
        r.guard_state()["day_start_equity"],
        day_start,
        "the same day-start reference"
    );
    assert!(
        (pnl(&after) - pnl(&before)).abs() < dec!(30),
        "before {before:#}\nafter {after:#}"
    );
    assert_eq!(cash(&after)["books"], cash(&before)["books"], "the same books");
    assert_eq!(own_btc(&after), dec!(0.05), "the other bot's coins are not its");
    assert_eq!(after["trips"], serde_json::json!([]), "{after:#}");
    r.stop();

    // Books removed: opened anew on what the account holds now, references restarted.
    std::fs::remove_file(r.dir.join("inventory.json")).unwrap();
    let mut r = Bot::start(&exchange, "r", &config, &flags);
    r.wait_cycles(3).await;
    let reopened = r.metrics();
    assert_ne!(cash(&reopened)["books"], cash(&before)["books"]);
    assert!(r.process.log().contains("\"event\":\"cash_books_changed\""));
    assert!(pnl(&reopened).abs() < dec!(30), "{reopened:#}");
    assert_eq!(
        own_btc(&reopened),
        dec!(0.05),
        "the ledger is rebuilt from the exchange's history"
    );
    assert_eq!(reopened["trips"], serde_json::json!([]));
    r.stop();
}
