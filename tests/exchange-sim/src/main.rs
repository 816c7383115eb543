//! `exchange-sim`: the simulator as a standalone server.
//!
//! Logs JSON lines on stderr; stdout carries exactly one line,
//! `exchange-sim listening on http://ADDR`, once the port is bound.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use exchange_sim::{SimConfig, Simulator, load_keys_file};
use tracing_subscriber::EnvFilter;

/// Local Coinbase Advanced Trade exchange simulator.
#[derive(Debug, Parser)]
#[command(name = "exchange-sim", version, about)]
struct Args {
    /// Address to bind.
    #[arg(long, env = "EXCHANGE_SIM_BIND", default_value = "0.0.0.0")]
    bind: IpAddr,
    /// Port to listen on (0 for any free port).
    #[arg(long, env = "EXCHANGE_SIM_PORT", default_value_t = 8080)]
    port: u16,
    /// Seed of the deterministic price paths.
    #[arg(long, env = "EXCHANGE_SIM_SEED", default_value_t = 42)]
    seed: u64,
    /// JSON list of API keys to register at startup.
    #[arg(long, env = "EXCHANGE_SIM_KEYS_FILE")]
    keys_file: Option<PathBuf>,
    /// Require `Authorization: Bearer <token>` on /admin endpoints.
    #[arg(long, env = "EXCHANGE_SIM_ADMIN_TOKEN")]
    admin_token: Option<String>,
    /// Market step interval in milliseconds (0: only POST /admin/tick moves the market).
    #[arg(long, env = "EXCHANGE_SIM_TICK_MS", default_value_t = 1000)]
    tick_ms: u64,
    /// Comma-separated product ids to list (default: the whole catalogue).
    #[arg(long, env = "EXCHANGE_SIM_PRODUCTS", value_delimiter = ',')]
    products: Vec<String>,
    /// Minutes of price history generated at startup.
    #[arg(long, env = "EXCHANGE_SIM_HISTORY_MINUTES", default_value_t = 2880)]
    history_minutes: u32,
    /// Private REST requests per key per second (0 disables the limit).
    #[arg(long, default_value_t = 30)]
    private_rate_limit: u32,
    /// Public REST requests per IP per second (0 disables the limit).
    #[arg(long, default_value_t = 10)]
    public_rate_limit: u32,
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received"),
        () = terminate => tracing::info!("SIGTERM received"),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_current_span(false)
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let keys = match &args.keys_file {
        Some(path) => load_keys_file(path)?,
        None => Vec::new(),
    };
    let config = SimConfig {
        bind: SocketAddr::new(args.bind, args.port),
        seed: args.seed,
        tick: Duration::from_millis(args.tick_ms),
        products: args.products,
        keys,
        admin_token: args.admin_token,
        history_minutes: args.history_minutes,
        private_rate_limit: args.private_rate_limit,
        public_rate_limit: args.public_rate_limit,
        ..SimConfig::default()
    };
    let sim = Simulator::start(config).await.context("starting exchange-sim")?;
    println!("exchange-sim listening on http://{}", sim.addr());
    shutdown_signal().await;
    sim.shutdown().await;
    Ok(())
}
