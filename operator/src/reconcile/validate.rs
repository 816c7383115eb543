//! Semantic validation: the rules the CRD schema cannot express (cross-field rules, name
//! lengths, reserved environment variables). Pure. A spec with problems is reported as
//! Degraded and the operator changes nothing until the spec changes.

use tradingbot_crds::guards::GuardKind;
use tradingbot_crds::names::{self, env};
use tradingbot_crds::spec::SYMBOL_PATTERN;
use tradingbot_crds::{Profile, TradingBotSpec};

/// One thing wrong with a spec: the field and the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

fn problem(field: impl Into<String>, message: impl Into<String>) -> Problem {
    Problem {
        field: field.into(),
        message: message.into(),
    }
}

/// Words that mark an environment variable as a credential.
const SECRET_WORDS: [&str; 5] = ["KEY", "SECRET", "TOKEN", "PASSWORD", "PASSPHRASE"];

fn symbol_ok(symbol: &str) -> bool {
    let mut parts = symbol.split('-');
    let ok = |p: Option<&str>| {
        p.is_some_and(|p| {
            (2..=12).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        })
    };
    ok(parts.next()) && ok(parts.next()) && parts.next().is_none()
}

/// Every problem with `spec` for a TradingBot named `name`.
pub fn validate(name: &str, spec: &TradingBotSpec) -> Vec<Problem> {
    let mut problems = Vec::new();
    if let Err(message) = names::check_bot_name(name) {
        problems.push(problem("metadata.name", message));
    }
    if spec.exchange.derivatives && spec.profile.is_spot_only() {
        problems.push(problem(
            "spec.exchange.derivatives",
            format!(
                "derivatives cannot be enabled with the spot-only profile {}",
                spec.profile
            ),
        ));
    }
    if spec.account.is_some() {
        for (field, secret) in [
            ("spec.exchange.credentialsSecret", &spec.exchange.credentials_secret),
            (
                "spec.rollout.canary.credentialsSecret",
                &spec.rollout.canary.credentials_secret,
            ),
        ] {
            if secret.is_some() {
                problems.push(problem(
                    field,
                    "cannot be set together with spec.account: a bot on a TradingAccount trades with the account's credentials",
                ));
            }
        }
    }
    let dry_run = spec.dry_run.unwrap_or(spec.profile == Profile::Dev);
    let has_credentials = spec.exchange.credentials_secret.is_some() || spec.account.is_some();
    if spec.profile.needs_exchange() && !has_credentials && !dry_run {
        problems.push(problem(
            "spec.exchange.credentialsSecret",
            format!(
                "profile {} trades on the exchange: name a Secret with the CDP key (or a TradingAccount in spec.account), or set dryRun: true",
                spec.profile
            ),
        ));
    }
    for guard in GuardKind::ALL {
        let levels = spec.guards.levels(guard);
        if let (Some(reduce), Some(halt)) = (levels.reduce_only_at, levels.halt_at)
            && reduce > halt
        {
            problems.push(problem(
                format!("spec.guards.{guard}"),
                format!("reduceOnlyAt ({reduce}) must not be above haltAt ({halt}): ReduceOnly comes before Halted"),
            ));
        }
    }
    for symbol in spec.guards.max_notional_per_symbol.keys() {
        if !symbol_ok(symbol) {
            problems.push(problem(
                format!("spec.guards.maxNotionalPerSymbol.{symbol}"),
                format!("keys must be product ids matching {SYMBOL_PATTERN}"),
            ));
        }
    }
    for var in &spec.env {
        let field = format!("spec.env[{}]", var.name);
        if env::RESERVED.contains(&var.name.as_str()) {
            problems.push(problem(&field, "is set by the operator and cannot be overridden"));
        }
        let upper = var.name.to_ascii_uppercase();
        if var.value.as_ref().is_some_and(|v| !v.is_empty()) && SECRET_WORDS.iter().any(|w| upper.contains(w)) {
            problems.push(problem(
                &field,
                "looks like a credential given inline: use exchange.credentialsSecret (or valueFrom.secretKeyRef)",
            ));
        }
    }
    if spec
        .resources
        .as_ref()
        .is_some_and(|r| r.claims.as_ref().is_some_and(|c| !c.is_empty()))
    {
        problems.push(problem("spec.resources.claims", "resource claims are not supported"));
    }
    if spec.metrics.scrape_interval_seconds > spec.metrics.unreachable_after_seconds {
        problems.push(problem(
            "spec.metrics.unreachableAfterSeconds",
            "must be at least scrapeIntervalSeconds (a bot cannot be unreachable between two scrapes)",
        ));
    }
    problems.extend(analysis_problems(spec));
    problems
}

/// The rules of `spec.rollout.analysis` the schema cannot express.
fn analysis_problems(spec: &TradingBotSpec) -> Vec<Problem> {
    let Some(analysis) = spec.rollout.analysis.as_ref() else {
        return Vec::new();
    };
    let mut problems = Vec::new();
    let mut seen = Vec::new();
    for metric in &analysis.metrics {
        let field = format!("spec.rollout.analysis.metrics[{}]", metric.name);
        if let Some(gray) = metric.inconclusive_above
            && gray > metric.max
        {
            problems.push(problem(
                &field,
                format!(
                    "inconclusiveAbove ({gray}) must not be above max ({}): above max a measurement fails",
                    metric.max
                ),
            ));
        }
        if seen.contains(&metric.name) {
            problems.push(problem(&field, "each metric may appear only once"));
        }
        seen.push(metric.name);
    }
    if let Some(deadline) = spec.rollout.progress_deadline_seconds
        && deadline <= analysis.interval_seconds
    {
        problems.push(problem(
            "spec.rollout.progressDeadlineSeconds",
            format!(
                "must be longer than analysis.intervalSeconds ({}): a canary between two measurements would miss it",
                analysis.interval_seconds
            ),
        ));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::EnvVar;

    fn spec(profile: Profile) -> TradingBotSpec {
        TradingBotSpec::for_profile(profile)
    }

    fn fields(problems: Vec<Problem>) -> Vec<String> {
        problems.into_iter().map(|p| p.field).collect()
    }

    #[test]
    fn an_account_bot_takes_its_credentials_from_the_account_only() {
        let mut s = spec(Profile::Prod);
        s.account = Some(tradingbot_crds::account::AccountRef {
            name: "main".into(),
            namespace: None,
        });
        assert!(validate("btc", &s).is_empty(), "the account's credentials count");
        s.exchange.credentials_secret = Some("own".into());
        s.rollout.canary.credentials_secret = Some("canary".into());
        let problems = validate("btc", &s);
        assert_eq!(
            fields(problems.clone()),
            [
                "spec.exchange.credentialsSecret",
                "spec.rollout.canary.credentialsSecret"
            ]
        );
        assert!(problems[0].message.contains("spec.account"));
    }

    #[test]
    fn a_plain_dev_bot_is_valid() {
        assert!(validate("btc", &spec(Profile::Dev)).is_empty());
    }

    #[test]
    fn derivatives_need_a_derivatives_profile() {
        let mut s = spec(Profile::Spot);
        s.exchange.derivatives = true;
        s.exchange.credentials_secret = Some("k".into());
        assert_eq!(fields(validate("btc", &s)), ["spec.exchange.derivatives"]);
        s.profile = Profile::Prod;
        assert!(validate("btc", &s).is_empty());
    }

    #[test]
    fn live_profiles_need_credentials_unless_dry_run() {
        assert_eq!(
            fields(validate("btc", &spec(Profile::Prod))),
            ["spec.exchange.credentialsSecret"]
        );
        assert_eq!(fields(validate("Btc", &spec(Profile::Dev))), ["metadata.name"]);
        let mut s = spec(Profile::Prod);
        s.dry_run = Some(true);
        assert!(validate("btc", &s).is_empty());
    }

    #[test]
    fn levels_must_be_ordered_and_symbols_valid() {
        let mut s = spec(Profile::Dev);
        s.guards.daily_loss = Some(tradingbot_crds::spec::Levels {
            reduce_only_at: Some("600".parse().unwrap()),
            halt_at: Some("500".parse().unwrap()),
        });
        s.guards
            .max_notional_per_symbol
            .insert("btc".into(), "1".parse().unwrap());
        assert_eq!(
            fields(validate("btc", &s)),
            ["spec.guards.dailyLoss", "spec.guards.maxNotionalPerSymbol.btc"]
        );
    }

    #[test]
    fn analysis_thresholds_are_ordered_metrics_unique_and_the_deadline_longer_than_an_interval() {
        use tradingbot_crds::progressive::{AnalysisMetric, AnalysisMetricName, AnalysisSpec, Comparison};
        let metric = |max: &str, gray: Option<&str>| AnalysisMetric {
            name: AnalysisMetricName::CycleErrors,
            max: max.parse().unwrap(),
            inconclusive_above: gray.map(|g| g.parse().unwrap()),
            comparison: Comparison::Absolute,
        };
        let mut s = spec(Profile::Dev);
        s.rollout.analysis = Some(AnalysisSpec {
            interval_seconds: 60,
            count: 3,
            failure_limit: 0,
            inconclusive_limit: 0,
            metrics: vec![metric("1", Some("2")), metric("1", None)],
        });
        s.rollout.progress_deadline_seconds = Some(60);
        let problems = validate("btc", &s);
        assert_eq!(
            fields(problems.clone()),
            [
                "spec.rollout.analysis.metrics[CycleErrors]",
                "spec.rollout.analysis.metrics[CycleErrors]",
                "spec.rollout.progressDeadlineSeconds"
            ]
        );
        assert!(problems[0].message.contains("must not be above max"));
        assert!(problems[1].message.contains("only once"));
    }

    #[test]
    fn reserved_and_secret_looking_env_vars_are_refused() {
        let mut s = spec(Profile::Dev);
        s.env = vec![
            EnvVar {
                name: "TRADINGBOT_NAME".into(),
                value: Some("x".into()),
                value_from: None,
            },
            EnvVar {
                name: "COINBASE_CDP_PRIVATE_KEY".into(),
                value: Some("-----BEGIN".into()),
                value_from: None,
            },
            EnvVar {
                name: "RUST_LOG".into(),
                value: Some("debug".into()),
                value_from: None,
            },
        ];
        let problems = validate("btc", &s);
        assert_eq!(
            fields(problems.clone()),
            ["spec.env[TRADINGBOT_NAME]", "spec.env[COINBASE_CDP_PRIVATE_KEY]"]
        );
        assert!(
            !problems.iter().any(|p| p.message.contains("BEGIN")),
            "a problem never echoes the value"
        );
    }
}
