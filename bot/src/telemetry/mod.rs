//! Observability: Prometheus metrics, the metrics.json/health.json snapshots, the HTTP server
//! and structured logs.

pub mod metrics;
pub mod server;
pub mod snapshot;

use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line (the default: what log pipelines want).
    Json,
    /// Human-readable lines.
    Text,
}

/// Crates whose debug and trace output may be shown: our own. Every other library is capped at
/// INFO whatever `RUST_LOG` asks, because some log wire payloads at debug/trace (tungstenite
/// prints every WebSocket frame, signed subscribe JWTs included; HTTP stacks print headers).
const VERBOSE_TARGETS: [&str; 2] = ["perps_bot", "tradingbot_crds"];

/// Whether an event of `level` from `target` may be logged at all (before `RUST_LOG`).
pub fn may_log(target: &str, level: tracing::Level) -> bool {
    let ours = VERBOSE_TARGETS
        .iter()
        .any(|t| target == *t || target.strip_prefix(t).is_some_and(|rest| rest.starts_with("::")));
    ours || level <= tracing::Level::INFO
}

/// Initialise logging to stderr. `PERPS_BOT_LOG` (or `RUST_LOG`) filters, default `info`;
/// libraries never log below INFO (see [`may_log`]), so no level prints credentials.
pub fn init_logging(format: LogFormat) {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = std::env::var("PERPS_BOT_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let _ = tracing_subscriber::registry()
        .with(capped_layer(format, filter, std::io::stderr))
        .try_init();
}

/// The log output layer: `format` to `writer`, filtered by `filter` and capped by [`may_log`].
fn capped_layer<S, W>(
    format: LogFormat,
    filter: EnvFilter,
    writer: W,
) -> impl tracing_subscriber::Layer<S> + Send + Sync + 'static
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a> + Send + Sync,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    use tracing_subscriber::Layer as _;
    let cap = tracing_subscriber::filter::filter_fn(|meta| may_log(meta.target(), *meta.level()));
    let layer = tracing_subscriber::fmt::layer().with_writer(writer);
    let layer = match format {
        LogFormat::Json => layer.json().flatten_event(true).with_current_span(false).boxed(),
        LogFormat::Text => layer.boxed(),
    };
    layer.with_filter(filter).with_filter(cap)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    #[test]
    fn only_our_crates_log_below_info() {
        assert!(may_log("perps_bot::coinbase::ws", Level::TRACE));
        assert!(may_log("tradingbot_crds", Level::DEBUG));
        assert!(!may_log("tungstenite::protocol", Level::TRACE));
        assert!(!may_log("hyper_util::client", Level::DEBUG));
        assert!(!may_log("perps_bot_evil", Level::TRACE));
        assert!(may_log("tungstenite::protocol", Level::WARN));
    }

    #[derive(Clone, Default)]
    struct Buffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    /// The layer the bot installs, at `RUST_LOG=trace`: a library's frame dump (what
    /// tungstenite prints for a subscribe message, JWT included) is dropped, ours is kept.
    #[test]
    fn at_trace_a_librarys_frame_dump_is_dropped_and_ours_kept() {
        use tracing_subscriber::layer::SubscriberExt as _;
        let buffer = Buffer::default();
        let subscriber =
            tracing_subscriber::registry().with(capped_layer(LogFormat::Json, EnvFilter::new("trace"), buffer.clone()));
        tracing::subscriber::with_default(subscriber, || {
            tracing::trace!(target: "tungstenite::protocol", "Sending frame: {{\"type\":\"subscribe\",\"jwt\":\"eyJhbGciOiJFUzI1NiJ9.x.y\"}}");
            tracing::debug!(target: "hyper_util::client::legacy", "authorization: Bearer eyJhbGciOiJFUzI1NiJ9.x.y");
            tracing::trace!(target: "perps_bot::coinbase::ws", "subscribing");
            tracing::warn!(target: "tungstenite::protocol", "connection reset");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        assert!(!text.contains("eyJ"), "{text}");
        assert!(
            text.contains("subscribing") && text.contains("connection reset"),
            "{text}"
        );
    }
}
