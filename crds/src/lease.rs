//! A coordination.k8s.io Lease held by one process at a time, handed to the rest of the code
//! as a [`Claim`]: code that may act only while it holds the Lease asks the claim, and never
//! sees the loop that keeps it.
//!
//! Used twice with the same rules: a bot holds the Lease of its identity and trades only while
//! it holds it (fencing, so two instances of one bot never trade at once), and the operator's
//! replicas hold a Lease to elect the one that reconciles.
//!
//! Safety rests on monotonic clocks alone, never on comparing wall clocks of two machines:
//! * the holder relies on the Lease only until `sent + duration - margin`, where `sent` is when
//!   it sent the write that succeeded, on its own monotonic clock;
//! * a candidate takes over only once it has seen one and the same Lease record (same
//!   `resourceVersion`) for a whole `leaseDurationSeconds` on *its* monotonic clock, timed from
//!   when the read that first returned the record came back, as client-go's leader election
//!   does. That record was written before the read returned and after the holder sent its
//!   write, so the candidate's wait always ends after the holder stopped relying on it.
//!
//! `renewTime` and `acquireTime` are written for humans only: a skewed wall clock (on either
//! side, by any amount) cannot produce two holders. What remains assumed is that monotonic
//! clocks tick at about the same rate (the `margin` covers drift of a few percent).
//!
//! A holder that is refused for its credentials (401/403: e.g. the bound token of a pod that
//! has been deleted) gives the Lease up at once instead of waiting for its reliance to expire.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    /// Unique per process: a restarted process is a new holder.
    pub holder: String,
    pub duration: Duration,
    pub renew_every: Duration,
    /// How long before its reliance would end the holder stops relying on the Lease.
    pub margin: Duration,
    /// Create the Lease when it does not exist (the operator's own leader Lease). Bots never
    /// create theirs: the operator does, owned by the TradingBot.
    pub create_if_missing: bool,
    /// Added to the wall clock for `renewTime` / `acquireTime`: a test-only knob that simulates
    /// a skewed node clock (decisions never read these fields).
    pub wall_clock_offset: SignedDuration,
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
            create_if_missing: false,
            wall_clock_offset: SignedDuration::ZERO,
        }
    }
}

/// What a candidate should do about the Lease as it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseAction {
    /// Nobody holds it (released, or its record has not changed for a whole lease duration).
    Acquire,
    /// We hold it: renew it.
    Renew,
    /// It does not exist and we may create it.
    Create,
    /// It does not exist and we may not create it (the operator will).
    Missing,
    /// Someone else holds it; it can be taken at the earliest after `remaining` more.
    Wait { holder: String, remaining: Duration },
}

/// What a candidate has seen of a Lease record, timed on its own monotonic clock.
#[derive(Debug, Clone, Default)]
pub struct Observer {
    seen: Option<(String, Instant)>,
}

impl Observer {
    /// Pure apart from remembering the record: what `me` should do with `lease` at `now`.
    pub fn decide(&mut self, lease: Option<&Lease>, me: &str, now: Instant, create_if_missing: bool) -> LeaseAction {
        let Some(lease) = lease else {
            self.seen = None;
            return if create_if_missing {
                LeaseAction::Create
            } else {
                LeaseAction::Missing
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.unwrap_or_default();
        if holder.is_empty() {
            return LeaseAction::Acquire;
        }
        if holder == me {
            return LeaseAction::Renew;
        }
        let version = lease.metadata.resource_version.clone().unwrap_or_default();
        let since = match &self.seen {
            Some((seen, since)) if *seen == version => *since,
            _ => {
                self.seen = Some((version, now));
                now
            }
        };
        let duration = Duration::from_secs(spec.lease_duration_seconds.unwrap_or(15).max(1) as u64);
        let unchanged_for = now.saturating_duration_since(since);
        if unchanged_for >= duration {
            LeaseAction::Acquire
        } else {
            LeaseAction::Wait {
                holder,
                remaining: duration - unchanged_for,
            }
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

/// The right to act that holding a Lease gives. Cheap to clone; always current.
#[derive(Debug, Clone)]
pub struct Claim {
    state: Option<watch::Receiver<LeaseState>>,
}

impl Claim {
    /// A claim that is always held: for a process that is not fenced by a Lease (a bot run by
    /// hand, an operator without leader election).
    pub fn unconditional() -> Self {
        Self { state: None }
    }

    /// A claim that follows `state` (for tests and [`LeaseHolder::spawn`]).
    pub fn following(state: watch::Receiver<LeaseState>) -> Self {
        Self { state: Some(state) }
    }

    pub fn is_fenced(&self) -> bool {
        self.state.is_some()
    }

    pub fn is_held(&self) -> bool {
        self.state.as_ref().is_none_or(|s| s.borrow().is_held())
    }

    /// How much longer the claim holds without another renewal (None when unconditional).
    pub fn time_left(&self) -> Option<Duration> {
        let state = self.state.as_ref()?;
        let until = state.borrow().valid_until;
        Some(until.map_or(Duration::ZERO, |u| u.saturating_duration_since(Instant::now())))
    }

    /// Who holds the Lease, as last seen.
    pub fn holder(&self) -> Option<String> {
        self.state.as_ref().and_then(|s| s.borrow().holder.clone())
    }

    /// Resolve once the claim is held (at once when unconditional); false if the holder is gone.
    pub async fn acquired(&mut self) -> bool {
        loop {
            if self.is_held() {
                return true;
            }
            if !self.changed_or_tick().await {
                return false;
            }
        }
    }

    /// Resolve once the claim is no longer held (never when unconditional).
    pub async fn lost(&mut self) {
        loop {
            if !self.is_held() {
                return;
            }
            if !self.changed_or_tick().await {
                return;
            }
        }
    }

    /// Wait for news, or at most until the current reliance would end (expiry sends nothing).
    /// False when the holder task is gone for good.
    async fn changed_or_tick(&mut self) -> bool {
        let Some(state) = self.state.as_mut() else {
            return std::future::pending().await;
        };
        let wait = state
            .borrow()
            .valid_until
            .map_or(Duration::from_secs(1), |u| u.saturating_duration_since(Instant::now()))
            .clamp(Duration::from_millis(10), Duration::from_secs(1));
        match tokio::time::timeout(wait, state.changed()).await {
            Ok(result) => result.is_ok(),
            Err(_) => true,
        }
    }
}

/// Keeps trying to hold a Lease and publishes what it knows. See [`LeaseHolder::spawn`].
pub struct LeaseHolder {
    api: Api<Lease>,
    config: LeaseConfig,
    observer: Observer,
    state: watch::Sender<LeaseState>,
}

/// The running holder: stop it (and release the Lease) with [`HolderHandle::release`].
pub struct HolderHandle {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl HolderHandle {
    /// Stop renewing and give the Lease up, so a successor need not wait for it to expire.
    /// Call only once nothing relies on the claim any more.
    pub async fn release(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }
}

fn is_auth_refusal(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(e) if e.code == 401 || e.code == 403)
}

impl LeaseHolder {
    pub fn new(client: kube::Client, config: LeaseConfig) -> (Self, Claim) {
        let (state, rx) = watch::channel(LeaseState::default());
        let api = Api::namespaced(client, &config.namespace);
        let holder = Self {
            api,
            config,
            observer: Observer::default(),
            state,
        };
        (holder, Claim::following(rx))
    }

    /// Start keeping the Lease in the background.
    pub fn spawn(client: kube::Client, config: LeaseConfig) -> (Claim, HolderHandle) {
        let (holder, claim) = Self::new(client, config);
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(holder.run(stop_rx));
        (claim, HolderHandle { stop, task })
    }

    fn wall_clock(&self) -> MicroTime {
        let now = Timestamp::now();
        MicroTime(now.checked_add(self.config.wall_clock_offset).unwrap_or(now))
    }

    fn publish(&self, state: LeaseState) -> LeaseState {
        self.state.send_replace(state.clone());
        state
    }

    /// Try once: acquire, create or renew if allowed. Returns the new state.
    pub async fn try_once(&mut self) -> Result<LeaseState, kube::Error> {
        let sent = Instant::now();
        let current = match self.api.get_opt(&self.config.name).await {
            Ok(current) => current,
            Err(error) if is_auth_refusal(&error) => {
                self.publish(LeaseState::default());
                return Err(error);
            }
            Err(error) => return Err(error),
        };
        // A record is timed from when its read returned (it was written before that), never
        // from before the read was sent: a slow read must not eat into the holder's margin.
        let read_returned = Instant::now();
        let action = self.observer.decide(
            current.as_ref(),
            &self.config.holder,
            read_returned,
            self.config.create_if_missing,
        );
        let write = match action {
            LeaseAction::Wait { holder, .. } => {
                return Ok(self.publish(LeaseState {
                    valid_until: None,
                    holder: Some(holder),
                }));
            }
            LeaseAction::Missing => return Ok(self.publish(LeaseState::default())),
            LeaseAction::Create => self.create().await,
            LeaseAction::Acquire | LeaseAction::Renew => {
                let lease = current.unwrap_or_default();
                self.replace(lease, action == LeaseAction::Acquire).await
            }
        };
        match write {
            Ok(()) => Ok(self.publish(LeaseState {
                valid_until: Some(sent + self.config.duration.saturating_sub(self.config.margin)),
                holder: Some(self.config.holder.clone()),
            })),
            // Somebody else wrote first: we do not hold it.
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(self.publish(LeaseState::default())),
            Err(error) if is_auth_refusal(&error) => {
                self.publish(LeaseState::default());
                Err(error)
            }
            Err(error) => Err(error),
        }
    }

    fn seconds(&self) -> i32 {
        i32::try_from(self.config.duration.as_secs()).unwrap_or(15)
    }

    async fn create(&self) -> Result<(), kube::Error> {
        let now = self.wall_clock();
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.config.name.clone()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.config.holder.clone()),
                lease_duration_seconds: Some(self.seconds()),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        self.api.create(&PostParams::default(), &lease).await.map(drop)
    }

    /// Replace carries the resourceVersion we read: a concurrent writer makes it 409.
    async fn replace(&self, mut lease: Lease, acquiring: bool) -> Result<(), kube::Error> {
        let now = self.wall_clock();
        let seconds = self.seconds();
        let spec = lease.spec.get_or_insert_with(Default::default);
        if acquiring {
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
            spec.acquire_time = Some(now.clone());
        }
        spec.holder_identity = Some(self.config.holder.clone());
        spec.lease_duration_seconds = Some(seconds);
        spec.renew_time = Some(now);
        self.api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
            .map(drop)
    }

    /// Hold the Lease until `stop` fires, then release it if it is ours.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        loop {
            let wait = match self.try_once().await {
                Ok(state) if state.is_held() => self.config.renew_every,
                Ok(_) => Duration::from_secs(1),
                Err(error) => {
                    tracing::warn!(lease = %self.config.name, %error, "lease request failed");
                    // Keep what we had (unless refused): `valid_until` expires by itself.
                    Duration::from_secs(1)
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => {}
            }
            if *stop.borrow() {
                break;
            }
        }
        self.release().await;
    }

    /// Give the Lease up so a successor need not wait for it to expire.
    pub async fn release(&mut self) {
        self.publish(LeaseState::default());
        let Ok(Some(mut lease)) = self.api.get_opt(&self.config.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else { return };
        if spec.holder_identity.as_deref() != Some(self.config.holder.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.renew_time = Some(self.wall_clock());
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

    fn lease(holder: Option<&str>, version: &str, renewed: Timestamp, seconds: i32) -> Lease {
        Lease {
            metadata: ObjectMeta {
                resource_version: Some(version.into()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_string),
                renew_time: Some(MicroTime(renewed)),
                lease_duration_seconds: Some(seconds),
                ..Default::default()
            }),
        }
    }

    fn at(start: Instant, seconds: u64) -> Instant {
        start + Duration::from_secs(seconds)
    }

    #[test]
    fn absent_or_released_leases() {
        let t = Instant::now();
        let mut o = Observer::default();
        assert_eq!(o.decide(None, "me", t, false), LeaseAction::Missing);
        assert_eq!(o.decide(None, "me", t, true), LeaseAction::Create);
        let released = lease(None, "1", Timestamp::UNIX_EPOCH, 15);
        assert_eq!(o.decide(Some(&released), "me", t, false), LeaseAction::Acquire);
        let mine = lease(Some("me"), "2", Timestamp::UNIX_EPOCH, 15);
        assert_eq!(o.decide(Some(&mine), "me", t, false), LeaseAction::Renew);
    }

    #[test]
    fn expiry_is_timed_on_the_candidates_own_clock_whatever_renew_time_says() {
        let t = Instant::now();
        // A renewTime far in the past (holder's clock 30 s behind, or ours 30 s ahead): the old
        // wall-clock rule would take over at once.
        let skewed_past = Timestamp::now() - SignedDuration::from_secs(30);
        let mut o = Observer::default();
        let held = lease(Some("other"), "7", skewed_past, 15);
        assert!(matches!(
            o.decide(Some(&held), "me", t, false),
            LeaseAction::Wait { remaining, .. } if remaining == Duration::from_secs(15)
        ));
        assert!(matches!(
            o.decide(Some(&held), "me", at(t, 14), false),
            LeaseAction::Wait { .. }
        ));
        // A renewal (new resourceVersion) restarts the wait, even with the same renewTime.
        let renewed = lease(Some("other"), "8", skewed_past, 15);
        assert!(matches!(
            o.decide(Some(&renewed), "me", at(t, 20), false),
            LeaseAction::Wait { .. }
        ));
        assert!(matches!(
            o.decide(Some(&renewed), "me", at(t, 34), false),
            LeaseAction::Wait { .. }
        ));
        assert_eq!(o.decide(Some(&renewed), "me", at(t, 35), false), LeaseAction::Acquire);
        // A renewTime far in the future does not extend anything either.
        let mut o = Observer::default();
        let future = lease(
            Some("other"),
            "9",
            Timestamp::now() + SignedDuration::from_secs(3600),
            15,
        );
        o.decide(Some(&future), "me", t, false);
        assert_eq!(o.decide(Some(&future), "me", at(t, 15), false), LeaseAction::Acquire);
    }

    /// Holder and candidate on one timeline with arbitrary wall-clock skew: the candidate never
    /// acquires while the holder still relies on the Lease.
    #[test]
    fn no_two_holders_for_any_skew_or_renewal_timing() {
        let start = Instant::now();
        let duration = Duration::from_secs(15);
        let margin = Duration::from_secs(3);
        for renew_every in [1u64, 3, 5, 11] {
            for last_renewal_at in [0u64, 7, 40] {
                // The holder renews every `renew_every` s until `last_renewal_at`, then dies.
                let mut version = 0;
                let mut relied_until = start;
                let mut o = Observer::default();
                for second in 0..200u64 {
                    let now = at(start, second);
                    if second <= last_renewal_at && second % renew_every == 0 {
                        version += 1;
                        relied_until = now + duration - margin;
                    }
                    let l = lease(Some("holder"), &version.to_string(), Timestamp::UNIX_EPOCH, 15);
                    if o.decide(Some(&l), "candidate", now, false) == LeaseAction::Acquire {
                        assert!(
                            now >= relied_until,
                            "renew every {renew_every} s, last at {last_renewal_at}: acquired at {second} s while the holder relied on it"
                        );
                        break;
                    }
                }
            }
        }
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

    #[tokio::test]
    async fn a_claim_reports_loss_when_its_reliance_runs_out() {
        let (tx, rx) = watch::channel(LeaseState {
            valid_until: Some(Instant::now() + Duration::from_millis(200)),
            holder: Some("me".into()),
        });
        let mut claim = Claim::following(rx);
        assert!(claim.is_held());
        tokio::time::timeout(Duration::from_secs(5), claim.lost())
            .await
            .expect("loss noticed without any message");
        assert!(!claim.is_held());
        tx.send_replace(LeaseState {
            valid_until: Some(Instant::now() + Duration::from_secs(60)),
            holder: Some("me".into()),
        });
        assert!(claim.acquired().await);
        assert!(Claim::unconditional().is_held());
    }
}
