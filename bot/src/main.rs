//! The `perps-bot` command. Exit codes: 0 success, 2 bad configuration, 3 credentials missing
//! or rejected, 1 anything else; failures print one line naming the reason.

use clap::Parser;
use perps_bot::cli::{AccountCommand, Cli, Command, OrdersCommand};
use perps_bot::commands::{backtest, exporter, flatten, orders};
use perps_bot::config::{BotConfig, BrokerKind, ConfigError, ConfigOverrides};
use perps_bot::telemetry::init_logging;
use std::process::ExitCode;

fn main() -> ExitCode {
    let argv = match perps_bot::cli::legacy_argv(std::env::args().collect()) {
        Ok(argv) => argv,
        Err(error) => {
            eprintln!("perps-bot: configuration error: {error}");
            return ExitCode::from(2);
        }
    };
    let cli = Cli::parse_from(argv);
    init_logging(cli.run.log_format);
    let config = match resolve_config(&cli) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("perps-bot: configuration error: {error}");
            return ExitCode::from(2);
        }
    };
    // A replay is synchronous: it runs without the async runtime's threads and their memory.
    if let Some(Command::Backtest(bt)) = &cli.command {
        return finish(backtest_command(bt, &config));
    }
    // TLS (the exchange, the API server) is for every other command: a replay never loads it.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("perps-bot: cannot start the async runtime: {error}");
            return ExitCode::from(1);
        }
    };
    finish(runtime.block_on(dispatch(cli, config)))
}

/// The exit code of a command's result; a failure prints one line naming the reason.
fn finish(result: anyhow::Result<()>) -> ExitCode {
    let Err(error) = result else {
        return ExitCode::SUCCESS;
    };
    let (code, line) = if error.downcast_ref::<ConfigError>().is_some() {
        (2, format!("{error:#}"))
    } else if is_credentials_error(&error) {
        (3, credentials_line(&error))
    } else {
        (1, format!("{error:#}"))
    };
    eprintln!("perps-bot: {line}");
    write_termination_message(&line);
    ExitCode::from(code)
}

/// A credentials failure, naming the Secret they come from when the operator said which
/// (COINBASE_CREDENTIALS_SECRET holds its name, never its content).
fn credentials_line(error: &anyhow::Error) -> String {
    match std::env::var(tradingbot_crds::names::env::CREDENTIALS_SECRET) {
        Ok(secret) if !secret.is_empty() => format!("credentials from Secret {secret:?}: {error:#}"),
        _ => format!("{error:#}"),
    }
}

/// Leave the reason for the pod's status (`kubectl describe pod`, and the operator reads it):
/// PERPS_BOT_TERMINATION_LOG names the file (the container's terminationMessagePath).
fn write_termination_message(line: &str) {
    if let Some(path) = std::env::var_os(tradingbot_crds::names::env::TERMINATION_LOG) {
        let _ = std::fs::write(path, format!("{line}\n"));
    }
}

fn resolve_config(cli: &Cli) -> Result<BotConfig, ConfigError> {
    let from_file = match &cli.run.config {
        Some(path) => ConfigOverrides::load(path)?,
        None => ConfigOverrides::default(),
    };
    let mut from_flags = cli.run.overrides()?;
    if let Some(seed) = cli.run.seed {
        let mut paper = from_file.paper.clone().unwrap_or_default();
        paper.seed = seed;
        from_flags.paper = Some(paper);
    }
    BotConfig::resolve(cli.run.profile, &from_file, &from_flags)
}

/// Missing, unusable or refused credentials (exit code 3), by type, never by message text.
fn is_credentials_error(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause.is::<perps_bot::coinbase::CredentialsError>()
            || matches!(
                cause.downcast_ref::<perps_bot::broker::BrokerError>(),
                Some(perps_bot::broker::BrokerError::Unauthorized(_) | perps_bot::broker::BrokerError::Forbidden(_))
            )
    })
}

async fn dispatch(cli: Cli, config: BotConfig) -> anyhow::Result<()> {
    let args = &cli.run;
    match cli.command {
        None | Some(Command::Run) if args.account_snapshot => print_json(&account_snapshot(args, &config).await?),
        Some(Command::Account {
            action: AccountCommand::Snapshot,
        }) => print_json(&account_snapshot(args, &config).await?),
        None | Some(Command::Run) => perps_bot::runner::run(args, config).await,
        Some(Command::Orders { action }) => {
            let prefix = args.client_order_prefix();
            let result = match (config.broker, &action) {
                (BrokerKind::Paper, OrdersCommand::EditPreview(_) | OrdersCommand::ApplyEdit(_)) => {
                    anyhow::bail!(ConfigError::new(
                        "broker",
                        "editing orders needs the Coinbase broker (the paper exchange has no edit API)"
                    ))
                }
                (BrokerKind::Paper, _) => order_tool(&paper(&config), &config, &action, &prefix).await?,
                (BrokerKind::Coinbase, _) => {
                    let (config, broker) = connect(args, &config).await?;
                    match &action {
                        OrdersCommand::EditPreview(edit) => orders::edit_preview(&broker, edit).await?,
                        OrdersCommand::ApplyEdit(edit) => orders::apply_edit(&broker, edit).await?,
                        _ => order_tool(&broker, &config, &action, &prefix).await?,
                    }
                }
            };
            print_json(&result)
        }
        Some(Command::Flatten) => {
            let prefix = args.client_order_prefix();
            let result = match config.broker {
                BrokerKind::Paper => flatten::run(&paper(&config), &config, &prefix).await?,
                BrokerKind::Coinbase => {
                    let (config, broker) = connect(args, &config).await?;
                    flatten::run(&broker, &config, &prefix).await?
                }
            };
            print_json(&result)
        }
        Some(Command::Exporter) => {
            let file = args
                .metrics_file
                .clone()
                .unwrap_or_else(|| perps_bot::runner::default_metrics_file(&config));
            exporter::serve(file, args.metrics_addr).await
        }
        Some(Command::Treasury { .. }) => {
            Err(ConfigError::new("treasury", perps_bot::cli::treasury_refusal("treasury")).into())
        }
        Some(Command::Backtest(bt)) => backtest_command(&bt, &config),
    }
}

fn paper(config: &BotConfig) -> perps_bot::broker::paper::PaperExchange {
    perps_bot::broker::paper::PaperExchange::new(&config.paper, &config.symbols, config.derivatives)
}

async fn connect(
    args: &perps_bot::cli::RunArgs,
    config: &BotConfig,
) -> anyhow::Result<(BotConfig, perps_bot::coinbase::CoinbaseBroker)> {
    perps_bot::coinbase::connect_for_trading(args, config, &perps_bot::runner::client_instance(args)).await
}

async fn order_tool<B: perps_bot::broker::Broker>(
    broker: &B,
    config: &BotConfig,
    action: &OrdersCommand,
    prefix: &str,
) -> anyhow::Result<serde_json::Value> {
    match action {
        OrdersCommand::Preview(order) => orders::preview(broker, order, prefix).await,
        OrdersCommand::Place(order) => orders::place(broker, config, order, prefix).await,
        OrdersCommand::EditPreview(_) | OrdersCommand::ApplyEdit(_) => {
            anyhow::bail!("editing orders needs the Coinbase broker")
        }
    }
}

/// The account audit: the exchange account with the Coinbase broker, the paper account (no
/// credentials involved) with the paper broker.
async fn account_snapshot(args: &perps_bot::cli::RunArgs, config: &BotConfig) -> anyhow::Result<serde_json::Value> {
    match config.broker {
        BrokerKind::Coinbase => perps_bot::coinbase::account_snapshot(args, config).await,
        BrokerKind::Paper => {
            let paper =
                perps_bot::broker::paper::PaperExchange::new(&config.paper, &config.symbols, config.derivatives);
            let account = paper.account_now();
            Ok(serde_json::json!({
                "broker": "paper",
                "timestamp": perps_bot::clock::rfc3339_now(),
                "profile": config.profile.to_string(),
                "symbols": config.symbols,
                "cash": account.cash,
                "positions": account.positions,
                "warnings": [],
                "note": "the paper exchange is embedded: no exchange account, key or credentials are involved",
            }))
        }
    }
}

/// `perps-bot backtest`: write a generated replay, or replay a candle file and print its summary.
fn backtest_command(bt: &perps_bot::cli::BacktestArgs, config: &BotConfig) -> anyhow::Result<()> {
    if let Some(count) = bt.generate {
        backtest::generate(&bt.candles, &config.symbols, count, config.paper.seed)?;
        println!("wrote {count} candles to {}", bt.candles.display());
        return Ok(());
    }
    let replay = backtest::Replay::open(&bt.candles)?;
    let summary = backtest::run(config, &replay, bt.baseline)?;
    if bt.json {
        return print_json(&serde_json::to_value(&summary)?);
    }
    println!(
        "{} replay: {} candles over {} symbols in {:.3} s = {:.0} candles/s; orders {} placed, {} refused; realised PnL {} fees {}; peak RSS {:.1} MiB",
        summary.mode,
        summary.candles,
        summary.symbols,
        summary.seconds,
        summary.candles_per_second,
        summary.orders_placed,
        summary.orders_refused,
        summary.realized_pnl,
        summary.fees,
        summary.peak_rss_bytes as f64 / 1_048_576.0
    );
    Ok(())
}

fn print_json(value: &serde_json::Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
