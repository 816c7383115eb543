//! The children a TradingBot should have, built as plain objects. Pure: no I/O, so every
//! detail (security context, probes, env, owner references, RBAC rules) is unit-tested.

use super::observe::PerInstance;
use super::rollout::RolloutPlan;
use crate::cli::Settings;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapProjection, ConfigMapVolumeSource, Container, ContainerPort,
    DownwardAPIProjection, DownwardAPIVolumeFile, EmptyDirVolumeSource, EnvVar, EnvVarSource, HTTPGetAction, KeyToPath,
    ObjectFieldSelector, Pod, PodSecurityContext, PodSpec, Probe, ProjectedVolumeSource, ResourceRequirements,
    SeccompProfile, SecretVolumeSource, SecurityContext, Service, ServiceAccount, ServiceAccountTokenProjection,
    ServicePort, ServiceSpec, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use tradingbot_crds::managed_config::ManagedBotConfig;
use tradingbot_crds::names::{self, InstanceNames, env};
use tradingbot_crds::{Instance, TradingBot};

/// What differs between the prod and canary instance of a bot.
#[derive(Debug, Clone, PartialEq)]
pub struct InstancePlan {
    pub instance: Instance,
    pub image: String,
    pub config: ManagedBotConfig,
    pub credentials_secret: Option<String>,
}

impl InstancePlan {
    pub fn prod(bot: &TradingBot, image: String) -> Self {
        Self {
            instance: Instance::Prod,
            image,
            config: ManagedBotConfig::for_prod(&bot.spec),
            credentials_secret: bot.spec.exchange.credentials_secret.clone(),
        }
    }

    pub fn canary(bot: &TradingBot, image: String) -> Self {
        let canary = &bot.spec.rollout.canary;
        // A dry-run canary still reads market data with the prod key when it has no own key.
        let credentials_secret = canary
            .credentials_secret
            .clone()
            .or_else(|| bot.spec.exchange.credentials_secret.clone());
        Self {
            instance: Instance::Canary,
            image,
            config: ManagedBotConfig::for_canary(&bot.spec),
            credentials_secret,
        }
    }
}

/// The children of one instance (prod or canary).
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceChildren {
    pub lease: Lease,
    pub config_map: ConfigMap,
    pub service: Service,
    pub pod: Pod,
}

/// Every child a TradingBot should have right now.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredChildren {
    pub service_account: ServiceAccount,
    pub role: Role,
    pub role_binding: RoleBinding,
    /// The canary's is None when no canary should run (its children are then removed).
    pub instances: PerInstance<Option<InstanceChildren>>,
    /// Some when `metrics.serviceMonitor.enabled`.
    pub service_monitor: Option<DynamicObject>,
}

/// The children for `plan` (prod on its planned version; a canary when the plan has one).
/// `account_secret` is the credentials Secret of the bot's TradingAccount, if it has one.
pub fn children(
    bot: &TradingBot,
    plan: &RolloutPlan,
    settings: &Settings,
    account_secret: Option<String>,
) -> DesiredChildren {
    let instance = |mut plan: InstancePlan| {
        if account_secret.is_some() {
            plan.credentials_secret = account_secret.clone();
        }
        InstanceChildren {
            lease: lease(bot, plan.instance),
            config_map: config_map(bot, &plan),
            service: service(bot, plan.instance),
            pod: pod(bot, &plan, settings),
        }
    };
    DesiredChildren {
        service_account: service_account(bot),
        role: role(bot),
        role_binding: role_binding(bot),
        instances: PerInstance {
            prod: Some(instance(InstancePlan::prod(bot, plan.prod_version.clone()))),
            canary: plan
                .canary_version
                .clone()
                .map(|version| instance(InstancePlan::canary(bot, version))),
        },
        service_monitor: bot.spec.metrics.service_monitor.enabled.then(|| service_monitor(bot)),
    }
}

/// A short, stable hash of any serialisable value.
pub fn content_hash(value: &impl Serialize) -> String {
    let bytes = serde_json::to_vec(value).expect("children always serialise");
    hex::encode(&Sha256::digest(bytes)[..8])
}

pub fn owner_reference(bot: &TradingBot) -> OwnerReference {
    bot.controller_owner_ref(&())
        .expect("a stored TradingBot has a name and uid")
}

pub fn labels(bot: &str, instance: Option<Instance>) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        (names::LABEL_BOT.to_string(), bot.to_string()),
        (names::LABEL_MANAGED_BY.to_string(), names::MANAGED_BY.to_string()),
        (names::LABEL_APP_NAME.to_string(), names::APP_NAME.to_string()),
    ]);
    if let Some(instance) = instance {
        labels.insert(names::LABEL_INSTANCE.to_string(), instance.to_string());
    }
    labels
}

fn meta(bot: &TradingBot, name: String, instance: Option<Instance>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: bot.metadata.namespace.clone(),
        labels: Some(labels(&bot.metadata.name.clone().unwrap_or_default(), instance)),
        owner_references: Some(vec![owner_reference(bot)]),
        ..Default::default()
    }
}

/// Stamp `object`'s metadata with the hash of its content (for "unchanged: skip the write").
pub fn with_desired_hash<T: Serialize + Resource>(mut object: T) -> T {
    let hash = content_hash(&object);
    object
        .meta_mut()
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(names::ANNOTATION_DESIRED_HASH.into(), hash);
    object
}

fn bot_name(bot: &TradingBot) -> String {
    bot.metadata.name.clone().unwrap_or_default()
}

pub fn config_map(bot: &TradingBot, plan: &InstancePlan) -> ConfigMap {
    let names = InstanceNames::new(&bot_name(bot), plan.instance);
    with_desired_hash(ConfigMap {
        metadata: meta(bot, names.config_map, Some(plan.instance)),
        data: Some(BTreeMap::from([(
            names::CONFIG_FILE_NAME.to_string(),
            plan.config.to_yaml(),
        )])),
        ..Default::default()
    })
}

pub fn service(bot: &TradingBot, instance: Instance) -> Service {
    let names = InstanceNames::new(&bot_name(bot), instance);
    let port = i32::from(bot.spec.metrics.port);
    with_desired_hash(Service {
        metadata: meta(bot, names.service, Some(instance)),
        spec: Some(ServiceSpec {
            selector: Some(labels(&bot_name(bot), Some(instance))),
            ports: Some(vec![ServicePort {
                name: Some(names::METRICS_PORT_NAME.into()),
                port,
                target_port: Some(IntOrString::String(names::METRICS_PORT_NAME.into())),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// The ServiceMonitor API (monitoring.coreos.com/v1), for dynamic objects.
pub fn service_monitor_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("monitoring.coreos.com", "v1", "ServiceMonitor"),
        "servicemonitors",
    )
}

/// A ServiceMonitor selecting every metrics Service of the bot (prod and canary).
pub fn service_monitor(bot: &TradingBot) -> DynamicObject {
    let name = bot_name(bot);
    let monitor = &bot.spec.metrics.service_monitor;
    let interval = monitor
        .interval
        .clone()
        .unwrap_or_else(|| format!("{}s", bot.spec.metrics.scrape_interval_seconds));
    let mut object = DynamicObject::new(&format!("{name}-perps-bot"), &service_monitor_resource());
    object.metadata = meta(bot, format!("{name}-perps-bot"), None);
    object
        .metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .extend(monitor.labels.clone());
    object.data = serde_json::json!({
        "spec": {
            "selector": {"matchLabels": {names::LABEL_BOT: name, names::LABEL_MANAGED_BY: names::MANAGED_BY}},
            "endpoints": [{"port": names::METRICS_PORT_NAME, "path": "/metrics", "interval": interval}],
        }
    });
    let hash = content_hash(&object);
    object
        .metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(names::ANNOTATION_DESIRED_HASH.into(), hash);
    object
}

pub fn service_account(bot: &TradingBot) -> ServiceAccount {
    with_desired_hash(ServiceAccount {
        metadata: meta(bot, names::bot_service_account(&bot_name(bot)), None),
        ..Default::default()
    })
}

/// The identity Lease of one instance: created by the operator (owned by the TradingBot, so it
/// goes with it), held and renewed by the bot. Nobody holds it when created.
pub fn lease(bot: &TradingBot, instance: Instance) -> Lease {
    let names = InstanceNames::new(&bot_name(bot), instance);
    Lease {
        metadata: meta(bot, names.lease, Some(instance)),
        spec: Some(LeaseSpec {
            lease_duration_seconds: Some(15),
            ..Default::default()
        }),
    }
}

/// The least a bot needs: read its own TradingBot (mode, guard levels) and hold its identity
/// Leases (which the operator creates: a bot cannot create any Lease).
pub fn role(bot: &TradingBot) -> Role {
    let name = bot_name(bot);
    let leases: Vec<String> = [Instance::Prod, Instance::Canary]
        .map(|i| InstanceNames::new(&name, i).lease)
        .into();
    with_desired_hash(Role {
        metadata: meta(bot, names::bot_service_account(&name), None),
        rules: Some(vec![
            // Watch its own TradingBot: spec intent, the operator's status, guard levels.
            PolicyRule {
                api_groups: Some(vec![names::GROUP.into()]),
                resources: Some(vec!["tradingbots".into()]),
                resource_names: Some(vec![name.clone()]),
                verbs: vec!["get".into(), "list".into(), "watch".into()],
                ..Default::default()
            },
            // Hold and renew its own identity Leases, by name (fencing: no Lease, no orders).
            PolicyRule {
                api_groups: Some(vec!["coordination.k8s.io".into()]),
                resources: Some(vec!["leases".into()]),
                resource_names: Some(leases),
                verbs: vec!["get".into(), "update".into()],
                ..Default::default()
            },
        ]),
    })
}

pub fn role_binding(bot: &TradingBot) -> RoleBinding {
    let name = names::bot_service_account(&bot_name(bot));
    with_desired_hash(RoleBinding {
        metadata: meta(bot, name.clone(), None),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: name.clone(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name,
            namespace: bot.metadata.namespace.clone(),
            ..Default::default()
        }]),
    })
}

fn env_value(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

fn env_field(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                api_version: None,
            }),
            ..Default::default()
        }),
    }
}

fn default_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".into(), Quantity("10m".into())),
            ("memory".into(), Quantity("32Mi".into())),
        ])),
        limits: Some(BTreeMap::from([("memory".into(), Quantity("256Mi".into()))])),
        claims: None,
    }
}

/// Seconds a bot gets between SIGTERM and SIGKILL: enough to cancel its open orders.
pub const TERMINATION_GRACE_SECONDS: i64 = 60;

/// Where the pod-bound service account token is mounted (the standard in-cluster location).
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Where the bot writes why it exited (the container's termination message).
pub const TERMINATION_LOG_PATH: &str = "/dev/termination-log";

/// The environment the operator gives a bot instance.
fn bot_env(bot: &TradingBot, plan: &InstancePlan, settings: &Settings) -> Vec<EnvVar> {
    let spec = &bot.spec;
    let port = spec.metrics.port;
    let mut env = vec![
        env_value(env::BOT_NAME, bot_name(bot)),
        env_field(env::BOT_NAMESPACE, "metadata.namespace"),
        env_value(env::BOT_INSTANCE, plan.instance.as_str()),
        env_field(env::POD_NAME, "metadata.name"),
        env_field(env::POD_UID, "metadata.uid"),
        env_value(
            env::CONFIG_FILE,
            format!("{}/{}", names::CONFIG_MOUNT_DIR, names::CONFIG_FILE_NAME),
        ),
        env_value(env::METRICS_ADDR, format!("0.0.0.0:{port}")),
        env_value(env::METRICS_FILE, format!("{}/metrics.json", names::STATE_MOUNT_DIR)),
        env_value(env::STATE_FILE, format!("{}/guard-state.json", names::STATE_MOUNT_DIR)),
        env_value(env::TERMINATION_LOG, TERMINATION_LOG_PATH),
        env_value(
            env::ENABLE_DERIVATIVES,
            if spec.exchange.derivatives { "1" } else { "0" },
        ),
        env_value(env::VERSION, &plan.image),
    ];
    if let Some(url) = spec
        .exchange
        .api_base_url
        .clone()
        .or_else(|| settings.default_api_base_url.clone())
    {
        env.push(env_value(env::API_BASE, url));
    }
    if let Some(url) = spec.exchange.ws_url.clone().or_else(|| settings.default_ws_url.clone()) {
        env.push(env_value(env::WS_URL, url));
    }
    if let Some(secret) = &plan.credentials_secret {
        env.push(env_value(env::CREDENTIALS_DIR, names::CREDENTIALS_MOUNT_DIR));
        env.push(env_value(env::CREDENTIALS_SECRET, secret));
    }
    env.extend(spec.env.iter().cloned());
    env
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: Some(read_only),
        ..Default::default()
    }
}

/// A service account token bound to the pod (the API server refuses it once the pod object
/// is gone, so a process outliving its pod cannot renew its Lease), with the cluster CA and
/// the namespace, where in-cluster clients look for them.
fn bound_token_volume() -> Volume {
    Volume {
        name: "kube-api-access".into(),
        projected: Some(ProjectedVolumeSource {
            default_mode: Some(0o444),
            sources: Some(vec![
                VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        path: "token".into(),
                        expiration_seconds: Some(3607),
                        audience: None,
                    }),
                    ..Default::default()
                },
                VolumeProjection {
                    config_map: Some(ConfigMapProjection {
                        name: "kube-root-ca.crt".into(),
                        items: Some(vec![KeyToPath {
                            key: "ca.crt".into(),
                            path: "ca.crt".into(),
                            mode: None,
                        }]),
                        optional: None,
                    }),
                    ..Default::default()
                },
                VolumeProjection {
                    downward_api: Some(DownwardAPIProjection {
                        items: Some(vec![DownwardAPIVolumeFile {
                            path: "namespace".into(),
                            field_ref: Some(ObjectFieldSelector {
                                field_path: "metadata.namespace".into(),
                                api_version: None,
                            }),
                            ..Default::default()
                        }]),
                    }),
                    ..Default::default()
                },
            ]),
        }),
        ..Default::default()
    }
}

/// Volumes and their mounts: config, state, the bound token and (when named) credentials. The
/// credentials Secret is optional to the kubelet, so a missing Secret starts the bot, which
/// then exits naming it (the operator reads no Secret: it reports what the pod says).
fn volumes(names: &InstanceNames, plan: &InstancePlan) -> (Vec<Volume>, Vec<VolumeMount>) {
    let mut volumes = vec![
        Volume {
            name: "config".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: names.config_map.clone(),
                ..Default::default()
            }),
            ..Default::default()
        },
        Volume {
            name: "state".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        },
        bound_token_volume(),
    ];
    let mut mounts = vec![
        mount("config", names::CONFIG_MOUNT_DIR, true),
        mount("state", names::STATE_MOUNT_DIR, false),
        mount("kube-api-access", SERVICE_ACCOUNT_DIR, true),
    ];
    if let Some(secret) = &plan.credentials_secret {
        volumes.push(Volume {
            name: "credentials".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.clone()),
                default_mode: Some(0o440),
                optional: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        });
        mounts.push(mount("credentials", names::CREDENTIALS_MOUNT_DIR, true));
    }
    (volumes, mounts)
}

fn probe(path: &str, period: i32, failures: i32, delay: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String(names::METRICS_PORT_NAME.into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        initial_delay_seconds: Some(delay),
        timeout_seconds: Some(2),
        ..Default::default()
    }
}

fn container(bot: &TradingBot, plan: &InstancePlan, settings: &Settings, mounts: Vec<VolumeMount>) -> Container {
    let port = bot.spec.metrics.port;
    let mut resources = bot.spec.resources.clone().unwrap_or_else(default_resources);
    resources.claims = None;
    Container {
        name: "perps-bot".into(),
        image: Some(plan.image.clone()),
        image_pull_policy: Some(settings.bot_image_pull_policy.clone()),
        env: Some(bot_env(bot, plan, settings)),
        ports: Some(vec![ContainerPort {
            name: Some(names::METRICS_PORT_NAME.into()),
            container_port: i32::from(port),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        liveness_probe: Some(probe("/healthz", 10, 6, 10)),
        readiness_probe: Some(probe("/readyz", 2, 1, 1)),
        resources: Some(resources),
        termination_message_path: Some(TERMINATION_LOG_PATH.into()),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: None,
            }),
            ..Default::default()
        }),
        volume_mounts: Some(mounts),
        ..Default::default()
    }
}

/// What the TradingBot itself puts into an instance's pod (not the operator's settings or
/// code): unchanged while only the operator's side of the pod changes. A bot that names no
/// image runs the operator's default, so a new default is the operator's change too.
pub fn spec_hash(bot: &TradingBot, plan: &InstancePlan) -> String {
    let spec = &bot.spec;
    content_hash(&(
        plan.instance,
        spec.image.as_ref().map(|_| &plan.image),
        &plan.config.without_guards(),
        &plan.credentials_secret,
        &spec.env,
        &spec.resources,
        &spec.exchange,
        spec.metrics.port,
    ))
}

/// The bot pod of one instance. Its template hash annotation changes exactly when the pod
/// must be replaced (image, configuration other than guard levels, env, resources, ...).
pub fn pod(bot: &TradingBot, plan: &InstancePlan, settings: &Settings) -> Pod {
    let name = bot_name(bot);
    let names = InstanceNames::new(&name, plan.instance);
    let (volumes, mounts) = volumes(&names, plan);
    let pod_spec = PodSpec {
        containers: vec![container(bot, plan, settings, mounts)],
        volumes: Some(volumes),
        service_account_name: Some(names::bot_service_account(&name)),
        // The pod-bound token above replaces the default (not pod-bound) one.
        automount_service_account_token: Some(false),
        restart_policy: Some("Always".into()),
        termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
        // The bot needs public DNS (the exchange), not cluster DNS: it reaches the API server
        // through the service environment.
        dns_policy: Some("Default".into()),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(65532),
            run_as_group: Some(65532),
            fs_group: Some(65532),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                localhost_profile: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut metadata = meta(bot, names.pod, Some(plan.instance));
    let template_hash = content_hash(&(&pod_spec, &plan.config.without_guards(), &metadata.labels));
    metadata.annotations = Some(BTreeMap::from([
        (names::ANNOTATION_POD_TEMPLATE_HASH.into(), template_hash),
        (names::ANNOTATION_SPEC_HASH.into(), spec_hash(bot, plan)),
        (names::ANNOTATION_VERSION.into(), plan.image.clone()),
    ]));
    Pod {
        metadata,
        spec: Some(pod_spec),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tradingbot_crds::{Profile, TradingBotSpec};

    fn bot(profile: Profile) -> TradingBot {
        let mut bot = TradingBot::new("btc", TradingBotSpec::for_profile(profile));
        bot.metadata.namespace = Some("trading".into());
        bot.metadata.uid = Some("uid-1".into());
        bot
    }

    fn container(pod: &Pod) -> &Container {
        &pod.spec.as_ref().unwrap().containers[0]
    }

    fn env_of<'a>(pod: &'a Pod, name: &str) -> Option<&'a EnvVar> {
        container(pod).env.as_ref().unwrap().iter().find(|e| e.name == name)
    }

    #[test]
    fn pods_are_locked_down_and_owned() {
        let b = bot(Profile::Dev);
        let pod = pod(
            &b,
            &InstancePlan::prod(&b, "perps-bot:1".into()),
            &Settings::for_tests(),
        );
        let spec = pod.spec.as_ref().unwrap();
        let security = container(&pod).security_context.as_ref().unwrap();
        assert_eq!(security.read_only_root_filesystem, Some(true));
        assert_eq!(security.allow_privilege_escalation, Some(false));
        assert_eq!(
            security.capabilities.as_ref().unwrap().drop.as_deref(),
            Some(&["ALL".to_string()][..])
        );
        let pod_security = spec.security_context.as_ref().unwrap();
        assert_eq!(pod_security.run_as_non_root, Some(true));
        assert_eq!(pod_security.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
        assert_eq!(spec.termination_grace_period_seconds, Some(TERMINATION_GRACE_SECONDS));
        assert_eq!(
            container(&pod)
                .liveness_probe
                .as_ref()
                .unwrap()
                .http_get
                .as_ref()
                .unwrap()
                .path
                .as_deref(),
            Some("/healthz")
        );
        assert_eq!(
            container(&pod)
                .readiness_probe
                .as_ref()
                .unwrap()
                .http_get
                .as_ref()
                .unwrap()
                .path
                .as_deref(),
            Some("/readyz")
        );
        let owner = &pod.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!((owner.kind.as_str(), owner.controller), ("TradingBot", Some(true)));
        assert_eq!(pod.metadata.name.as_deref(), Some("btc"));
    }

    #[test]
    fn credentials_arrive_only_as_a_secret_reference() {
        let mut b = bot(Profile::Prod);
        b.spec.exchange.credentials_secret = Some("coinbase-prod".into());
        let pod = pod(&b, &InstancePlan::prod(&b, "img".into()), &Settings::for_tests());
        let volume = pod
            .spec
            .as_ref()
            .unwrap()
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.name == "credentials")
            .unwrap();
        assert_eq!(
            volume.secret.as_ref().unwrap().secret_name.as_deref(),
            Some("coinbase-prod")
        );
        assert_eq!(
            env_of(&pod, env::CREDENTIALS_DIR).unwrap().value.as_deref(),
            Some(names::CREDENTIALS_MOUNT_DIR)
        );
        let all_env = serde_json::to_string(&container(&pod).env).unwrap();
        assert!(
            !all_env.contains("PRIVATE_KEY"),
            "no key material or key env vars inline"
        );
    }

    #[test]
    fn template_hash_moves_with_the_image_but_not_with_guard_levels() {
        let b = bot(Profile::Dev);
        let settings = Settings::for_tests();
        let hash = |bot: &TradingBot, image: &str| {
            pod(bot, &InstancePlan::prod(bot, image.into()), &settings)
                .metadata
                .annotations
                .unwrap()[names::ANNOTATION_POD_TEMPLATE_HASH]
                .clone()
        };
        let base = hash(&b, "v1");
        assert_ne!(base, hash(&b, "v2"));
        let mut guarded = b.clone();
        guarded.spec.guards.daily_loss = Some(tradingbot_crds::spec::Levels {
            reduce_only_at: Some("1".parse().unwrap()),
            halt_at: None,
        });
        assert_eq!(base, hash(&guarded, "v1"), "guard levels apply live, without a restart");
        let mut moved = b.clone();
        moved.spec.symbols = vec!["ETH-USD".into()];
        assert_ne!(base, hash(&moved, "v1"));
    }

    #[test]
    fn the_spec_hash_follows_the_tradingbot_not_the_operators_settings() {
        let b = bot(Profile::Dev);
        let hash = |bot: &TradingBot, settings: &Settings, image: &str| {
            pod(bot, &InstancePlan::prod(bot, image.into()), settings)
                .metadata
                .annotations
                .unwrap()[names::ANNOTATION_SPEC_HASH]
                .clone()
        };
        let settings = Settings::for_tests();
        let mut moved = settings.clone();
        moved.default_api_base_url = Some("http://elsewhere".into());
        moved.bot_image_pull_policy = "Always".into();
        let base = hash(&b, &settings, "perps-bot:dev");
        assert_eq!(
            base,
            hash(&b, &moved, "perps-bot:dev"),
            "operator settings are not the bot's"
        );
        assert_eq!(
            base,
            hash(&b, &settings, "perps-bot:new-default"),
            "no spec.image: the default is the operator's"
        );
        let mut pinned = b.clone();
        pinned.spec.image = Some("perps-bot:v1".into());
        assert_ne!(
            hash(&pinned, &settings, "perps-bot:v1"),
            hash(&pinned, &settings, "perps-bot:v2")
        );
        let mut changed = b.clone();
        changed.spec.symbols = vec!["ETH-USD".into()];
        assert_ne!(base, hash(&changed, &settings, "perps-bot:dev"));
    }

    #[test]
    fn canary_instance_gets_its_own_names_profile_and_dry_run() {
        let mut b = bot(Profile::Prod);
        b.spec.exchange.credentials_secret = Some("prod-key".into());
        let plan = InstancePlan::canary(&b, "v2".into());
        assert_eq!(plan.config.profile, Profile::Canary);
        assert_eq!(plan.config.dry_run, Some(true));
        let pod = pod(&b, &plan, &Settings::for_tests());
        assert_eq!(pod.metadata.name.as_deref(), Some("btc--canary"));
        assert_eq!(
            env_of(&pod, env::BOT_INSTANCE).unwrap().value.as_deref(),
            Some("canary")
        );
        assert_eq!(pod.metadata.labels.as_ref().unwrap()[names::LABEL_INSTANCE], "canary");
    }

    #[test]
    fn operator_defaults_fill_exchange_urls_the_spec_leaves_out() {
        let b = bot(Profile::Dev);
        let mut settings = Settings::for_tests();
        settings.default_api_base_url = Some("http://10.88.0.1:18080/api/v3/brokerage".into());
        let pod = pod(&b, &InstancePlan::prod(&b, "v".into()), &settings);
        assert_eq!(
            env_of(&pod, env::API_BASE).unwrap().value.as_deref(),
            settings.default_api_base_url.as_deref()
        );
        let mut own = b.clone();
        own.spec.exchange.api_base_url = Some("http://mine".into());
        let pod = super::pod(&own, &InstancePlan::prod(&own, "v".into()), &settings);
        assert_eq!(
            env_of(&pod, env::API_BASE).unwrap().value.as_deref(),
            Some("http://mine")
        );
    }

    #[test]
    fn rbac_is_least_privilege() {
        let b = bot(Profile::Dev);
        let role = role(&b);
        let rules = role.rules.unwrap();
        assert_eq!(rules[0].resource_names.as_deref(), Some(&["btc".to_string()][..]));
        assert!(rules.iter().all(|r| !r.verbs.iter().any(|v| v == "delete" || v == "*")));
        assert!(
            rules
                .iter()
                .all(|r| !r.resources.as_ref().unwrap().iter().any(|x| x == "secrets"))
        );
    }

    #[test]
    fn services_select_one_instance_and_name_the_metrics_port() {
        let b = bot(Profile::Dev);
        let svc = service(&b, Instance::Prod);
        let spec = svc.spec.unwrap();
        assert_eq!(spec.selector.unwrap()[names::LABEL_INSTANCE], "prod");
        assert_eq!(spec.ports.unwrap()[0].name.as_deref(), Some("metrics"));
        let monitor = service_monitor(&b);
        assert_eq!(monitor.data["spec"]["endpoints"][0]["interval"], "10s");
    }

    #[test]
    fn desired_hash_is_stable_and_content_sensitive() {
        let b = bot(Profile::Dev);
        let a = config_map(&b, &InstancePlan::prod(&b, "v".into()));
        let again = config_map(&b, &InstancePlan::prod(&b, "v".into()));
        assert_eq!(a.metadata.annotations, again.metadata.annotations);
        let mut other = b.clone();
        other.spec.symbols = vec!["SOL-USD".into()];
        let c = config_map(&other, &InstancePlan::prod(&other, "v".into()));
        assert_ne!(a.metadata.annotations, c.metadata.annotations);
        assert!(a.data.unwrap()[names::CONFIG_FILE_NAME].contains("profile: dev"));
    }
}
