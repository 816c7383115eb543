//! The command line: `kubectl tradingbot <command> ...` (kubectl finds this binary on PATH as
//! `kubectl-tradingbot` and passes everything after `tradingbot` to it).

use clap::{Args, Parser, Subcommand};

pub const EXIT_CODES: &str = "\
Exit codes:
  0  done (for requests: the operator, or for flatten the bot, confirmed it)
  1  the cluster could not be reached or answered with an error
  2  wrong usage (unknown command or flag, missing argument)
  3  not found: no such TradingBot, namespace or trip (or the TradingBot API is not installed)
  4  refused: the bot's state does not allow it (the operator or the bot said why)
  5  timed out waiting for the operator or the bot to confirm (--wait); the request stays set";

#[derive(Debug, Parser)]
#[command(
    name = "kubectl-tradingbot",
    bin_name = "kubectl tradingbot",
    version,
    about = "TradingBots from the command line: the fleet live, one bot in full, emergency brakes GitOps cannot undo, \
             rollout actions and who did what",
    after_help = EXIT_CODES
)]
pub struct Cli {
    /// Namespace of the TradingBot(s); default: the kubeconfig context's namespace.
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
    /// Seconds to wait for the operator (or, for flatten, the bot) to confirm a request; 0 does not wait.
    #[arg(long, global = true, default_value_t = 60, value_name = "SECONDS")]
    pub wait: u64,
    #[command(subcommand)]
    pub command: Command,
}

/// Why a request is made, recorded with the requesting user in the bot's audit trail.
#[derive(Debug, Clone, Args)]
pub struct Why {
    /// Why (shown in status.history, Events and the bot's log).
    #[arg(long, default_value = "")]
    pub reason: String,
}

/// A reason that must be given (emergency brakes).
#[derive(Debug, Clone, Args)]
pub struct RequiredWhy {
    /// Why (required: shown in status.brake, status.history, Events and the bot's log).
    #[arg(long)]
    pub reason: String,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The fleet as a table: mode and why, phase, version, rollout step and analysis, canary, trips
    /// (and TradingAccounts where that API exists).
    Get {
        /// Only this bot.
        bot: Option<String>,
        /// Every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        /// Keep the table live, redrawn in place on every change (Ctrl-C ends it).
        #[arg(short = 'w', long)]
        watch: bool,
    },
    /// Everything about one bot: mode and its sources, brake, trips and acknowledgements, rollout
    /// and analysis, conditions, recent Events and its key metrics (through the API server).
    Status { bot: String },
    /// Emergency brake: no orders, open orders cancelled. Git never carries it: no sync undoes it.
    Halt {
        bot: String,
        #[command(flatten)]
        why: RequiredWhy,
    },
    /// Emergency brake: only orders that shrink a position.
    ReduceOnly {
        bot: String,
        #[command(flatten)]
        why: RequiredWhy,
    },
    /// Release the emergency brake (what Git or the guards impose stays in force).
    Resume {
        bot: String,
        #[command(flatten)]
        why: RequiredWhy,
    },
    /// Acknowledge a latched guard trip (every trip, one after the other, without TRIP).
    Ack {
        bot: String,
        trip: Option<String>,
        #[command(flatten)]
        why: Why,
    },
    /// Ask the running bot to close its own positions with reduce-only orders.
    Flatten {
        bot: String,
        /// The request id (each id is acted on once); default: a new one.
        #[arg(long)]
        request_id: Option<String>,
        #[command(flatten)]
        why: Why,
    },
    /// Let the rollout go on: approve the canary's version, end a pause, accept an inconclusive analysis.
    Promote {
        bot: String,
        /// Promote now, skipping the remaining gates (cycles, duration, analysis) of a ready canary.
        #[arg(long)]
        full: bool,
        #[command(flatten)]
        why: Why,
    },
    /// Stop the canary (prod keeps its version); during promotion or the bake, roll prod back.
    Abort {
        bot: String,
        #[command(flatten)]
        why: Why,
    },
    /// Start the aborted or rolled back version again, without changing spec.image.
    Retry {
        bot: String,
        #[command(flatten)]
        why: Why,
    },
    /// Hold the canary where it is (it keeps running; gates and the progress deadline wait).
    Pause {
        bot: String,
        #[command(flatten)]
        why: Why,
    },
    /// Resume a paused rollout (an inconclusive analysis is measured again).
    Unpause {
        bot: String,
        #[command(flatten)]
        why: Why,
    },
    /// Roll prod back to the version before the current one, or to a revision of `history`.
    Undo {
        bot: String,
        #[arg(long, value_name = "REVISION")]
        to_revision: Option<u32>,
        #[command(flatten)]
        why: Why,
    },
    /// The bot's rollouts (revisions) and its audit trail: who did what, when and why.
    History { bot: String },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent_and_brakes_need_a_reason() {
        Cli::command().debug_assert();
        assert!(Cli::try_parse_from(["kubectl-tradingbot", "halt", "btc"]).is_err());
        let cli =
            Cli::try_parse_from(["kubectl-tradingbot", "halt", "btc", "--reason", "incident 4", "-n", "t"]).unwrap();
        assert_eq!(cli.namespace.as_deref(), Some("t"));
        assert!(
            matches!(cli.command, Command::Halt { ref bot, ref why } if bot == "btc" && why.reason == "incident 4")
        );
        let cli = Cli::try_parse_from(["kubectl-tradingbot", "-n", "t", "undo", "btc", "--to-revision", "3"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Undo {
                to_revision: Some(3),
                ..
            }
        ));
        let cli = Cli::try_parse_from(["kubectl-tradingbot", "get", "-Aw"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Get {
                all_namespaces: true,
                watch: true,
                ..
            }
        ));
    }
}
