//! CDP API credentials: where they come from (environment or a mounted Secret folder) and
//! how the private key is parsed. The private key never leaves this module except as a
//! signing key; `Debug` and every error message leave it out.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use std::fmt;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// The signature algorithm of a key (the JWT `alg`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAlgorithm {
    /// ECDSA P-256 with SHA-256 (the classic Coinbase key, SEC1 PEM).
    Es256,
    /// Ed25519 (newer CDP keys, base64 of seed || public key).
    EdDsa,
}

impl KeyAlgorithm {
    pub fn jwt_alg(self) -> &'static str {
        match self {
            KeyAlgorithm::Es256 => "ES256",
            KeyAlgorithm::EdDsa => "EdDSA",
        }
    }
}

pub(crate) enum SigningKey {
    Es256(p256::ecdsa::SigningKey),
    EdDsa(ed25519_dalek::SigningKey),
}

/// A CDP API key: its name (not secret: it is sent in every JWT) and its private key.
pub struct Credentials {
    key_name: String,
    key: SigningKey,
    source: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("key_name", &self.key_name)
            .field("algorithm", &self.algorithm())
            .field("source", &self.source)
            .field("private_key", &"<redacted>")
            .finish()
    }
}

/// Why credentials could not be loaded. Messages name the source and the problem, never
/// the key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    #[error("Coinbase credentials incomplete: {0}")]
    Incomplete(String),
    #[error("Coinbase credentials unreadable: {0}")]
    Unreadable(String),
    #[error("Coinbase credentials invalid: {0}")]
    Invalid(String),
    /// None configured where they are needed.
    #[error("no Coinbase credentials: {0}")]
    Missing(String),
}

impl Credentials {
    /// Parse a key name and private key (PEM or base64). `source` says where they came
    /// from, for messages.
    pub fn parse(key_name: &str, private_key: &str, source: &str) -> Result<Self, CredentialsError> {
        let key_name = key_name.trim();
        if key_name.is_empty() {
            return Err(CredentialsError::Invalid(format!(
                "{source}: the API key name is empty"
            )));
        }
        if key_name.contains("BEGIN") && key_name.contains("PRIVATE KEY") {
            return Err(CredentialsError::Invalid(format!(
                "{source}: the API key name holds a private key (are the two values swapped?)"
            )));
        }
        if key_name.len() > 512 || key_name.chars().any(char::is_control) {
            return Err(CredentialsError::Invalid(format!(
                "{source}: the API key name is not a CDP key name (organizations/.../apiKeys/... or a UUID)"
            )));
        }
        let key =
            parse_private_key(private_key).map_err(|why| CredentialsError::Invalid(format!("{source}: {why}")))?;
        Ok(Self {
            key_name: key_name.to_string(),
            key,
            source: source.to_string(),
        })
    }

    /// Parse a CDP key file: `{"name": ..., "privateKey": ...}` (`id` accepted for `name`).
    pub fn from_json(text: &str, source: &str) -> Result<Self, CredentialsError> {
        #[derive(serde::Deserialize)]
        struct KeyFile {
            name: Option<String>,
            id: Option<String>,
            #[serde(rename = "privateKey", alias = "private_key")]
            private_key: Option<String>,
        }
        // serde_json's error text quotes no input values, but never show it anyway: the file
        // holds the private key.
        let file: KeyFile = serde_json::from_str(text).map_err(|e| {
            CredentialsError::Unreadable(format!(
                "{source}: not a JSON object with name and privateKey (line {}, column {})",
                e.line(),
                e.column()
            ))
        })?;
        let name = file
            .name
            .or(file.id)
            .ok_or_else(|| CredentialsError::Incomplete(format!("{source}: no \"name\" (or \"id\") field")))?;
        let private_key = file
            .private_key
            .map(Zeroizing::new)
            .ok_or_else(|| CredentialsError::Incomplete(format!("{source}: no \"privateKey\" field")))?;
        Self::parse(&name, &private_key, source)
    }

    pub fn key_name(&self) -> &str {
        &self.key_name
    }

    pub fn algorithm(&self) -> KeyAlgorithm {
        match self.key {
            SigningKey::Es256(_) => KeyAlgorithm::Es256,
            SigningKey::EdDsa(_) => KeyAlgorithm::EdDsa,
        }
    }

    /// Where the credentials came from (an environment variable name or a file path).
    pub fn source(&self) -> &str {
        &self.source
    }

    pub(crate) fn signing_key(&self) -> &SigningKey {
        &self.key
    }
}

/// Parse an EC P-256 (SEC1 or PKCS#8 PEM) or Ed25519 (base64 of 64 or 32 bytes, or PKCS#8
/// PEM) private key. Errors describe the shape expected, never the input.
fn parse_private_key(text: &str) -> Result<SigningKey, String> {
    // Keys pasted into environment variables often carry literal "\n" sequences.
    let text = Zeroizing::new(if text.contains("-----BEGIN") && text.contains("\\n") {
        text.replace("\\n", "\n")
    } else {
        text.to_string()
    });
    let text = Zeroizing::new(text.trim().trim_matches('"').trim().to_string());
    if text.is_empty() {
        return Err("the private key is empty".into());
    }
    if text.contains("-----BEGIN EC PRIVATE KEY-----") {
        let secret = p256::SecretKey::from_sec1_pem(&text)
            .map_err(|_| "the EC PRIVATE KEY PEM is not a valid P-256 (prime256v1) key".to_string())?;
        return Ok(SigningKey::Es256(p256::ecdsa::SigningKey::from(secret)));
    }
    if text.contains("-----BEGIN PRIVATE KEY-----") {
        use p256::pkcs8::DecodePrivateKey as _;
        if let Ok(secret) = p256::SecretKey::from_pkcs8_pem(&text) {
            return Ok(SigningKey::Es256(p256::ecdsa::SigningKey::from(secret)));
        }
        if let Ok(key) = ed25519_dalek::SigningKey::from_pkcs8_pem(&text) {
            return Ok(SigningKey::EdDsa(key));
        }
        return Err("the PKCS#8 PRIVATE KEY PEM is neither a P-256 nor an Ed25519 key".into());
    }
    if text.contains("-----BEGIN") {
        return Err("unsupported PEM block: expected \"EC PRIVATE KEY\" (P-256) or \"PRIVATE KEY\" (PKCS#8)".into());
    }
    let compact: Zeroizing<String> = Zeroizing::new(text.chars().filter(|c| !c.is_whitespace()).collect());
    let bytes = Zeroizing::new(BASE64.decode(compact.as_bytes()).map_err(|_| {
        "the private key is neither a PEM block nor base64 (an Ed25519 key is base64 of 64 bytes)".to_string()
    })?);
    match bytes.len() {
        64 => {
            let mut pair = Zeroizing::new([0u8; 64]);
            pair.copy_from_slice(&bytes);
            ed25519_dalek::SigningKey::from_keypair_bytes(&pair)
                .map(SigningKey::EdDsa)
                .map_err(|_| "the 64-byte Ed25519 key's public half does not match its seed".to_string())
        }
        32 => {
            let mut seed = Zeroizing::new([0u8; 32]);
            seed.copy_from_slice(&bytes);
            Ok(SigningKey::EdDsa(ed25519_dalek::SigningKey::from_bytes(&seed)))
        }
        n => Err(format!(
            "the base64 private key decodes to {n} bytes; an Ed25519 key has 64 (seed and public key) or 32"
        )),
    }
}

/// File name of a CDP key file inside a credentials folder.
pub const KEY_FILE: &str = "cdp_api_key.json";
pub const ENV_KEY: &str = "COINBASE_CDP_API_KEY";
pub const ENV_PRIVATE_KEY: &str = "COINBASE_CDP_PRIVATE_KEY";

/// Where to look for credentials.
#[derive(Debug, Clone, Default)]
pub struct CredentialSources {
    /// A folder (a mounted Kubernetes Secret); when set it must hold the credentials.
    pub dir: Option<PathBuf>,
    /// Prefer the `COINBASE_SANDBOX_*` variables.
    pub sandbox: bool,
}

impl CredentialSources {
    /// The folder from the flag (or COINBASE_CREDENTIALS_DIR, which clap already read) and
    /// the sandbox switch from COINBASE_SANDBOX.
    pub fn from_env(dir: Option<PathBuf>) -> Self {
        let sandbox = std::env::var("COINBASE_SANDBOX")
            .map(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
            .unwrap_or(false);
        Self { dir, sandbox }
    }

    /// Load credentials: from the folder when one is given, else from the environment
    /// (`lookup`). `Ok(None)` means none are configured at all.
    pub fn load(&self, lookup: impl Fn(&str) -> Option<String>) -> Result<Option<Credentials>, CredentialsError> {
        if let Some(dir) = &self.dir {
            return load_dir(dir).map(Some);
        }
        let lookup = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let prefixes: &[&str] = if self.sandbox {
            &["COINBASE_SANDBOX_CDP_", "COINBASE_CDP_"]
        } else {
            &["COINBASE_PROD_CDP_", "COINBASE_CDP_"]
        };
        for prefix in prefixes {
            let key_var = format!("{prefix}API_KEY");
            let secret_var = format!("{prefix}PRIVATE_KEY");
            match (lookup(&key_var), lookup(&secret_var).map(Zeroizing::new)) {
                (Some(name), Some(secret)) => {
                    return Credentials::parse(&name, &secret, &format!("{key_var}/{secret_var}")).map(Some);
                }
                (Some(_), None) => {
                    return Err(CredentialsError::Incomplete(format!(
                        "{key_var} is set but {secret_var} is not"
                    )));
                }
                (None, Some(_)) => {
                    return Err(CredentialsError::Incomplete(format!(
                        "{secret_var} is set but {key_var} is not"
                    )));
                }
                (None, None) => {}
            }
        }
        Ok(None)
    }
}

fn read_secret_file(path: &Path) -> Result<Zeroizing<String>, CredentialsError> {
    let bytes = std::fs::read(path)
        .map_err(|e| CredentialsError::Unreadable(format!("{}: cannot read ({})", path.display(), e.kind())))?;
    if bytes.len() > 64 * 1024 {
        return Err(CredentialsError::Invalid(format!(
            "{}: too large for a key file",
            path.display()
        )));
    }
    String::from_utf8(bytes)
        .map(Zeroizing::new)
        .map_err(|_| CredentialsError::Invalid(format!("{}: not UTF-8 text", path.display())))
}

/// A mounted Secret: `cdp_api_key.json`, or files named like the environment variables.
fn load_dir(dir: &Path) -> Result<Credentials, CredentialsError> {
    if !dir.is_dir() {
        return Err(CredentialsError::Unreadable(format!(
            "credentials folder {} does not exist or is not a folder",
            dir.display()
        )));
    }
    let json = dir.join(KEY_FILE);
    if json.is_file() {
        let text = read_secret_file(&json)?;
        return Credentials::from_json(&text, &json.display().to_string());
    }
    let key_path = dir.join(ENV_KEY);
    let secret_path = dir.join(ENV_PRIVATE_KEY);
    match (key_path.is_file(), secret_path.is_file()) {
        (true, true) => {
            let name = read_secret_file(&key_path)?;
            let secret = read_secret_file(&secret_path)?;
            Credentials::parse(
                &name,
                &secret,
                &format!("{}/{{{ENV_KEY},{ENV_PRIVATE_KEY}}}", dir.display()),
            )
        }
        (true, false) | (false, true) => Err(CredentialsError::Incomplete(format!(
            "credentials folder {} needs both {ENV_KEY} and {ENV_PRIVATE_KEY} files",
            dir.display()
        ))),
        (false, false) => Err(CredentialsError::Incomplete(format!(
            "credentials folder {} holds neither {KEY_FILE} nor {ENV_KEY} and {ENV_PRIVATE_KEY} files",
            dir.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::pkcs8::{EncodePrivateKey, LineEnding};

    fn es256_pem() -> String {
        let secret = p256::SecretKey::random(&mut rand::rngs::OsRng);
        secret.to_sec1_pem(LineEnding::LF).unwrap().to_string()
    }

    #[test]
    fn parses_every_supported_key_shape() {
        let sec1 = es256_pem();
        assert_eq!(
            Credentials::parse("k", &sec1, "t").unwrap().algorithm(),
            KeyAlgorithm::Es256
        );
        let escaped = sec1.replace('\n', "\\n");
        assert_eq!(
            Credentials::parse("k", &escaped, "t").unwrap().algorithm(),
            KeyAlgorithm::Es256
        );
        let p8 = p256::SecretKey::random(&mut rand::rngs::OsRng)
            .to_pkcs8_pem(LineEnding::LF)
            .unwrap()
            .to_string();
        assert_eq!(
            Credentials::parse("k", &p8, "t").unwrap().algorithm(),
            KeyAlgorithm::Es256
        );
        let ed = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
        let b64 = BASE64.encode(ed.to_keypair_bytes());
        assert_eq!(
            Credentials::parse("k", &b64, "t").unwrap().algorithm(),
            KeyAlgorithm::EdDsa
        );
        let seed = BASE64.encode(ed.to_bytes());
        assert_eq!(
            Credentials::parse("k", &seed, "t").unwrap().algorithm(),
            KeyAlgorithm::EdDsa
        );
        let ed_p8 = ed.to_pkcs8_pem(LineEnding::LF).unwrap().to_string();
        assert_eq!(
            Credentials::parse("k", &ed_p8, "t").unwrap().algorithm(),
            KeyAlgorithm::EdDsa
        );
    }

    #[test]
    fn errors_and_debug_never_show_the_key() {
        let pem = es256_pem();
        let creds = Credentials::parse("organizations/o/apiKeys/k", &pem, "env").unwrap();
        let debug = format!("{creds:?}");
        assert!(debug.contains("redacted") && !debug.contains("BEGIN"));
        let body: String = pem.lines().nth(1).unwrap().to_string();
        let broken = pem.replace(&body[..10], "AAAAAAAAAA");
        for bad in [broken.as_str(), "c2VjcmV0LXNlY3JldC1zZWNyZXQ=", "not a key at all", ""] {
            let err = Credentials::parse("k", bad, "COINBASE_CDP_PRIVATE_KEY")
                .err()
                .unwrap()
                .to_string();
            assert!(err.contains("COINBASE_CDP_PRIVATE_KEY"), "{err}");
            assert!(!err.contains(&body[10..30]) && !err.contains("c2VjcmV0"), "{err}");
        }
        let swapped = Credentials::parse(&pem, &pem, "env").err().unwrap().to_string();
        assert!(
            swapped.contains("swapped") && !swapped.contains(&body[10..30]),
            "{swapped}"
        );
    }

    #[test]
    fn environment_lookup_prefers_prod_and_sandbox_variants_and_flags_half_configs() {
        let pem = es256_pem();
        let env = |vars: Vec<(&'static str, String)>| {
            move |name: &str| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone())
        };
        let sources = CredentialSources::default();
        assert!(sources.load(env(vec![])).unwrap().is_none());
        let both = env(vec![
            ("COINBASE_CDP_API_KEY", "generic".into()),
            ("COINBASE_CDP_PRIVATE_KEY", pem.clone()),
            ("COINBASE_PROD_CDP_API_KEY", "prod".into()),
            ("COINBASE_PROD_CDP_PRIVATE_KEY", pem.clone()),
            ("COINBASE_SANDBOX_CDP_API_KEY", "sandbox".into()),
            ("COINBASE_SANDBOX_CDP_PRIVATE_KEY", pem.clone()),
        ]);
        assert_eq!(sources.load(&both).unwrap().unwrap().key_name(), "prod");
        let sandbox = CredentialSources {
            dir: None,
            sandbox: true,
        };
        assert_eq!(sandbox.load(&both).unwrap().unwrap().key_name(), "sandbox");
        let half = env(vec![("COINBASE_CDP_API_KEY", "generic".into())]);
        let err = sources.load(half).err().unwrap();
        assert!(matches!(err, CredentialsError::Incomplete(_)) && err.to_string().contains("credentials"));
    }

    #[test]
    fn folders_hold_a_key_file_or_two_files() {
        let pem = es256_pem();
        let dir = tempfile::tempdir().unwrap();
        let sources = CredentialSources {
            dir: Some(dir.path().to_path_buf()),
            sandbox: false,
        };
        assert!(matches!(sources.load(|_| None), Err(CredentialsError::Incomplete(_))));
        std::fs::write(dir.path().join(ENV_KEY), "organizations/o/apiKeys/k\n").unwrap();
        assert!(matches!(sources.load(|_| None), Err(CredentialsError::Incomplete(_))));
        std::fs::write(dir.path().join(ENV_PRIVATE_KEY), &pem).unwrap();
        assert_eq!(
            sources.load(|_| None).unwrap().unwrap().key_name(),
            "organizations/o/apiKeys/k"
        );
        let json = serde_json::json!({ "id": "from-id", "privateKey": pem }).to_string();
        std::fs::write(dir.path().join(KEY_FILE), json).unwrap();
        assert_eq!(sources.load(|_| None).unwrap().unwrap().key_name(), "from-id");
        std::fs::write(dir.path().join(KEY_FILE), "{\"name\": \"x\", \"privateKey\": 12").unwrap();
        let err = sources.load(|_| None).err().unwrap().to_string();
        assert!(err.contains(KEY_FILE), "{err}");
    }
}
