//! Kubernetes Events (events.k8s.io/v1) for decisions a human wants to see. Every call creates
//! a new Event: two different trips of the same guard are two events, never a merged series.

use crate::reconcile::notice::Notice;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::{Client, Resource};

pub const REPORTING_CONTROLLER: &str = "trading.gpttrader.io/tradingbot-operator";

#[derive(Clone)]
pub struct EventPublisher {
    client: Client,
    instance: String,
}

impl EventPublisher {
    pub fn new(client: Client, instance: String) -> Self {
        Self { client, instance }
    }

    /// Publish `notice` about `object` (a TradingBot or a TradingAccount) and log it. Failures
    /// are logged, never fatal.
    pub async fn publish<K: Resource<DynamicType = ()>>(&self, object: &K, notice: &Notice) {
        let name = object.meta().name.clone().unwrap_or_default();
        let namespace = object.meta().namespace.clone().unwrap_or_else(|| "default".into());
        let kind = K::kind(&());
        if notice.warning {
            tracing::warn!(%kind, tradingbot = %name, namespace = %namespace, reason = notice.reason.as_str(), "{}", notice.note);
        } else {
            tracing::info!(%kind, tradingbot = %name, namespace = %namespace, reason = notice.reason.as_str(), "{}", notice.note);
        }
        let now = Timestamp::now();
        let regarding: ObjectReference = object.object_ref(&());
        let suffix: u32 = rand::random();
        let event = Event {
            metadata: ObjectMeta {
                name: Some(format!("{name}.{:x}{suffix:08x}", now.as_microsecond())),
                namespace: Some(namespace.clone()),
                ..Default::default()
            },
            event_time: Some(MicroTime(now)),
            type_: Some(if notice.warning { "Warning" } else { "Normal" }.into()),
            reason: Some(notice.reason.as_str().into()),
            action: Some(notice.reason.action().into()),
            note: Some(truncate(&notice.note, 1000)),
            regarding: Some(regarding),
            reporting_controller: Some(REPORTING_CONTROLLER.into()),
            reporting_instance: Some(self.instance.clone()),
            ..Default::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        if let Err(error) = api.create(&PostParams::default(), &event).await {
            tracing::warn!(tradingbot = %name, namespace = %namespace, %error, "could not publish an event");
        }
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}
