//! Sharding: several operator replicas (or groups of replicas) each own a stable share of the
//! bots, so scrapes and reconciles are split between them.
//!
//! The rule, documented in docs/ARCHITECTURE.md: a bot that names a TradingAccount belongs to
//! its account's shard, so an account and every bot whose totals it adds up are reconciled by
//! one operator; any other bot belongs to the shard of its `namespace/name`. The shard of a key
//! is its 64-bit FNV-1a hash modulo the number of shards: the same on every replica, every
//! restart and every build.
//!
//! Each shard elects its own leader through a Lease of its own (see [`Shard::lease_name`]), so a
//! shard's standby replica takes over when its leader dies while the other shards carry on.
//!
//! Every operator still caches every bot of its namespaces (hash membership is no label
//! selector), and the fleet-wide bound on operator-side restarts (`--max-concurrent-restarts`)
//! holds per shard.

use tradingbot_crds::TradingBot;
use tradingbot_crds::account::TradingAccount;

/// Which share of the bots this operator owns: shard `index` of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    index: u32,
    count: u32,
}

/// Why a shard setting is refused (names the flag and the rule).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    #[error("--shards (SHARDS) must be at least 1, got {0}")]
    NoShards(u32),
    #[error("--shard-index (SHARD_INDEX) must be below --shards {count}, got {index}")]
    IndexOutOfRange { index: u32, count: u32 },
}

impl Shard {
    /// One shard owning every bot: an operator that does not shard.
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    pub fn new(index: u32, count: u32) -> Result<Self, ShardError> {
        if count == 0 {
            return Err(ShardError::NoShards(count));
        }
        if index >= count {
            return Err(ShardError::IndexOutOfRange { index, count });
        }
        Ok(Self { index, count })
    }

    pub fn index(&self) -> u32 {
        self.index
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    /// The shard a sharding key belongs to.
    pub fn of_key(key: &str, count: u32) -> u32 {
        (fnv1a(key.as_bytes()) % u64::from(count.max(1))) as u32
    }

    fn owns_key(&self, key: &str) -> bool {
        self.count == 1 || Self::of_key(key, self.count) == self.index
    }

    /// Whether this shard reconciles (and scrapes) `bot`.
    pub fn owns_bot(&self, bot: &TradingBot) -> bool {
        self.owns_key(&bot_key(bot))
    }

    /// Whether this shard reconciles the TradingAccount `namespace/name`.
    pub fn owns_account(&self, account: &TradingAccount) -> bool {
        let namespace = account.metadata.namespace.as_deref().unwrap_or_default();
        let name = account.metadata.name.as_deref().unwrap_or_default();
        self.owns_key(&account_key(namespace, name))
    }

    /// The Lease this shard's replicas elect their leader with: `base` when not sharding (so an
    /// unsharded operator keeps its Lease), else `base-shard-<index>`. The shard count is not in
    /// the name: when it changes, the new operator of shard i waits for the old one's Lease, so
    /// only the shards added start at once.
    pub fn lease_name(&self, base: &str) -> String {
        if self.count == 1 {
            base.to_string()
        } else {
            format!("{base}-shard-{}", self.index)
        }
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} of {}", self.index, self.count)
    }
}

fn account_key(namespace: &str, name: &str) -> String {
    format!("account:{namespace}/{name}")
}

/// What `bot` is sharded by: its account when it names one, else itself.
pub fn bot_key(bot: &TradingBot) -> String {
    let namespace = bot.metadata.namespace.as_deref().unwrap_or_default();
    match &bot.spec.account {
        Some(account) => {
            let (namespace, name) = account.resolve(namespace);
            account_key(&namespace, &name)
        }
        None => format!("bot:{namespace}/{}", bot.metadata.name.as_deref().unwrap_or_default()),
    }
}

/// 64-bit FNV-1a. Written here rather than taken from a hasher crate: the shard of a bot must
/// never change with a dependency's version (std's `DefaultHasher` promises no stable output,
/// and a crate's `Hash` impls may feed extra bytes), and the function is six lines.
fn fnv1a(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes
        .iter()
        .fold(OFFSET, |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(PRIME))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn bot(namespace: &str, name: &str, account: Option<&str>) -> TradingBot {
        let mut spec = json!({"profile": "dev", "symbols": ["BTC-USD"], "dryRun": true});
        if let Some(account) = account {
            spec["account"] = json!({"name": account});
        }
        serde_json::from_value(json!({
            "apiVersion": "trading.gpttrader.io/v1alpha1",
            "kind": "TradingBot",
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        }))
        .unwrap()
    }

    #[test]
    fn the_hash_is_fnv1a_and_never_changes() {
        // Published FNV-1a 64 test vectors: a changed function would move every bot.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn every_bot_has_exactly_one_shard() {
        let shards: Vec<Shard> = (0..3).map(|i| Shard::new(i, 3).unwrap()).collect();
        let mut per_shard = [0usize; 3];
        for i in 0..300 {
            let b = bot("trading", &format!("bot-{i}"), None);
            let owners: Vec<u32> = shards.iter().filter(|s| s.owns_bot(&b)).map(|s| s.index()).collect();
            assert_eq!(owners.len(), 1, "bot-{i} owned by {owners:?}");
            per_shard[owners[0] as usize] += 1;
        }
        assert!(per_shard.iter().all(|n| *n > 60), "a lopsided split: {per_shard:?}");
        assert!(Shard::WHOLE.owns_bot(&bot("x", "y", None)));
    }

    #[test]
    fn an_account_and_all_its_bots_share_a_shard() {
        let account: TradingAccount = serde_json::from_value(json!({
            "apiVersion": "trading.gpttrader.io/v1alpha1",
            "kind": "TradingAccount",
            "metadata": {"name": "main", "namespace": "trading"},
            "spec": {"credentialsSecret": "coinbase"},
        }))
        .unwrap();
        for count in 2..6 {
            let shards: Vec<Shard> = (0..count).map(|i| Shard::new(i, count).unwrap()).collect();
            let owner = shards.iter().find(|s| s.owns_account(&account)).unwrap();
            for i in 0..50 {
                let b = bot("trading", &format!("bot-{i}"), Some("main"));
                assert!(
                    owner.owns_bot(&b),
                    "bot-{i} of account main outside its shard ({count} shards)"
                );
            }
        }
    }

    #[test]
    fn bad_settings_name_the_flag_and_leases_are_per_shard() {
        assert_eq!(Shard::new(0, 0), Err(ShardError::NoShards(0)));
        let error = Shard::new(2, 2).unwrap_err();
        assert!(error.to_string().contains("--shard-index"), "{error}");
        assert_eq!(Shard::WHOLE.lease_name("tbo"), "tbo");
        assert_eq!(Shard::new(1, 2).unwrap().lease_name("tbo"), "tbo-shard-1");
    }
}
