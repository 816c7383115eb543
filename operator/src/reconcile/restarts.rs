//! The fleet's restart budget: a bot pod replaced for the operator's sake (its template changed
//! while its TradingBot did not: an operator upgrade, a chart value) waits until fewer than
//! `max` bot pods are restarting or not yet ready, so an operator-side change rolls across the
//! fleet a few bots at a time, each waiting for the previous ones to be Ready. Restarts a user
//! asked for (a changed TradingBot) are never held back.

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::runtime::reflector::Store;
use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tradingbot_crds::names;

/// One bot instance: (namespace, bot, instance).
pub type InstanceKey = (String, String, String);

pub struct RestartBudget {
    max: usize,
    /// A restart whose pod is not Ready after this long stops counting (it is reported on its
    /// bot instead of holding up the fleet forever).
    ready_timeout: Duration,
    started: Mutex<HashMap<InstanceKey, Instant>>,
}

impl RestartBudget {
    pub fn new(max: usize, ready_timeout: Duration) -> Self {
        Self {
            max: max.max(1),
            ready_timeout,
            started: Mutex::new(HashMap::new()),
        }
    }

    /// May `key` start an operator-side restart at `now`? If so it counts until
    /// [`Self::finish`]. `busy` are the instances whose pods are stopping or not ready yet.
    /// `Err` carries how many are restarting.
    pub fn try_begin(&self, key: &InstanceKey, busy: BTreeSet<InstanceKey>, now: Instant) -> Result<(), usize> {
        let mut started = self.started.lock().unwrap_or_else(|p| p.into_inner());
        let timeout = self.ready_timeout;
        started.retain(|_, at| now.saturating_duration_since(*at) < timeout);
        let mut restarting: BTreeSet<InstanceKey> = busy;
        restarting.extend(started.keys().cloned());
        restarting.remove(key);
        if restarting.len() >= self.max {
            return Err(restarting.len());
        }
        started.entry(key.clone()).or_insert(now);
        Ok(())
    }

    /// `key`'s pod is up to date and Ready: its restart is over.
    pub fn finish(&self, key: &InstanceKey) {
        self.started.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }

    pub fn ready_timeout(&self) -> Duration {
        self.ready_timeout
    }
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Bot instances whose pods are stopping, or started less than `young` ago and not Ready.
pub fn busy_instances(pods: &Store<Pod>, young: Duration) -> BTreeSet<InstanceKey> {
    let now = k8s_openapi::jiff::Timestamp::now();
    pods.state()
        .iter()
        .filter(|pod| {
            let age = pod
                .metadata
                .creation_timestamp
                .as_ref()
                .map_or(0, |t| now.as_second().saturating_sub(t.0.as_second()));
            pod.metadata.deletion_timestamp.is_some() || (!is_ready(pod) && (age as u64) < young.as_secs())
        })
        .filter_map(|pod| {
            let labels = pod.labels();
            Some((
                pod.namespace()?,
                labels.get(names::LABEL_BOT)?.clone(),
                labels.get(names::LABEL_INSTANCE)?.clone(),
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(bot: &str) -> InstanceKey {
        ("ns".into(), bot.into(), "prod".into())
    }

    #[test]
    fn restarts_wait_for_a_slot_and_free_it_when_ready() {
        let now = Instant::now();
        let budget = RestartBudget::new(1, Duration::from_secs(600));
        assert_eq!(budget.try_begin(&key("a"), BTreeSet::new(), now), Ok(()));
        assert_eq!(
            budget.try_begin(&key("b"), BTreeSet::new(), now),
            Err(1),
            "a is still restarting"
        );
        // Asking again for the one in flight is fine (it holds the slot).
        assert_eq!(budget.try_begin(&key("a"), BTreeSet::new(), now), Ok(()));
        budget.finish(&key("a"));
        assert_eq!(budget.try_begin(&key("b"), BTreeSet::new(), now), Ok(()));
    }

    #[test]
    fn pods_seen_restarting_count_even_if_another_process_started_them() {
        let now = Instant::now();
        let budget = RestartBudget::new(2, Duration::from_secs(600));
        let busy = BTreeSet::from([key("x"), key("y")]);
        assert_eq!(budget.try_begin(&key("a"), busy.clone(), now), Err(2));
        assert_eq!(
            budget.try_begin(&key("x"), busy, now),
            Ok(()),
            "x itself is not in its own way"
        );
    }

    #[test]
    fn a_restart_that_never_gets_ready_stops_counting_after_the_timeout() {
        let now = Instant::now();
        let budget = RestartBudget::new(1, Duration::from_secs(600));
        assert_eq!(budget.try_begin(&key("a"), BTreeSet::new(), now), Ok(()));
        let later = now + Duration::from_secs(601);
        assert_eq!(budget.try_begin(&key("b"), BTreeSet::new(), later), Ok(()));
    }
}
