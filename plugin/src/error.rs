//! Failures, each with its documented exit code (see `cli::EXIT_CODES`).

use std::process::ExitCode;

#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("{0}")]
    Cluster(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    TimedOut(String),
}

impl Failure {
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            Failure::Cluster(_) => 1,
            Failure::NotFound(_) => 3,
            Failure::Refused(_) => 4,
            Failure::TimedOut(_) => 5,
        })
    }

    /// An API error, in words (the API server's message, never a credential).
    pub fn api(what: &str, error: kube::Error) -> Self {
        match error {
            kube::Error::Api(e) if e.code == 404 => Failure::NotFound(format!("{what}: {}", e.message)),
            kube::Error::Api(e) if e.code == 403 => Failure::Cluster(format!(
                "{what}: forbidden ({}); see docs/RUNBOOK.md for the rights kubectl tradingbot needs",
                e.message
            )),
            kube::Error::Api(e) => Failure::Cluster(format!("{what}: {} ({})", e.message, e.code)),
            other => Failure::Cluster(format!("{what}: {other}")),
        }
    }
}

pub type Result<T> = std::result::Result<T, Failure>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_failure_has_its_documented_code() {
        let codes: Vec<ExitCode> = [
            Failure::Cluster(String::new()),
            Failure::NotFound(String::new()),
            Failure::Refused(String::new()),
            Failure::TimedOut(String::new()),
        ]
        .iter()
        .map(Failure::exit_code)
        .collect();
        assert_eq!(
            codes,
            [
                ExitCode::from(1),
                ExitCode::from(3),
                ExitCode::from(4),
                ExitCode::from(5)
            ]
        );
        for code in ["  1  ", "  2  ", "  3  ", "  4  ", "  5  "] {
            assert!(crate::cli::EXIT_CODES.contains(code), "{code} documented");
        }
    }
}
