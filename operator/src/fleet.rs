//! What the controllers of one operator process share: the scraper, and for each watched scope
//! (a namespace, or all) its caches of TradingBots and TradingAccounts and the queues that
//! trigger its reconciles. A TradingAccount and its bots may live in different scopes (bots of
//! one account may span namespaces), so lookups and triggers go through here.

use crate::scrape::Scraper;
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tradingbot_crds::TradingBot;
use tradingbot_crds::account::TradingAccount;

/// One controller's scope: its caches and the queues of its two controllers.
#[derive(Clone)]
pub struct Scope {
    /// The namespace it watches (None: all).
    pub namespace: Option<String>,
    pub bots: Store<TradingBot>,
    /// None when the TradingAccount API is not installed.
    pub accounts: Option<Store<TradingAccount>>,
    pub bot_triggers: UnboundedSender<ObjectRef<TradingBot>>,
    pub account_triggers: UnboundedSender<ObjectRef<TradingAccount>>,
}

impl Scope {
    fn covers(&self, namespace: &str) -> bool {
        self.namespace.as_deref().is_none_or(|n| n == namespace)
    }
}

/// How a bot's account looks from the bot's side.
#[derive(Debug, Clone, PartialEq)]
pub enum AccountLookup {
    Found(Arc<TradingAccount>),
    /// No such TradingAccount in the caches (not created, deleted, or outside the watched
    /// namespaces), or the TradingAccount API is not installed.
    Missing,
}

pub struct Fleet {
    pub scraper: Arc<Scraper>,
    scopes: RwLock<Vec<Scope>>,
    /// Every scope's cache-sync flag, known before any scope registers.
    synced: Vec<Arc<AtomicBool>>,
}

impl Fleet {
    /// A fleet around `scraper`; `scrapes` (the scraper's triggers) are routed to the scope of
    /// each scraped bot. `synced` holds one flag per scope this process will run.
    pub fn new(
        scraper: Arc<Scraper>,
        mut scrapes: UnboundedReceiver<ObjectRef<TradingBot>>,
        synced: Vec<Arc<AtomicBool>>,
    ) -> Arc<Self> {
        let fleet = Arc::new(Self {
            scraper,
            scopes: RwLock::new(Vec::new()),
            synced,
        });
        let router = Arc::downgrade(&fleet);
        tokio::spawn(async move {
            while let Some(bot) = scrapes.recv().await {
                let Some(fleet) = router.upgrade() else { return };
                fleet.trigger_bot(bot);
            }
        });
        fleet
    }

    /// Every scope's caches are filled. A TradingAccount and its bots may be cached by different
    /// scopes: until all are filled, an account would miss bots (and could release a trip, or
    /// drop its finalizer, without them) and a bot could miss its account (and halt).
    pub fn all_synced(&self) -> bool {
        self.synced.iter().all(|s| s.load(Ordering::Relaxed))
    }

    pub fn register(&self, scope: Scope) {
        self.scopes.write().unwrap_or_else(|p| p.into_inner()).push(scope);
    }

    fn scopes(&self) -> Vec<Scope> {
        self.scopes.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Reconcile `bot` soon (in whichever scope covers it).
    pub fn trigger_bot(&self, bot: ObjectRef<TradingBot>) {
        let namespace = bot.namespace.clone().unwrap_or_default();
        if let Some(scope) = self.scopes().into_iter().find(|s| s.covers(&namespace)) {
            let _ = scope.bot_triggers.send(bot);
        }
    }

    /// Reconcile the account `namespace/name` soon.
    pub fn trigger_account(&self, namespace: &str, name: &str) {
        if let Some(scope) = self.scopes().into_iter().find(|s| s.covers(namespace)) {
            let _ = scope.account_triggers.send(ObjectRef::new(name).within(namespace));
        }
    }

    /// The TradingAccount `namespace/name`, as cached.
    pub fn account(&self, namespace: &str, name: &str) -> AccountLookup {
        self.scopes()
            .iter()
            .filter(|s| s.covers(namespace))
            .find_map(|s| s.accounts.as_ref()?.get(&ObjectRef::new(name).within(namespace)))
            .map_or(AccountLookup::Missing, AccountLookup::Found)
    }

    /// Every cached TradingBot whose `spec.account` names `namespace/name`, in every scope.
    pub fn bots_on(&self, namespace: &str, name: &str) -> Vec<Arc<TradingBot>> {
        let mut bots: Vec<Arc<TradingBot>> = self
            .scopes()
            .iter()
            .flat_map(|s| s.bots.state())
            .filter(|bot| {
                bot.spec.account.as_ref().is_some_and(|a| {
                    a.resolve(&bot.namespace().unwrap_or_default()) == (namespace.to_string(), name.to_string())
                })
            })
            .collect();
        bots.sort_by_key(|b| (b.namespace(), b.name_any()));
        bots.dedup_by_key(|b| (b.namespace(), b.name_any()));
        bots
    }

    /// Reconcile every bot on the account `namespace/name` soon.
    pub fn trigger_bots_on(&self, namespace: &str, name: &str) {
        for bot in self.bots_on(namespace, name) {
            self.trigger_bot(ObjectRef::from_obj(bot.as_ref()));
        }
    }
}
