//! The local cluster's own settings (addresses, paths), as `tests/cluster/cluster-up.sh` writes
//! them to `$TB_CLUSTER_DIR/cluster.env`. Tests read addresses from here instead of repeating
//! them, so a cluster started with another layout is still described correctly.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// `KEY=VALUE` settings of the local cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    file: PathBuf,
    values: BTreeMap<String, String>,
}

impl ClusterSettings {
    /// Read `cluster.env` (written by cluster-up.sh once the cluster is up).
    pub fn load(file: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(file).map_err(|e| {
            anyhow::anyhow!(
                "cannot read {} ({e}): it is written by tests/cluster/cluster-up.sh",
                file.display()
            )
        })?;
        Ok(Self::parse(file, &text))
    }

    /// Parse `KEY=VALUE` lines (blank lines and `#` comments ignored).
    pub fn parse(file: &Path, text: &str) -> Self {
        let values = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        Self {
            file: file.to_path_buf(),
            values,
        }
    }

    /// One setting; panics naming the file and the key when it is absent.
    pub fn get(&self, key: &str) -> &str {
        self.values.get(key).map(String::as_str).unwrap_or_else(|| {
            panic!(
                "{} has no {key}: restart the cluster with tests/cluster/cluster-up.sh",
                self.file.display()
            )
        })
    }

    /// The address pods reach the host at (the pod bridge's gateway).
    pub fn pod_gateway(&self) -> &str {
        self.get("TB_POD_GATEWAY")
    }

    /// The API server's URL as seen from the host (e.g. `https://127.0.0.1:16443`).
    pub fn apiserver_url(&self) -> &str {
        self.get("TB_APISERVER_URL")
    }

    /// The cluster CA's certificate file.
    pub fn ca_file(&self) -> PathBuf {
        PathBuf::from(self.get("TB_CA_FILE"))
    }

    /// The file holding the admin bearer token.
    pub fn admin_token_file(&self) -> PathBuf {
        PathBuf::from(self.get("TB_ADMIN_TOKEN_FILE"))
    }

    /// The API server's audit log.
    pub fn audit_log(&self) -> PathBuf {
        PathBuf::from(self.get("TB_AUDIT_LOG"))
    }

    /// The cluster containerd's socket.
    pub fn containerd_socket(&self) -> PathBuf {
        PathBuf::from(self.get("TB_CONTAINERD_SOCK"))
    }

    /// The node's name.
    pub fn node_name(&self) -> &str {
        self.get("TB_NODE_NAME")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_key_value_lines() {
        let settings = ClusterSettings::parse(
            Path::new("cluster.env"),
            "# comment\nTB_POD_GATEWAY=10.1.2.3\n\nTB_APISERVER_URL=https://127.0.0.1:1\n",
        );
        assert_eq!(settings.pod_gateway(), "10.1.2.3");
        assert_eq!(settings.apiserver_url(), "https://127.0.0.1:1");
    }

    #[test]
    #[should_panic(expected = "has no TB_NODE_NAME")]
    fn a_missing_key_names_itself() {
        ClusterSettings::parse(Path::new("cluster.env"), "A=b").node_name();
    }
}
