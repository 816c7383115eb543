//! `tradingbot-operator`: one process; with `--leader-election`, several replicas can run and
//! only the Lease holder reconciles (hand-over on shutdown releases the Lease). With `--shards`,
//! each operator owns one shard of the bots and elects its leader among the shard's replicas.

use anyhow::Context as _;
use clap::Parser;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::watch;
use tradingbot_crds::lease::{LeaseConfig, LeaseHolder};
use tradingbot_operator::cli::{Args, GuardSource, LogFormat, Settings};
use tradingbot_operator::controller;
use tradingbot_operator::http::{self, Health};
use tradingbot_operator::metrics::OperatorMetrics;
use tradingbot_operator::scrape::Scraper;
use tradingbot_operator::scrape::prometheus::{PrometheusSettings, PrometheusSource};
use tradingbot_operator::shard::Shard;

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube_runtime::controller=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

fn main() -> ExitCode {
    limit_malloc_arenas();
    let args = Args::parse();
    init_logging(args.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("tradingbot-operator: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("tradingbot-operator: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// glibc's malloc gives threads that contend an arena each (up to eight per core), and each
/// arena keeps what was freed in it: the peaks of different threads (an initial list parsed on
/// one, a burst of reconciles on another) add up in the resident memory. Two arenas serve the
/// two runtime workers; the rest of the threads (blocking pool, timers) allocate little.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// The operator keeps a connection open to every bot it scrapes: lift the soft open-file limit
/// to the hard one (containers often start at 1,024, fewer than a fleet's bots).
fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    let got = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    if !got || limit.rlim_cur >= limit.rlim_max {
        return;
    }
    let before = limit.rlim_cur;
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } == 0 {
        tracing::info!(
            before,
            after = limit.rlim_cur,
            "open-file limit raised to the hard limit"
        );
    } else {
        tracing::warn!(before, hard = limit.rlim_max, error = %std::io::Error::last_os_error(), "cannot raise the open-file limit");
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    raise_open_file_limit();
    let shard = Shard::new(args.shard_index, args.shards)?;
    let metrics = Arc::new(OperatorMetrics::new());
    // A standby reports 0, so a shard whose replicas all stand by is seen (no leader).
    let leader = metrics.leader.with_label_values(&[&shard.index().to_string()]);
    leader.set(0);
    let config = kube::Config::infer()
        .await
        .context("no Kubernetes configuration (in-cluster or KUBECONFIG)")?;
    let client = tradingbot_operator::api_counter::counted_client(config, metrics.clone())
        .context("cannot build the Kubernetes client")?;
    let served = client
        .list_api_group_resources("trading.gpttrader.io/v1alpha1")
        .await
        .is_ok_and(|list| list.resources.iter().any(|r| r.name == "tradingbots"));
    anyhow::ensure!(
        served,
        "the TradingBot CRD is not installed (kubectl apply -f crds/tradingbot.crd.yaml)"
    );
    let accounts = client
        .list_api_group_resources("trading.gpttrader.io/v1alpha1")
        .await
        .is_ok_and(|list| list.resources.iter().any(|r| r.name == "tradingaccounts"));
    if !accounts {
        tracing::warn!(
            "the TradingAccount CRD is not installed (kubectl apply -f crds/tradingaccount.crd.yaml): bots naming an account are halted until it is"
        );
    }

    let (stop_tx, stop) = watch::channel(false);
    spawn_signal_handler(stop_tx.clone());
    let listed: Vec<String> = args
        .namespaces
        .iter()
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
        .collect();
    let watched = listed.clone();
    let namespaces: Vec<Option<String>> = if listed.is_empty() {
        vec![None]
    } else {
        listed.into_iter().map(Some).collect()
    };
    // One cache-sync flag per controller: ready (and reconciling) only once each has synced.
    let synced: Vec<Arc<AtomicBool>> = namespaces.iter().map(|_| Arc::new(AtomicBool::new(false))).collect();
    let leading = Arc::new(AtomicBool::new(!args.leader_election));
    let health = Arc::new(Health {
        metrics: metrics.clone(),
        synced: synced.clone(),
        leading: leading.clone(),
    });
    http::serve(args.metrics_addr, health, stop.clone())
        .await
        .with_context(|| format!("--metrics-addr {}: cannot listen", args.metrics_addr))?;

    let identity = args
        .pod_name
        .clone()
        .unwrap_or_else(|| format!("operator-{}", std::process::id()));
    let suffix: u32 = rand::random();
    let mut lease = None;
    if args.leader_election {
        let namespace = args
            .leader_election_namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let lease_name = shard.lease_name(&args.leader_election_lease);
        let mut config = LeaseConfig::new(&lease_name, &namespace, format!("{identity}_{suffix:08x}"));
        config.create_if_missing = true;
        let (mut claim, handle) = LeaseHolder::spawn(client.clone(), config);
        lease = Some(handle);
        tracing::info!(lease = %lease_name, %namespace, %shard, "standby: waiting to become the leader");
        let mut waiting = stop.clone();
        tokio::select! {
            _ = claim.acquired() => {}
            _ = waiting.wait_for(|s| *s) => return Ok(()),
        }
        leading.store(true, Ordering::Relaxed);
        leader.set(1);
        tracing::info!("leading: reconciling");
        // Losing the Lease means another replica may take over: stop at once.
        tokio::spawn(async move {
            claim.lost().await;
            tracing::error!("leadership lost: exiting so another replica can lead");
            std::process::exit(1);
        });
    } else {
        leader.set(1);
    }

    let settings = Settings::from(&args);
    let restarts = Arc::new(tradingbot_operator::reconcile::restarts::RestartBudget::new(
        settings.max_concurrent_restarts,
        settings.restart_ready_timeout,
    ));
    let (scraper, scrapes) = guard_source(&args, &metrics, &watched, stop.clone())?;
    let fleet = tradingbot_operator::fleet::Fleet::new(scraper, scrapes, synced.clone());
    let mut controllers = Vec::new();
    for (namespace, synced) in namespaces.into_iter().zip(synced) {
        let options = controller::ControllerOptions {
            namespace,
            settings: settings.clone(),
            concurrency: args.concurrency,
            instance: identity.clone(),
            restarts: restarts.clone(),
            fleet: fleet.clone(),
            accounts,
            shard,
        };
        controllers.push(tokio::spawn(controller::run(
            client.clone(),
            options,
            metrics.clone(),
            stop.clone(),
            synced,
        )));
    }
    for controller in controllers {
        let _ = controller.await;
    }
    let _ = stop_tx.send(true);
    if let Some(lease) = lease {
        // Releasing the Lease lets a standby take over without waiting for it to expire.
        lease.release().await;
    }
    tracing::info!("stopped");
    Ok(())
}

type Scrapes = tokio::sync::mpsc::UnboundedReceiver<kube::runtime::reflector::ObjectRef<tradingbot_crds::TradingBot>>;

/// The scraper, on the guard source the flags name.
fn guard_source(
    args: &Args,
    metrics: &Arc<OperatorMetrics>,
    namespaces: &[String],
    stop: watch::Receiver<bool>,
) -> anyhow::Result<(Arc<Scraper>, Scrapes)> {
    let timeout = Duration::from_secs(args.scrape_timeout_seconds);
    match args.guard_source {
        GuardSource::Pods => Ok(Scraper::new(timeout, metrics.clone())),
        GuardSource::Prometheus => {
            let url = args
                .prometheus_url
                .clone()
                .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
                .context(
                    "--guard-source prometheus needs --prometheus-url (PROMETHEUS_URL), an http:// or https:// URL",
                )?;
            let settings = PrometheusSettings {
                url: url.clone(),
                interval: Duration::from_secs(args.prometheus_interval_seconds),
                timeout: Duration::from_secs(args.prometheus_timeout_seconds),
                max_age: Duration::from_secs(args.prometheus_max_age_seconds),
                namespaces: namespaces.to_vec(),
            };
            let http = reqwest::Client::builder()
                .connect_timeout(timeout)
                .build()
                .context("cannot build the Prometheus HTTP client")?;
            tracing::info!(prometheus = %url, interval_s = args.prometheus_interval_seconds, "guard source: Prometheus");
            let source = PrometheusSource::spawn(settings, http, metrics.clone(), stop);
            Ok(Scraper::with_prometheus(timeout, metrics.clone(), source))
        }
    }
}

fn spawn_signal_handler(stop: watch::Sender<bool>) {
    tokio::spawn(async move {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("shutting down: finishing reconciles and handing over");
        let _ = stop.send(true);
    });
}
