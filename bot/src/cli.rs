//! The command line. Flags that adjust the profile are optional values: a flag the user did
//! not pass is `None` and never overrides the profile or the config file.

use crate::config::{BrokerKind, ConfigOverrides};
use crate::domain::{Side, Symbol, TimeInForce};
use crate::telemetry::LogFormat;
use clap::{Args, Parser, Subcommand, ValueEnum};
use rust_decimal::Decimal;
use std::net::SocketAddr;
use std::path::PathBuf;
use tradingbot_crds::{Instance, Profile};

#[derive(Debug, Parser)]
#[command(
    name = "perps-bot",
    version,
    about = "Coinbase trading bot: MA-crossover strategy, pre-trade risk engine, runtime guards and live mode control",
    long_about = "Runs the trading loop (market data -> strategy -> risk -> execution) once per interval.\n\
                  Without a command it trades; see the commands for the account audit, manual orders and backtests.\n\
                  Exit codes: 0 success, 2 bad configuration, 3 credentials missing or rejected, 1 other failures."
)]
pub struct Cli {
    #[command(flatten)]
    pub run: RunArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the trading loop (the default).
    Run,
    /// Account audit: print key permissions, fee tier, balances, portfolios and clock skew as JSON.
    Account {
        #[command(subcommand)]
        action: AccountCommand,
    },
    /// Manual order tools (previews, one order, edits of a resting limit order).
    Orders {
        #[command(subcommand)]
        action: OrdersCommand,
    },
    /// Close the bot's own positions now with reduce-only orders (after cancelling its resting
    /// orders); coins on the account the bot did not buy are never sold. Prints JSON.
    Flatten,
    /// Serve a metrics file's figures (metrics.json of a running bot) on --metrics-addr
    /// (/metrics, /metrics.json, /healthz), with the file's age, so a stalled writer shows.
    Exporter,
    /// Replay a candle CSV through strategy, risk and paper execution and print throughput.
    Backtest(BacktestArgs),
    /// Not part of perps-bot: treasury moves (convert, move funds) need a key that can transfer,
    /// which a trading key should not have.
    #[command(hide = true)]
    Treasury {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
        rest: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum AccountCommand {
    /// Print the account snapshot JSON and exit (same as --account-snapshot).
    Snapshot,
}

#[derive(Debug, Subcommand)]
pub enum OrdersCommand {
    /// Show the exchange's preview of an order without placing it.
    Preview(OrderArgs),
    /// Place one order after the trading-state gate, quantisation and the risk checks.
    Place(OrderArgs),
    /// Preview a new price and/or size for one of the bot's resting limit orders; prints the
    /// exchange's figures and a preview id to apply (`ORDER_ID:PREVIEW_ID`).
    EditPreview(EditArgs),
    /// Apply a previewed edit (`ORDER_ID:PREVIEW_ID`), after previewing it again.
    ApplyEdit(ApplyEditArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OrderType {
    Market,
    Limit,
    #[value(alias = "stop_limit")]
    StopLimit,
}

#[derive(Debug, Clone, Args)]
pub struct EditArgs {
    /// The order id (exchange) of the resting limit order.
    pub order_id: String,
    /// The new limit price.
    #[arg(long, visible_alias = "order-price")]
    pub price: Option<Decimal>,
    /// The new size, in base currency.
    #[arg(long, visible_aliases = ["order-quantity", "quantity"])]
    pub size: Option<Decimal>,
}

#[derive(Debug, Clone, Args)]
pub struct ApplyEditArgs {
    /// `ORDER_ID:PREVIEW_ID`, as `orders edit-preview` printed it.
    pub edit: String,
}

#[derive(Debug, Clone, Args)]
pub struct OrderArgs {
    /// Product id, e.g. BTC-USD.
    #[arg(long, visible_alias = "order-symbol")]
    pub symbol: Symbol,
    #[arg(long, visible_alias = "order-side")]
    pub side: Side,
    #[arg(
        long = "type",
        visible_alias = "order-type",
        value_enum,
        ignore_case = true,
        default_value = "market"
    )]
    pub order_type: OrderType,
    /// Size in base currency.
    #[arg(long, visible_alias = "order-quantity")]
    pub quantity: Decimal,
    /// Limit price (limit and stop-limit orders).
    #[arg(long, visible_alias = "order-price")]
    pub price: Option<Decimal>,
    /// Stop price (stop-limit orders).
    #[arg(long, visible_alias = "order-stop")]
    pub stop: Option<Decimal>,
    /// Time in force for limit orders (GTC, IOC or FOK, any case).
    #[arg(long = "order-tif", value_enum, ignore_case = true)]
    pub tif: Option<TimeInForce>,
    /// Refuse the order unless it shrinks the current position.
    #[arg(long, visible_alias = "order-reduce-only")]
    pub reduce_only: bool,
    /// Client order id (default: the bot's prefix and a fresh id, so the order counts as the
    /// bot's own). Reusing one never creates a second order.
    #[arg(long, visible_alias = "order-client-id")]
    pub client_id: Option<String>,
    #[arg(long, visible_alias = "order-leverage")]
    pub leverage: Option<Decimal>,
}

#[derive(Debug, Clone, Args)]
pub struct BacktestArgs {
    /// CSV with a header: symbol,start,open,high,low,close,volume (start in unix seconds).
    #[arg(long)]
    pub candles: PathBuf,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// Skip strategy and risk (measure the bare replay loop: the benchmark's floor).
    #[arg(long, hide = true)]
    pub baseline: bool,
    /// Write a CSV with a random-walk replay of N candles over the profile's symbols and exit.
    #[arg(long, value_name = "N")]
    pub generate: Option<usize>,
}

/// Flags of the trading loop (also read by the other commands: profile, config, exchange).
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Built-in profile.
    #[arg(long, global = true, env = "PERPS_BOT_PROFILE")]
    pub profile: Option<Profile>,
    /// YAML or TOML file of profile overrides (unknown keys are refused).
    #[arg(long, global = true, env = "PERPS_BOT_CONFIG")]
    pub config: Option<PathBuf>,
    /// Smoke test: run one cycle (or --cycles N) and exit; exits 1 naming the path when it
    /// cannot write its metrics or health file.
    #[arg(long, global = true)]
    pub dev_fast: bool,
    /// Number of cycles before exiting (default: one with --dev-fast, unlimited otherwise).
    #[arg(long, global = true, value_name = "N")]
    pub cycles: Option<u64>,
    /// Run the pipeline but send no orders (`--dry-run=false` to force live).
    #[arg(long, global = true, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub dry_run: Option<bool>,
    /// Only orders that shrink positions (`--reduce-only=false` to clear a profile's default).
    #[arg(long, global = true, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub reduce_only: Option<bool>,
    /// Symbols, comma or semicolon separated (env TRADING_SYMBOLS).
    #[arg(long, global = true, env = "TRADING_SYMBOLS", num_args = 1.., value_delimiter = ',')]
    pub symbols: Option<Vec<String>>,
    /// Seconds between cycles.
    #[arg(long, global = true, env = "PERPS_BOT_INTERVAL")]
    pub interval: Option<Decimal>,
    /// Seconds between full account refreshes: the own-inventory ledger is rebuilt from the
    /// exchange's order history this often (default 300).
    #[arg(long, global = true, value_name = "SECONDS")]
    pub account_interval: Option<Decimal>,
    /// Target leverage for perpetual entries.
    #[arg(long, global = true)]
    pub leverage: Option<Decimal>,
    /// Time in force of limit orders: GTC, IOC or FOK (any case).
    #[arg(long, global = true, value_enum, ignore_case = true)]
    pub tif: Option<TimeInForce>,
    /// Preview every order with the exchange before placing it.
    #[arg(long, global = true, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub enable_preview: Option<bool>,
    /// Write metrics.json here after every cycle (health.json goes next to it).
    #[arg(long, global = true, env = "PERPS_BOT_METRICS_FILE")]
    pub metrics_file: Option<PathBuf>,
    /// Address of /metrics, /metrics.json, /healthz, /readyz and /control.
    #[arg(long, global = true, env = "PERPS_BOT_METRICS_ADDR", default_value = "0.0.0.0:9102")]
    pub metrics_addr: SocketAddr,
    /// Print the account snapshot JSON and exit.
    #[arg(long, global = true)]
    pub account_snapshot: bool,
    /// Exchange to trade on (dev uses the paper exchange).
    #[arg(long, global = true, value_enum)]
    pub broker: Option<BrokerKind>,
    /// Seed of the paper exchange's price paths.
    #[arg(long, global = true)]
    pub seed: Option<u64>,
    /// Trade perpetuals (needs CDP credentials whose key allows derivatives).
    #[arg(long, global = true, env = "COINBASE_ENABLE_DERIVATIVES", value_parser = parse_flag_env, num_args = 0..=1, default_missing_value = "1")]
    pub derivatives: Option<bool>,
    /// REST base URL (e.g. the exchange simulator's).
    #[arg(long, global = true, env = "COINBASE_API_BASE")]
    pub api_base_url: Option<String>,
    /// Market data WebSocket URL.
    #[arg(long, global = true, env = "COINBASE_WS_URL")]
    pub ws_url: Option<String>,
    /// Folder holding the CDP key (`cdp_api_key.json`, or COINBASE_CDP_API_KEY and COINBASE_CDP_PRIVATE_KEY files).
    #[arg(long, global = true, env = "COINBASE_CREDENTIALS_DIR")]
    pub credentials_dir: Option<PathBuf>,
    /// YAML/JSON file to restrict the bot, acknowledge trips or request a flatten while it runs.
    #[arg(long, global = true, env = "PERPS_BOT_CONTROL_FILE")]
    pub control_file: Option<PathBuf>,
    /// File holding the bearer token of the HTTP control endpoint (env PERPS_BOT_CONTROL_TOKEN
    /// also works); without one the endpoint is off.
    #[arg(long, global = true, env = "PERPS_BOT_CONTROL_TOKEN_FILE")]
    pub control_token_file: Option<PathBuf>,
    /// Where latched guard trips and the day's equity reference survive restarts.
    #[arg(long, global = true, env = "PERPS_BOT_STATE_FILE")]
    pub state_file: Option<PathBuf>,
    /// Leave open orders on the exchange when stopping (default: cancel them).
    #[arg(long, global = true)]
    pub keep_orders_on_exit: bool,
    /// Turn the in-process guards off (testing the operator's backstop only).
    #[arg(long, global = true, env = "PERPS_BOT_DISABLE_GUARDS", num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    pub disable_guards: bool,
    /// Identity of a bot run by hand: its client order ids start with `pb.<ID>.` (default
    /// `local`), and only those orders' coins and cash are its. Give every bot run by hand on
    /// one account its own (and its own --state-file). A TradingBot's identity is its name.
    #[arg(long, global = true, env = "PERPS_BOT_ID", value_name = "ID", value_parser = parse_bot_id)]
    pub bot_id: Option<String>,
    /// The TradingBot this process runs for (set by the operator; enables the Kubernetes
    /// mode source and Lease fencing).
    #[arg(long, global = true, env = "TRADINGBOT_NAME")]
    pub tradingbot: Option<String>,
    #[arg(long, global = true, env = "TRADINGBOT_NAMESPACE")]
    pub namespace: Option<String>,
    #[arg(long, global = true, env = "TRADINGBOT_INSTANCE", default_value = "prod")]
    pub instance: Instance,
    #[arg(long, global = true, env = "POD_NAME")]
    pub pod_name: Option<String>,
    #[arg(
        long,
        global = true,
        value_enum,
        env = "PERPS_BOT_LOG_FORMAT",
        default_value = "json"
    )]
    pub log_format: LogFormat,
}

/// The reference bot's order-tool and treasury flags, as older scripts pass them, turned into
/// this bot's commands: `--preview-order …` is `orders preview …`, `--edit-order-preview ID`
/// is `orders edit-preview ID`, `--apply-order-edit ID:PREVIEW_ID` is `orders apply-edit …`.
/// Treasury flags are refused with the reason. Everything else passes through unchanged.
pub fn legacy_argv(args: Vec<String>) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::with_capacity(args.len() + 2);
    let mut command: Vec<String> = Vec::new();
    let mut iter = args.into_iter();
    if let Some(program) = iter.next() {
        out.push(program);
    }
    while let Some(arg) = iter.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| iter.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match flag.as_str() {
            "--preview-order" => command = vec!["orders".into(), "preview".into()],
            "--edit-order-preview" => {
                command = vec![
                    "orders".into(),
                    "edit-preview".into(),
                    value("--edit-order-preview ORDER_ID")?,
                ]
            }
            "--apply-order-edit" => {
                command = vec![
                    "orders".into(),
                    "apply-edit".into(),
                    value("--apply-order-edit ORDER_ID:PREVIEW_ID")?,
                ]
            }
            "--convert" | "--move-funds" => return Err(treasury_refusal(&flag)),
            _ => out.push(arg),
        }
    }
    if !command.is_empty() {
        let tail = out.split_off(1);
        out.extend(command);
        out.extend(tail);
    }
    Ok(out)
}

/// Why perps-bot does not move funds.
pub fn treasury_refusal(what: &str) -> String {
    format!(
        "{what}: treasury operations (convert, move funds) are not part of perps-bot: they need an API key \
         that can transfer, and a trading key should not; use Coinbase directly"
    )
}

/// Longest `--bot-id`.
const MAX_BOT_ID_LEN: usize = 32;

/// A `--bot-id`: lowercase letters, digits and '-' (no '.', so no identity's prefix is the
/// start of another's).
fn parse_bot_id(value: &str) -> Result<String, String> {
    let ok = !value.is_empty()
        && value.len() <= MAX_BOT_ID_LEN
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(value.to_string())
    } else {
        Err(format!(
            "{value:?}: a bot id is 1 to {MAX_BOT_ID_LEN} characters of a-z, 0-9 and '-'"
        ))
    }
}

fn parse_flag_env(value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        other => Err(format!("{other:?} is not a boolean (use 1 or 0)")),
    }
}

impl RunArgs {
    /// The prefix of this bot identity's client order ids: its orders are the only ones it
    /// cancels, and the coins they bought the only ones it sells.
    pub fn client_order_prefix(&self) -> String {
        match (&self.tradingbot, &self.namespace, &self.bot_id) {
            (Some(bot), Some(namespace), _) => {
                tradingbot_crds::names::client_order_prefix(namespace, bot, self.instance)
            }
            (_, _, Some(id)) => format!("pb.{id}."),
            _ => tradingbot_crds::names::LOCAL_CLIENT_ORDER_PREFIX.to_string(),
        }
    }

    /// The adjustments the user asked for on the command line (and only those).
    pub fn overrides(&self) -> Result<ConfigOverrides, crate::config::ConfigError> {
        let symbols = match &self.symbols {
            None => None,
            Some(list) => Some(
                list.iter()
                    .flat_map(|s| s.split([',', ';']))
                    .filter(|s| !s.trim().is_empty())
                    .map(|s| s.trim().parse::<Symbol>())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| crate::config::ConfigError::new("--symbols", e))?,
            ),
        };
        Ok(ConfigOverrides {
            symbols,
            interval_seconds: self.interval,
            account_interval_seconds: self.account_interval,
            broker: self.broker,
            dry_run: self.dry_run,
            reduce_only: self.reduce_only,
            derivatives: self.derivatives,
            target_leverage: self.leverage,
            tif: self.tif,
            enable_preview: self.enable_preview,
            paper: None,
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn help_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn unpassed_flags_are_none_and_passed_ones_set() {
        let cli = Cli::try_parse_from(["perps-bot", "--profile", "dev", "--dev-fast"]).unwrap();
        let o = cli.run.overrides().unwrap();
        assert_eq!((o.dry_run, o.reduce_only, o.interval_seconds), (None, None, None));
        let cli = Cli::try_parse_from([
            "perps-bot",
            "--dry-run=false",
            "--reduce-only",
            "--interval",
            "2",
            "--symbols",
            "BTC-USD;ETH-USD,SOL-USD",
        ])
        .unwrap();
        let o = cli.run.overrides().unwrap();
        assert_eq!((o.dry_run, o.reduce_only), (Some(false), Some(true)));
        assert_eq!(o.symbols.unwrap().len(), 3);
    }

    fn parse(line: &[&str]) -> Cli {
        let argv = legacy_argv(line.iter().map(|s| s.to_string()).collect()).unwrap();
        Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{line:?}: {e}"))
    }

    #[test]
    fn the_reference_flags_work_verbatim() {
        for tif in ["IOC", "ioc", "Fok", "GTC"] {
            assert!(parse(&["perps-bot", "--tif", tif]).run.tif.is_some(), "{tif}");
        }
        let cli = parse(&[
            "perps-bot",
            "run",
            "--profile",
            "dev",
            "--dev-fast",
            "--account-interval",
            "60",
        ]);
        assert!(matches!(cli.command, Some(Command::Run)) && cli.run.dev_fast);
        assert_eq!(cli.run.account_interval, Some(Decimal::from(60)));
        let cli = parse(&[
            "perps-bot",
            "--preview-order",
            "--order-symbol",
            "BTC-USD",
            "--order-side",
            "buy",
            "--order-type",
            "stop_limit",
            "--order-quantity",
            "0.1",
            "--order-price",
            "90",
            "--order-stop",
            "91",
            "--order-tif",
            "gtc",
            "--order-client-id",
            "x",
            "--order-reduce-only",
            "--order-leverage",
            "1",
            "--profile",
            "spot",
        ]);
        match cli.command {
            Some(Command::Orders {
                action: OrdersCommand::Preview(a),
            }) => {
                assert_eq!(a.order_type, OrderType::StopLimit);
                assert!(a.reduce_only && a.client_id.as_deref() == Some("x"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(cli.run.profile, Some(Profile::Spot));
        let cli = parse(&["perps-bot", "--edit-order-preview", "o-1", "--order-price", "95000.5"]);
        assert!(
            matches!(cli.command, Some(Command::Orders { action: OrdersCommand::EditPreview(ref e) }) if e.order_id == "o-1" && e.price.is_some())
        );
        let cli = parse(&["perps-bot", "--apply-order-edit=o-1:95000.5@-"]);
        assert!(
            matches!(cli.command, Some(Command::Orders { action: OrdersCommand::ApplyEdit(ref e) }) if e.edit == "o-1:95000.5@-")
        );
        let refused = legacy_argv(vec!["perps-bot".into(), "--convert".into(), "USD:USDC:10".into()]).unwrap_err();
        assert!(refused.contains("treasury"), "{refused}");
        assert!(matches!(
            parse(&["perps-bot", "flatten", "--profile", "spot"]).command,
            Some(Command::Flatten)
        ));
    }

    #[test]
    fn a_bot_id_names_a_hand_run_identity_whose_prefix_nests_with_no_other() {
        let prefix = |line: &[&str]| parse(line).run.client_order_prefix();
        assert_eq!(prefix(&["perps-bot"]), "pb.local.");
        assert_eq!(prefix(&["perps-bot", "--bot-id", "btc-2"]), "pb.btc-2.");
        let managed = prefix(&[
            "perps-bot",
            "--tradingbot",
            "btc",
            "--namespace",
            "trading",
            "--bot-id",
            "x",
        ]);
        assert!(
            managed.ends_with(".btc.prod."),
            "a TradingBot's identity is its name: {managed}"
        );
        for bad in ["", "a.b", "BTC", "a_b", &"a".repeat(33)] {
            let error = Cli::try_parse_from(["perps-bot", "--bot-id", bad])
                .unwrap_err()
                .to_string();
            assert!(error.contains("a-z, 0-9 and '-'"), "{bad}: {error}");
        }
    }

    #[test]
    fn subcommands_parse() {
        let cli = Cli::try_parse_from([
            "perps-bot",
            "orders",
            "place",
            "--symbol",
            "BTC-USD",
            "--side",
            "sell",
            "--quantity",
            "0.1",
            "--reduce-only",
            "--profile",
            "prod",
        ])
        .unwrap();
        assert!(matches!(cli.command, Some(Command::Orders { action: OrdersCommand::Place(ref a) }) if a.reduce_only));
        assert_eq!(cli.run.profile, Some(Profile::Prod));
        assert!(Cli::try_parse_from(["perps-bot", "--profile", "yolo"]).is_err());
    }
}
