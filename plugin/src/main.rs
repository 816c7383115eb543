//! `kubectl tradingbot`: a kubectl plugin for TradingBots. kubectl runs `kubectl-tradingbot`
//! from PATH for `kubectl tradingbot ...`; `make plugin` installs it. Everything it does is an
//! ordinary API request with the user's own kubeconfig and rights: reads of TradingBots, their
//! Events and (through the API server's pod proxy) their metrics, and annotations for requests.

mod act;
mod cli;
mod cluster;
mod error;
mod get;
mod history;
mod identity;
mod status;
mod table;

use clap::Parser;
use cli::{Cli, Command};
use std::process::ExitCode;
use tradingbot_crds::TradingMode;
use tradingbot_crds::actions::RolloutAction;

async fn run(cli: Cli) -> error::Result<()> {
    let cluster = cluster::Cluster::connect(cli.namespace).await?;
    let wait = cli.wait;
    match cli.command {
        Command::Get {
            bot,
            all_namespaces,
            watch,
        } => get::run(&cluster, bot.as_deref(), all_namespaces, watch).await,
        Command::Status { bot } => status::run(&cluster, &bot).await,
        Command::History { bot } => history::run(&cluster, &bot).await,
        Command::Halt { bot, why } => act::brake(&cluster, &bot, Some(TradingMode::Halted), &why.reason, wait).await,
        Command::ReduceOnly { bot, why } => {
            act::brake(&cluster, &bot, Some(TradingMode::ReduceOnly), &why.reason, wait).await
        }
        Command::Resume { bot, why } => act::brake(&cluster, &bot, None, &why.reason, wait).await,
        Command::Ack { bot, trip, why } => act::ack(&cluster, &bot, trip.as_deref(), &why.reason, wait).await,
        Command::Flatten { bot, request_id, why } => {
            act::flatten(&cluster, &bot, request_id.as_deref(), &why.reason, wait).await
        }
        Command::Promote { bot, full, why } => {
            let action = if full {
                RolloutAction::PromoteFull
            } else {
                RolloutAction::Promote
            };
            act::rollout(&cluster, &bot, action, &why.reason, wait).await
        }
        Command::Abort { bot, why } => act::rollout(&cluster, &bot, RolloutAction::Abort, &why.reason, wait).await,
        Command::Retry { bot, why } => act::rollout(&cluster, &bot, RolloutAction::Retry, &why.reason, wait).await,
        Command::Pause { bot, why } => act::rollout(&cluster, &bot, RolloutAction::Pause, &why.reason, wait).await,
        Command::Unpause { bot, why } => act::rollout(&cluster, &bot, RolloutAction::Resume, &why.reason, wait).await,
        Command::Undo { bot, to_revision, why } => {
            act::rollout(&cluster, &bot, RolloutAction::Undo(to_revision), &why.reason, wait).await
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {failure}");
            failure.exit_code()
        }
    }
}
