//! The API server's own account of the time it spent on requests, by verb and resource (its
//! `apiserver_request_duration_seconds` histogram), so a run can say which requests bound a
//! figure. Watches and long-running requests are left out.

use std::collections::BTreeMap;
use test_harness::Cluster;

/// Time spent and requests served so far, by `VERB resource[/subresource]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServerTime(BTreeMap<String, (f64, f64)>);

/// One kind of request over a phase.
#[derive(Debug, Clone, PartialEq)]
pub struct Spent {
    pub request: String,
    pub count: f64,
    pub seconds: f64,
}

impl Spent {
    pub fn mean_ms(&self) -> f64 {
        1000.0 * self.seconds / self.count.max(1.0)
    }
}

fn label<'a>(labels: &'a str, name: &str) -> &'a str {
    labels
        .split(',')
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix("=\""))
        .and_then(|v| v.split('"').next())
        .unwrap_or("")
}

impl ServerTime {
    /// Read from the text of the API server's /metrics page.
    pub fn parse(text: &str) -> Self {
        let mut by_request: BTreeMap<String, (f64, f64)> = BTreeMap::new();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("apiserver_request_duration_seconds_") else {
                continue;
            };
            let (field, rest) = match rest.split_once('{') {
                Some(("sum", rest)) => (0, rest),
                Some(("count", rest)) => (1, rest),
                _ => continue,
            };
            let Some((labels, value)) = rest.rsplit_once("} ") else {
                continue;
            };
            let verb = label(labels, "verb");
            if matches!(verb, "WATCH" | "CONNECT") {
                continue;
            }
            let resource = match label(labels, "subresource") {
                "" => label(labels, "resource").to_string(),
                sub => format!("{}/{sub}", label(labels, "resource")),
            };
            let value: f64 = value.trim().parse().unwrap_or(0.0);
            let entry = by_request.entry(format!("{verb} {resource}")).or_default();
            if field == 0 {
                entry.0 += value;
            } else {
                entry.1 += value;
            }
        }
        Self(by_request)
    }

    /// Read from the cluster's API server now.
    pub fn read(cluster: &Cluster) -> anyhow::Result<Self> {
        Ok(Self::parse(&cluster.kubectl_result(&["get", "--raw", "/metrics"])?))
    }

    /// What was spent between `before` and this reading, most time first.
    pub fn since(&self, before: &ServerTime) -> Vec<Spent> {
        let mut spent: Vec<Spent> = self
            .0
            .iter()
            .map(|(request, (seconds, count))| {
                let (s0, c0) = before.0.get(request).copied().unwrap_or_default();
                Spent {
                    request: request.clone(),
                    count: count - c0,
                    seconds: seconds - s0,
                }
            })
            .filter(|s| s.count >= 1.0)
            .collect();
        spent.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
        spent
    }
}

/// The `top` requests that took the API server most time, for a run note.
pub fn summary(spent: &[Spent], top: usize) -> String {
    let shown: Vec<String> = spent
        .iter()
        .take(top)
        .map(|s| format!("{} {:.0} × {:.0} ms", s.request, s.count, s.mean_ms()))
        .collect();
    let total: f64 = spent.iter().map(|s| s.seconds).sum();
    format!("{} (all requests: {total:.0} s)", shown.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_summed_by_verb_and_resource_and_watches_are_left_out() {
        let page = r#"# HELP apiserver_request_duration_seconds x
apiserver_request_duration_seconds_sum{component="apiserver",dry_run="",group="",resource="services",scope="resource",subresource="",verb="POST",version="v1"} 5.5
apiserver_request_duration_seconds_count{component="apiserver",dry_run="",group="",resource="services",scope="resource",subresource="",verb="POST",version="v1"} 10
apiserver_request_duration_seconds_sum{component="apiserver",group="trading.gpttrader.io",resource="tradingbots",scope="namespace",subresource="status",verb="APPLY",version="v1alpha1"} 1
apiserver_request_duration_seconds_count{component="apiserver",group="trading.gpttrader.io",resource="tradingbots",scope="namespace",subresource="status",verb="APPLY",version="v1alpha1"} 20
apiserver_request_duration_seconds_sum{component="apiserver",resource="pods",subresource="",verb="WATCH"} 900
apiserver_request_duration_seconds_count{component="apiserver",resource="pods",subresource="",verb="WATCH"} 3
apiserver_request_duration_seconds_bucket{component="apiserver",resource="pods",verb="GET",le="0.1"} 3
"#;
        let before = ServerTime::default();
        let spent = ServerTime::parse(page).since(&before);
        assert_eq!(spent.len(), 2, "{spent:?}");
        assert_eq!(spent[0].request, "POST services");
        assert_eq!(spent[0].mean_ms(), 550.0);
        assert_eq!(spent[1].request, "APPLY tradingbots/status");
        assert_eq!(summary(&spent, 1), "POST services 10 × 550 ms (all requests: 6 s)");
    }
}
