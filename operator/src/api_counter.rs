//! Counting every request the operator sends to the API server, by verb (the fleet benchmark
//! reports requests per bot from it; writes are also counted where they are made).

use crate::metrics::OperatorMetrics;
use std::sync::Arc;

/// The verb of a Kubernetes API request, from its method and query.
pub fn verb_of(method: &http::Method, query: Option<&str>) -> &'static str {
    let watching = query.is_some_and(|q| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1"));
    match *method {
        http::Method::GET if watching => "watch",
        http::Method::GET => "get",
        http::Method::POST => "create",
        http::Method::PUT => "update",
        http::Method::PATCH => "patch",
        http::Method::DELETE => "delete",
        _ => "other",
    }
}

/// A client for `config` whose every request is counted in `tradingbot_operator_api_requests_total`.
pub fn counted_client(config: kube::Config, metrics: Arc<OperatorMetrics>) -> Result<kube::Client, kube::Error> {
    let layer = tower::util::MapRequestLayer::new(move |request: http::Request<kube::client::Body>| {
        let verb = verb_of(request.method(), request.uri().query());
        metrics.api_requests.with_label_values(&[verb]).inc();
        request
    });
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&layer)
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs() {
        assert_eq!(verb_of(&http::Method::GET, Some("labelSelector=a&watch=true")), "watch");
        assert_eq!(verb_of(&http::Method::GET, Some("limit=500")), "get");
        assert_eq!(verb_of(&http::Method::PATCH, None), "patch");
        assert_eq!(verb_of(&http::Method::POST, None), "create");
    }
}
