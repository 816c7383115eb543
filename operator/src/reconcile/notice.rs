//! What the operator tells humans: one enum of Event reasons (each with its Event action), and
//! the [`Notice`] a decision produces. Decisions and tests compare reasons, never message text.

/// The reason of every Event the operator publishes (`kubectl get events`, `reason` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    // Guards, account limits and the trading mode.
    GuardTripped,
    LimitTripped,
    TripReleased,
    TripAcknowledged,
    AckRefused,
    ModeChanged,
    // Validation and the bot's own start-up.
    InvalidSpec,
    CredentialsRejected,
    Recovered,
    // Scraping.
    MetricsUnreachable,
    MetricsReachable,
    ServiceMonitorAPIMissing,
    // Children.
    Running,
    PodCreated,
    PodStopping,
    RestartDeferred,
    ChildWriteFailed,
    ChildOwnedByOther,
    // Deletion.
    Halting,
    HaltTimeout,
    Removed,
    // Rollouts.
    RolloutStarted,
    RolloutCancelled,
    VersionChanged,
    CanaryReady,
    CanaryPassed,
    AwaitingPromotion,
    Promoting,
    RolloutPromoted,
    RolloutAborted,
    // Analysis, bake and rollback.
    AnalysisPassed,
    AnalysisInconclusive,
    Baking,
    RollingBack,
    RolledBack,
    // Actions and the emergency brake.
    RolloutPaused,
    RolloutResumed,
    ActionAccepted,
    ActionRefused,
    BrakeSet,
    BrakeReleased,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::GuardTripped => "GuardTripped",
            Reason::LimitTripped => "LimitTripped",
            Reason::TripReleased => "TripReleased",
            Reason::TripAcknowledged => "TripAcknowledged",
            Reason::AckRefused => "AckRefused",
            Reason::ModeChanged => "ModeChanged",
            Reason::InvalidSpec => "InvalidSpec",
            Reason::CredentialsRejected => "CredentialsRejected",
            Reason::Recovered => "Recovered",
            Reason::MetricsUnreachable => "MetricsUnreachable",
            Reason::MetricsReachable => "MetricsReachable",
            Reason::ServiceMonitorAPIMissing => "ServiceMonitorAPIMissing",
            Reason::Running => "Running",
            Reason::PodCreated => "PodCreated",
            Reason::PodStopping => "PodStopping",
            Reason::RestartDeferred => "RestartDeferred",
            Reason::ChildWriteFailed => "ChildWriteFailed",
            Reason::ChildOwnedByOther => "ChildOwnedByOther",
            Reason::Halting => "Halting",
            Reason::HaltTimeout => "HaltTimeout",
            Reason::Removed => "Removed",
            Reason::RolloutStarted => "RolloutStarted",
            Reason::RolloutCancelled => "RolloutCancelled",
            Reason::VersionChanged => "VersionChanged",
            Reason::CanaryReady => "CanaryReady",
            Reason::CanaryPassed => "CanaryPassed",
            Reason::AwaitingPromotion => "AwaitingPromotion",
            Reason::Promoting => "Promoting",
            Reason::RolloutPromoted => "RolloutPromoted",
            Reason::RolloutAborted => "RolloutAborted",
            Reason::AnalysisPassed => "AnalysisPassed",
            Reason::AnalysisInconclusive => "AnalysisInconclusive",
            Reason::Baking => "Baking",
            Reason::RollingBack => "RollingBack",
            Reason::RolledBack => "RolledBack",
            Reason::RolloutPaused => "RolloutPaused",
            Reason::RolloutResumed => "RolloutResumed",
            Reason::ActionAccepted => "ActionAccepted",
            Reason::ActionRefused => "ActionRefused",
            Reason::BrakeSet => "BrakeSet",
            Reason::BrakeReleased => "BrakeReleased",
        }
    }

    /// The Event's `action`: what the operator was doing.
    pub fn action(self) -> &'static str {
        match self {
            Reason::GuardTripped | Reason::LimitTripped => "LatchTrip",
            Reason::TripReleased => "AutoResume",
            Reason::TripAcknowledged | Reason::AckRefused => "AcknowledgeTrip",
            Reason::ModeChanged => "SetMode",
            Reason::InvalidSpec | Reason::Recovered => "Validate",
            Reason::CredentialsRejected => "ObservePod",
            Reason::MetricsUnreachable | Reason::MetricsReachable => "Scrape",
            Reason::ServiceMonitorAPIMissing => "CreateServiceMonitor",
            Reason::Running => "Observe",
            Reason::PodCreated => "CreatePod",
            Reason::PodStopping | Reason::RestartDeferred => "ReplacePod",
            Reason::ChildWriteFailed | Reason::ChildOwnedByOther => "ApplyChild",
            Reason::Halting | Reason::HaltTimeout | Reason::Removed => "Delete",
            Reason::RolloutStarted
            | Reason::RolloutCancelled
            | Reason::VersionChanged
            | Reason::CanaryReady
            | Reason::CanaryPassed
            | Reason::AwaitingPromotion
            | Reason::Promoting
            | Reason::RolloutPromoted
            | Reason::RolloutAborted
            | Reason::AnalysisPassed
            | Reason::AnalysisInconclusive
            | Reason::Baking
            | Reason::RollingBack
            | Reason::RolledBack
            | Reason::RolloutPaused
            | Reason::RolloutResumed => "Rollout",
            Reason::ActionAccepted | Reason::ActionRefused => "RolloutAction",
            Reason::BrakeSet | Reason::BrakeReleased => "EmergencyBrake",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something a human would want to see as an Event (and a log line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub warning: bool,
    pub reason: Reason,
    pub note: String,
}

impl Notice {
    pub fn normal(reason: Reason, note: impl Into<String>) -> Self {
        Self {
            warning: false,
            reason,
            note: note.into(),
        }
    }

    pub fn warning(reason: Reason, note: impl Into<String>) -> Self {
        Self {
            warning: true,
            reason,
            note: note.into(),
        }
    }
}
