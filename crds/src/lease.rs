//! A coordination.k8s.io Lease held by one identity at a time.
//!
//! Used twice with the same rules: a bot holds the Lease of its identity and trades only while
//! it holds it (fencing, so two instances of one bot never trade at once), and the operator's
//! replicas hold a Lease to elect the one that reconciles.
//!
//! Safety rests on the holder's own monotonic clock: a holder considers the Lease its own
//! only until `renewed_at + duration - margin`, measured from *before* the renewing request was
//! sent. Another candidate takes over only after `renewTime + duration` has passed by *its* wall
//! clock, comparing against the `renewTime` the holder wrote with *its* wall clock. The two
//! windows never overlap as long as the candidates' wall clocks differ by less than `margin`
//! (3 s) and tick at the same rate: keep nodes NTP-synchronised (on one node this holds
//! trivially).

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};
use std::time::{Duration, Instant};
use tokio::sync::watch;

#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    /// Unique per process: a restarted process is a new holder.
    pub holder: String,
    pub duration: Duration,
    pub renew_every: Duration,
    /// How long before expiry the holder stops relying on the Lease.
    pub margin: Duration,
}

impl LeaseConfig {
    pub fn new(name: impl Into<String>, namespace: impl Into<String>, holder: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            namespace: namespace.into(),
            holder: holder.into(),
            duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(3),
            margin: Duration::from_secs(3),
        }
    }
}

/// What a candidate should do about the Lease as it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseAction {
    /// Nobody holds it (absent, released or expired): take it.
    Acquire,
    /// We hold it: renew it.
    Renew,
    /// Someone else holds it until about this time.
    Wait { holder: String, expires: Timestamp },
}

/// Pure decision: what `me` should do with `lease` at `now`.
pub fn decide(lease: Option<&Lease>, me: &str, now: Timestamp) -> LeaseAction {
    let Some(spec) = lease.and_then(|l| l.spec.as_ref()) else {
        return LeaseAction::Acquire;
    };
    let holder = spec.holder_identity.as_deref().unwrap_or_default();
    if holder.is_empty() {
        return LeaseAction::Acquire;
    }
    if holder == me {
        return LeaseAction::Renew;
    }
    let renewed = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .map(|t| t.0)
        .unwrap_or(Timestamp::UNIX_EPOCH);
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(15).max(1)));
    let expires = renewed.checked_add(duration).unwrap_or(Timestamp::MAX);
    if now >= expires {
        LeaseAction::Acquire
    } else {
        LeaseAction::Wait {
            holder: holder.to_string(),
            expires,
        }
    }
}

/// What the holder process knows about its Lease.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LeaseState {
    /// The Lease is ours until this instant (monotonic clock), margin already deducted.
    pub valid_until: Option<Instant>,
    /// Who holds it, as last seen (for logs and metrics).
    pub holder: Option<String>,
}

impl LeaseState {
    pub fn is_held(&self) -> bool {
        self.valid_until.is_some_and(|until| Instant::now() < until)
    }
}

/// Keeps trying to hold a Lease; publishes what it knows on a watch channel.
pub struct LeaseHolder {
    api: Api<Lease>,
    config: LeaseConfig,
    state: watch::Sender<LeaseState>,
    transitions: i32,
}

impl LeaseHolder {
    pub fn new(client: kube::Client, config: LeaseConfig) -> (Self, watch::Receiver<LeaseState>) {
        let (state, rx) = watch::channel(LeaseState::default());
        let api = Api::namespaced(client, &config.namespace);
        (
            Self {
                api,
                config,
                state,
                transitions: 0,
            },
            rx,
        )
    }

    /// Try once: acquire or renew if allowed. Returns the new state.
    pub async fn try_once(&mut self) -> Result<LeaseState, kube::Error> {
        let started = Instant::now();
        let now = Timestamp::now();
        let current = self.api.get_opt(&self.config.name).await?;
        let action = decide(current.as_ref(), &self.config.holder, now);
        let state = match action {
            LeaseAction::Wait { holder, .. } => LeaseState {
                valid_until: None,
                holder: Some(holder),
            },
            LeaseAction::Acquire | LeaseAction::Renew => {
                let acquiring = action == LeaseAction::Acquire;
                match self.write(current, acquiring, now).await {
                    Ok(()) => LeaseState {
                        valid_until: Some(started + self.config.duration.saturating_sub(self.config.margin)),
                        holder: Some(self.config.holder.clone()),
                    },
                    // Somebody else wrote first: we do not hold it.
                    Err(kube::Error::Api(e)) if e.code == 409 => LeaseState {
                        valid_until: None,
                        holder: None,
                    },
                    Err(e) => return Err(e),
                }
            }
        };
        self.state.send_replace(state.clone());
        Ok(state)
    }

    async fn write(&mut self, current: Option<Lease>, acquiring: bool, now: Timestamp) -> Result<(), kube::Error> {
        let seconds = i32::try_from(self.config.duration.as_secs()).unwrap_or(15);
        match current {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.config.name.clone()),
                        ..Default::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.config.holder.clone()),
                        lease_duration_seconds: Some(seconds),
                        acquire_time: Some(MicroTime(now)),
                        renew_time: Some(MicroTime(now)),
                        lease_transitions: Some(0),
                        ..Default::default()
                    }),
                };
                self.api.create(&PostParams::default(), &lease).await?;
            }
            Some(mut lease) => {
                // Replace carries the resourceVersion we read: a concurrent writer makes it 409.
                let spec = lease.spec.get_or_insert_with(Default::default);
                if acquiring {
                    self.transitions = spec.lease_transitions.unwrap_or(0).saturating_add(1);
                    spec.lease_transitions = Some(self.transitions);
                    spec.acquire_time = Some(MicroTime(now));
                }
                spec.holder_identity = Some(self.config.holder.clone());
                spec.lease_duration_seconds = Some(seconds);
                spec.renew_time = Some(MicroTime(now));
                self.api
                    .replace(&self.config.name, &PostParams::default(), &lease)
                    .await?;
            }
        }
        Ok(())
    }

    /// Hold the Lease until `stop` fires, then release it if it is ours.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        loop {
            let wait = match self.try_once().await {
                Ok(state) if state.is_held() => self.config.renew_every,
                Ok(_) => Duration::from_secs(1),
                Err(error) => {
                    tracing::warn!(lease = %self.config.name, %error, "lease request failed");
                    // Keep what we had: `valid_until` expires on its own if renewals keep failing.
                    Duration::from_secs(1)
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => break,
            }
            if *stop.borrow() {
                break;
            }
        }
        self.release().await;
    }

    /// Give the Lease up so a successor need not wait for it to expire.
    pub async fn release(&mut self) {
        self.state.send_replace(LeaseState::default());
        let Ok(Some(mut lease)) = self.api.get_opt(&self.config.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else { return };
        if spec.holder_identity.as_deref() != Some(self.config.holder.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => tracing::info!(lease = %self.config.name, "lease released"),
            Err(error) => tracing::warn!(lease = %self.config.name, %error, "lease release failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: Option<&str>, renewed: Timestamp, seconds: i32) -> Lease {
        Lease {
            metadata: ObjectMeta::default(),
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_string),
                renew_time: Some(MicroTime(renewed)),
                lease_duration_seconds: Some(seconds),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn absent_released_or_expired_leases_can_be_acquired() {
        let now = Timestamp::from_second(1_000).unwrap();
        assert_eq!(decide(None, "me", now), LeaseAction::Acquire);
        assert_eq!(decide(Some(&lease(None, now, 15)), "me", now), LeaseAction::Acquire);
        let old = Timestamp::from_second(985).unwrap();
        assert_eq!(
            decide(Some(&lease(Some("other"), old, 15)), "me", now),
            LeaseAction::Acquire
        );
    }

    #[test]
    fn a_live_lease_of_someone_else_means_wait() {
        let now = Timestamp::from_second(1_000).unwrap();
        let renewed = Timestamp::from_second(990).unwrap();
        assert_eq!(
            decide(Some(&lease(Some("other"), renewed, 15)), "me", now),
            LeaseAction::Wait {
                holder: "other".into(),
                expires: Timestamp::from_second(1_005).unwrap()
            }
        );
        assert_eq!(
            decide(Some(&lease(Some("me"), renewed, 15)), "me", now),
            LeaseAction::Renew
        );
    }

    #[test]
    fn holding_expires_by_itself_on_the_local_clock() {
        let state = LeaseState {
            valid_until: Some(Instant::now()),
            holder: Some("me".into()),
        };
        assert!(!state.is_held());
        let later = LeaseState {
            valid_until: Some(Instant::now() + Duration::from_secs(5)),
            holder: None,
        };
        assert!(later.is_held());
        assert!(!LeaseState::default().is_held());
    }
}
