//! The API server, as the plugin uses it: TradingBots (read, annotate, wait for the operator),
//! their Events, TradingAccounts where that API exists, and a bot pod's metrics through the API
//! server's pod proxy (so it works from a laptop, no port-forward).

use crate::error::{Failure, Result};
use k8s_openapi::api::core::v1::{Event, Namespace};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::{Client, Config, ResourceExt};
use serde_json::{Map, Value, json};
use std::time::{Duration, Instant};
use tradingbot_crds::TradingBot;

/// The field manager of every write the plugin makes (`metadata.managedFields`).
pub const FIELD_MANAGER: &str = "kubectl-tradingbot";

pub struct Cluster {
    pub client: Client,
    pub namespace: String,
}

impl Cluster {
    pub async fn connect(namespace: Option<String>) -> Result<Self> {
        let config = Config::infer()
            .await
            .map_err(|e| Failure::Cluster(format!("no cluster to talk to (kubeconfig or in-cluster): {e}")))?;
        let namespace = namespace.unwrap_or_else(|| config.default_namespace.clone());
        let client = Client::try_from(config).map_err(|e| Failure::Cluster(format!("cluster client: {e}")))?;
        Ok(Self { client, namespace })
    }

    pub fn bots(&self) -> Api<TradingBot> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    pub fn all_bots(&self) -> Api<TradingBot> {
        Api::all(self.client.clone())
    }

    /// Why `name` was not found: the namespace, the API or the bot.
    async fn not_found(&self, name: &str) -> Failure {
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        if let Err(kube::Error::Api(e)) = namespaces.get(&self.namespace).await
            && e.code == 404
        {
            return Failure::NotFound(format!("namespace {} does not exist", self.namespace));
        }
        if let Err(kube::Error::Api(e)) = self.bots().list(&ListParams::default().limit(1)).await
            && e.code == 404
        {
            return Failure::NotFound(
                "the TradingBot API (trading.gpttrader.io/v1alpha1) is not installed in this cluster".into(),
            );
        }
        Failure::NotFound(format!(
            "no TradingBot {name} in namespace {} (kubectl tradingbot get -n {} lists them)",
            self.namespace, self.namespace
        ))
    }

    pub async fn bot(&self, name: &str) -> Result<TradingBot> {
        match self.bots().get(name).await {
            Ok(bot) => Ok(bot),
            Err(kube::Error::Api(e)) if e.code == 404 => Err(self.not_found(name).await),
            Err(e) => Err(Failure::api(
                &format!("reading TradingBot {}/{name}", self.namespace),
                e,
            )),
        }
    }

    /// Merge `annotations` (a null value removes one) into the TradingBot's metadata.
    pub async fn annotate(&self, name: &str, annotations: Map<String, Value>) -> Result<TradingBot> {
        let patch = json!({"metadata": {"annotations": annotations}});
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        self.bots()
            .patch(name, &params, &Patch::Merge(&patch))
            .await
            .map_err(|e| Failure::api(&format!("annotating TradingBot {}/{name}", self.namespace), e))
    }

    /// Poll the TradingBot until `done` says it is, or `wait` passes (`what` names what was awaited).
    pub async fn wait_for<T>(
        &self,
        name: &str,
        wait: Duration,
        what: &str,
        mut done: impl FnMut(&TradingBot) -> Option<T>,
    ) -> Result<T> {
        let deadline = Instant::now() + wait;
        loop {
            let bot = self.bot(name).await?;
            if let Some(answer) = done(&bot) {
                return Ok(answer);
            }
            if Instant::now() >= deadline {
                return Err(Failure::TimedOut(format!(
                    "{what}: not confirmed within {} s (the request stays set; is the operator running? \
                     kubectl tradingbot status {name} shows where it is)",
                    wait.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// The Events about a TradingBot, oldest first.
    pub async fn events(&self, name: &str) -> Vec<Event> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), &self.namespace);
        let selector = format!("involvedObject.kind=TradingBot,involvedObject.name={name}");
        let mut events = api
            .list(&ListParams::default().fields(&selector))
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        events.sort_by_key(event_time);
        events
    }

    /// A pod's `/metrics` through the API server (`pods/proxy`).
    pub async fn pod_metrics(&self, pod: &str, port: u16) -> Result<String> {
        let path = format!("/api/v1/namespaces/{}/pods/{pod}:{port}/proxy/metrics", self.namespace);
        let request = http::Request::get(&path)
            .body(Vec::new())
            .map_err(|e| Failure::Cluster(format!("{path}: {e}")))?;
        self.client
            .request_text(request)
            .await
            .map_err(|e| Failure::api(&format!("metrics of pod {pod} through the API server"), e))
    }

    /// TradingAccounts in scope, when the cluster has that API (None: it has not).
    pub async fn accounts(&self, all_namespaces: bool) -> Option<Vec<DynamicObject>> {
        let gvk = GroupVersionKind::gvk(tradingbot_crds::names::GROUP, "v1alpha1", "TradingAccount");
        let resource = ApiResource::from_gvk_with_plural(&gvk, "tradingaccounts");
        let api: Api<DynamicObject> = if all_namespaces {
            Api::all_with(self.client.clone(), &resource)
        } else {
            Api::namespaced_with(self.client.clone(), &self.namespace, &resource)
        };
        api.list(&ListParams::default()).await.ok().map(|l| {
            let mut items = l.items;
            items.sort_by_key(|a| (a.namespace(), a.name_any()));
            items
        })
    }
}

/// When an Event happened (its newest time field).
pub fn event_time(event: &Event) -> String {
    event
        .event_time
        .as_ref()
        .map(|t| format!("{:.0}", t.0))
        .or_else(|| event.last_timestamp.as_ref().map(|t| format!("{:.0}", t.0)))
        .or_else(|| {
            event
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| format!("{:.0}", t.0))
        })
        .unwrap_or_default()
}
