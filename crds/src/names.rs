//! Names both sides rely on: labels, annotations, child object names, the identity Lease and
//! the environment the operator gives a bot pod. Changing one breaks running bots.

use crate::status::Instance;

pub const GROUP: &str = "trading.gpttrader.io";
/// The one field manager the operator writes with (server-side apply).
pub const FIELD_MANAGER: &str = "tradingbot-operator";
/// Finalizer that halts the bot before its children are deleted.
pub const FINALIZER: &str = "trading.gpttrader.io/halt-before-delete";

pub const LABEL_BOT: &str = "trading.gpttrader.io/bot";
pub const LABEL_INSTANCE: &str = "trading.gpttrader.io/instance";
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const LABEL_APP_NAME: &str = "app.kubernetes.io/name";
pub const MANAGED_BY: &str = "tradingbot-operator";
pub const APP_NAME: &str = "perps-bot";

/// `kubectl annotate tb X trading.gpttrader.io/ack-trip=<trip id>` acknowledges a trip.
pub const ANNOTATION_ACK_TRIP: &str = "trading.gpttrader.io/ack-trip";
/// `kubectl annotate tb X trading.gpttrader.io/flatten=<request id>` makes the bot close its
/// own positions with reduce-only orders once per request id (the bot watches its TradingBot).
pub const ANNOTATION_FLATTEN: &str = "trading.gpttrader.io/flatten";
/// `kubectl tradingbot halt|reduce-only BOT` (or `kubectl annotate tb X
/// trading.gpttrader.io/brake=Halted`): an emergency brake Git never carries, so no GitOps
/// self-heal undoes it. `Halted` or `ReduceOnly`; any other value halts (fail closed). Removing
/// the annotation (`kubectl tradingbot resume BOT`) releases it. Both the operator and the bot
/// read it: it restricts the bot even while the operator is down.
pub const ANNOTATION_BRAKE: &str = "trading.gpttrader.io/brake";
/// Rollout actions without editing the spec (`kubectl tradingbot promote|abort|retry|pause|undo`):
/// `promote`, `promote-full`, `abort`, `retry`, `pause`, `resume`, `undo` or `undo:<revision>`,
/// optionally followed by `@` and any text. A value is acted on once, when it differs from
/// `status.lastAction.value`; the outcome is recorded there and in `status.history`.
pub const ANNOTATION_ROLLOUT_ACTION: &str = "trading.gpttrader.io/rollout-action";
/// Who asked for an action and why: `trading.gpttrader.io/audit.<action annotation name>` holds
/// JSON `{"value", "by", "reason", "at"}` written together with the action (the plugin does), for
/// the action whose annotation has that `value`. Without it the operator names the field manager
/// that set the action's annotation.
pub const AUDIT_ANNOTATION_PREFIX: &str = "trading.gpttrader.io/audit.";

/// The audit note annotation of an action annotation (`trading.gpttrader.io/brake` ->
/// `trading.gpttrader.io/audit.brake`).
pub fn audit_annotation(action_annotation: &str) -> String {
    let name = action_annotation.rsplit('/').next().unwrap_or(action_annotation);
    format!("{AUDIT_ANNOTATION_PREFIX}{name}")
}

/// Hash of everything in a bot pod that needs a restart to change.
pub const ANNOTATION_POD_TEMPLATE_HASH: &str = "trading.gpttrader.io/pod-template-hash";
/// The version (image) a bot pod runs.
pub const ANNOTATION_VERSION: &str = "trading.gpttrader.io/version";
/// Hash of what the TradingBot (not the operator's settings or code) puts into a bot pod: a pod
/// whose template changed while this did not is restarted for the operator's sake, which is
/// rolled across the fleet at a bounded rate.
pub const ANNOTATION_SPEC_HASH: &str = "trading.gpttrader.io/spec-hash";
/// Hash of what the operator last applied to a child: unchanged hash, nothing to write.
pub const ANNOTATION_DESIRED_HASH: &str = "trading.gpttrader.io/desired-hash";

/// The container port name of the bot's metrics endpoint.
pub const METRICS_PORT_NAME: &str = "metrics";

/// Longest TradingBot name: child names and label values must stay within 63 characters.
pub const MAX_BOT_NAME_LEN: usize = 40;

/// Where the operator mounts things in a bot pod.
pub const CONFIG_MOUNT_DIR: &str = "/etc/perps-bot";
pub const CONFIG_FILE_NAME: &str = "config.yaml";
pub const CREDENTIALS_MOUNT_DIR: &str = "/var/run/secrets/coinbase";
pub const STATE_MOUNT_DIR: &str = "/var/lib/perps-bot";

/// Environment of a managed bot.
pub mod env {
    pub const BOT_NAME: &str = "TRADINGBOT_NAME";
    pub const BOT_NAMESPACE: &str = "TRADINGBOT_NAMESPACE";
    pub const BOT_INSTANCE: &str = "TRADINGBOT_INSTANCE";
    pub const POD_NAME: &str = "POD_NAME";
    pub const POD_UID: &str = "POD_UID";
    pub const CONFIG_FILE: &str = "PERPS_BOT_CONFIG";
    pub const CREDENTIALS_DIR: &str = "COINBASE_CREDENTIALS_DIR";
    pub const ENABLE_DERIVATIVES: &str = "COINBASE_ENABLE_DERIVATIVES";
    pub const API_BASE: &str = "COINBASE_API_BASE";
    pub const WS_URL: &str = "COINBASE_WS_URL";
    pub const METRICS_ADDR: &str = "PERPS_BOT_METRICS_ADDR";
    pub const METRICS_FILE: &str = "PERPS_BOT_METRICS_FILE";
    pub const STATE_FILE: &str = "PERPS_BOT_STATE_FILE";
    /// The version the bot reports in `perps_bot_build_info` (the image it runs).
    pub const VERSION: &str = "PERPS_BOT_VERSION";
    /// The name (never the content) of the Secret mounted at CREDENTIALS_DIR, for messages.
    pub const CREDENTIALS_SECRET: &str = "COINBASE_CREDENTIALS_SECRET";
    /// Where the bot writes the one-line reason it exits with (the pod's termination message).
    pub const TERMINATION_LOG: &str = "PERPS_BOT_TERMINATION_LOG";
    /// Variables a user may not set through `spec.env`: the operator owns them.
    pub const RESERVED: [&str; 16] = [
        BOT_NAME,
        BOT_NAMESPACE,
        BOT_INSTANCE,
        POD_NAME,
        POD_UID,
        CONFIG_FILE,
        CREDENTIALS_DIR,
        ENABLE_DERIVATIVES,
        API_BASE,
        WS_URL,
        METRICS_ADDR,
        METRICS_FILE,
        STATE_FILE,
        VERSION,
        CREDENTIALS_SECRET,
        TERMINATION_LOG,
    ];
}

/// Child object names of one instance of a bot.
///
/// Prod children are `<bot>`, `<bot>-config`, `<bot>-metrics`, `<bot>-trading`; canary children
/// are `<bot>--canary`, `<bot>--canary-config`, ... A bot name never contains `--`
/// ([`check_bot_name`], enforced by the CRD), so the part before the first `--` is always the
/// bot: no two TradingBots of a namespace can derive the same child name (bot `x`'s canary is
/// never bot `x-canary`'s prod instance).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceNames {
    pub pod: String,
    pub config_map: String,
    pub service: String,
    pub lease: String,
}

/// What separates a bot's name from its canary instance's suffix; never part of a bot name.
pub const INSTANCE_SEPARATOR: &str = "--";

impl InstanceNames {
    pub fn new(bot: &str, instance: Instance) -> Self {
        let base = match instance {
            Instance::Prod => bot.to_string(),
            Instance::Canary => format!("{bot}{INSTANCE_SEPARATOR}canary"),
        };
        Self::from_base(base)
    }

    /// The canary names operators before 0.2 used (`<bot>-canary...`): children of this bot
    /// under these names are left-overs to remove (only when this bot owns them).
    pub fn legacy_canary(bot: &str) -> Self {
        Self::from_base(format!("{bot}-canary"))
    }

    fn from_base(base: String) -> Self {
        Self {
            config_map: format!("{base}-config"),
            service: format!("{base}-metrics"),
            lease: format!("{base}-trading"),
            pod: base,
        }
    }
}

/// The ServiceAccount, Role and RoleBinding of a bot (shared by its instances).
pub fn bot_service_account(bot: &str) -> String {
    format!("{bot}-perps-bot")
}

/// The prefix of every client order id a bot instance sends: `<ns>.<bot>.<instance>.` where
/// `<ns>` is a short stable hash of the namespace. `.` never occurs in names, so no instance's
/// prefix is a prefix of another's: a bot cancels only its own orders even when bots share an
/// exchange account (same name in another namespace, or a name that extends another's).
pub fn client_order_prefix(namespace: &str, bot: &str, instance: Instance) -> String {
    // FNV-1a: tiny, stable across versions and platforms (this is an identifier, not security).
    let hash = namespace
        .bytes()
        .fold(0x811c_9dc5_u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
    format!("{:06x}.{bot}.{instance}.", hash & 0xff_ffff)
}

/// The prefix of a bot run by hand (not by the operator).
pub const LOCAL_CLIENT_ORDER_PREFIX: &str = "pb.local.";

/// The rule every TradingBot name follows, as a regular expression (also in the CRD, so the API
/// server refuses other names): DNS-label characters, starting with a letter, ending with a
/// letter or digit, and no `--` (reserved for instance suffixes such as `<bot>--canary`).
pub const BOT_NAME_PATTERN: &str = "^[a-z]([a-z0-9]|-[a-z0-9])*$";

/// The rule in words, for error messages and docs.
pub fn bot_name_rule() -> String {
    format!(
        "at most {MAX_BOT_NAME_LEN} characters of a-z, 0-9 and '-', starting with a letter, ending with a \
         letter or digit, and without '--' (child object names derive from it: <name>-config, \
         <name>--canary, ...)"
    )
}

/// Is `name` usable as a TradingBot name (all children names derive from it)?
pub fn check_bot_name(name: &str) -> Result<(), String> {
    let valid_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let starts_ok = name.bytes().next().is_some_and(|b| b.is_ascii_lowercase());
    let ends_ok = name
        .bytes()
        .last()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let no_separator = !name.contains(INSTANCE_SEPARATOR);
    if name.len() > MAX_BOT_NAME_LEN || !valid_chars || !starts_ok || !ends_ok || !no_separator {
        return Err(format!("metadata.name {name:?} must be {}", bot_name_rule()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_children_have_distinct_names() {
        let prod = InstanceNames::new("btc", Instance::Prod);
        let canary = InstanceNames::new("btc", Instance::Canary);
        assert_eq!(prod.pod, "btc");
        assert_eq!(canary.pod, "btc--canary");
        assert_ne!(prod.lease, canary.lease);
        assert_ne!(prod.config_map, canary.config_map);
    }

    /// Every child name of every instance of one bot, with its kind.
    fn children(bot: &str) -> Vec<(&'static str, String)> {
        let mut all = vec![
            ("ServiceAccount", bot_service_account(bot)),
            ("Role", bot_service_account(bot)),
            ("RoleBinding", bot_service_account(bot)),
        ];
        for instance in [Instance::Prod, Instance::Canary] {
            let n = InstanceNames::new(bot, instance);
            all.extend([
                ("Pod", n.pod),
                ("ConfigMap", n.config_map),
                ("Service", n.service),
                ("Lease", n.lease),
            ]);
        }
        all
    }

    #[test]
    fn no_two_valid_bot_names_share_a_child_name() {
        // Names built to collide under the old `<bot>-canary` scheme, and other near misses.
        let bots = [
            "nc",
            "nc-canary",
            "x",
            "x-canary",
            "x-canary-canary",
            "x-config",
            "x-metrics",
            "x-trading",
            "x-perps-bot",
            "x-perps",
            "btc-canary",
            "btc",
            "a-canary-config",
            "a",
        ];
        let mut seen = std::collections::HashMap::new();
        for bot in bots {
            assert!(check_bot_name(bot).is_ok(), "{bot}");
            for (kind, name) in children(bot) {
                if let Some(other) = seen.insert((kind, name.clone()), bot) {
                    // ServiceAccount, Role and RoleBinding share one name within a bot.
                    assert_eq!(other, bot, "{kind} {name} is derived by both {other} and {bot}");
                }
            }
        }
    }

    #[test]
    fn the_name_check_and_the_crd_pattern_agree() {
        let pattern = regex::Regex::new(BOT_NAME_PATTERN).unwrap();
        for name in [
            "a",
            "btc-canary",
            "a1-b2",
            "x--y",
            "x-",
            "-x",
            "X",
            "a_b",
            "a--",
            "a--canary",
        ] {
            assert_eq!(check_bot_name(name).is_ok(), pattern.is_match(name), "{name}");
        }
    }

    #[test]
    fn client_order_prefixes_never_nest() {
        let a = client_order_prefix("trading", "btc", Instance::Prod);
        let b = client_order_prefix("trading", "btc-prod", Instance::Prod);
        let c = client_order_prefix("other", "btc", Instance::Prod);
        let d = client_order_prefix("trading", "btc", Instance::Canary);
        for (x, y) in [(&a, &b), (&a, &c), (&a, &d), (&b, &a)] {
            assert!(!y.starts_with(x.as_str()), "{x} is a prefix of {y}");
        }
        assert_eq!(a, client_order_prefix("trading", "btc", Instance::Prod), "stable");
        assert!(a.ends_with(".btc.prod."));
    }

    #[test]
    fn bot_names_must_fit_every_child_name() {
        assert!(check_bot_name("btc-prod-1").is_ok());
        for bad in ["", "Btc", "1btc", "btc-", "btc_prod", "btc--x", &"a".repeat(41)] {
            assert!(check_bot_name(bad).unwrap_err().contains("metadata.name"), "{bad}");
        }
        let longest = "a".repeat(MAX_BOT_NAME_LEN);
        assert!(InstanceNames::new(&longest, Instance::Canary).service.len() <= 63);
    }
}
