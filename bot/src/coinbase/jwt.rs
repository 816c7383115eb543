//! CDP JWTs: one per REST request (with the `uri` claim) and per WebSocket subscribe (without).
//!
//! Header `{alg, kid, nonce, typ}`, claims `{iss: "cdp", sub, nbf, exp = nbf + 120, uri}`,
//! signed with ECDSA P-256 (JWS `r || s`) or Ed25519. The clock offset models clock skew
//! (and lets tests sign expired or not-yet-valid tokens); the host override signs for a
//! different host than the one the request goes to.

use super::credentials::{Credentials, SigningKey};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use rand::RngCore as _;
use serde_json::json;
use std::fmt;
use std::sync::Arc;

/// Lifetime of a token in seconds (Coinbase's maximum).
pub const TOKEN_LIFETIME_SECS: i64 = 120;

#[derive(Clone)]
pub struct JwtSigner {
    credentials: Arc<Credentials>,
    clock_offset_secs: i64,
    host_override: Option<String>,
}

impl fmt::Debug for JwtSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtSigner")
            .field("credentials", &self.credentials)
            .field("clock_offset_secs", &self.clock_offset_secs)
            .field("host_override", &self.host_override)
            .finish()
    }
}

impl JwtSigner {
    pub fn new(credentials: Arc<Credentials>) -> Self {
        Self {
            credentials,
            clock_offset_secs: 0,
            host_override: None,
        }
    }

    /// Seconds added to the local clock when stamping `nbf`/`exp`.
    pub fn with_clock_offset(mut self, seconds: i64) -> Self {
        self.clock_offset_secs = seconds;
        self
    }

    /// Sign REST requests for this host instead of the request's own.
    pub fn with_host_override(mut self, host: Option<String>) -> Self {
        self.host_override = host;
        self
    }

    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// A token for `METHOD host/path` (path without the query string).
    pub fn rest_token(&self, method: &str, host: &str, path: &str) -> String {
        let host = self.host_override.as_deref().unwrap_or(host);
        let path = path.split('?').next().unwrap_or_default();
        self.token(Some(format!("{} {host}{path}", method.to_ascii_uppercase())))
    }

    /// A token for WebSocket subscribe messages (no `uri`).
    pub fn ws_token(&self) -> String {
        self.token(None)
    }

    fn token(&self, uri: Option<String>) -> String {
        let now = crate::clock::unix_seconds().saturating_add(self.clock_offset_secs);
        let mut nonce = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut nonce);
        let name = self.credentials.key_name();
        let header = json!({
            "alg": self.credentials.algorithm().jwt_alg(),
            "kid": name,
            "nonce": hex::encode(nonce),
            "typ": "JWT",
        });
        let mut claims = json!({
            "iss": "cdp",
            "sub": name,
            "nbf": now,
            "exp": now.saturating_add(TOKEN_LIFETIME_SECS),
        });
        if let (Some(uri), Some(map)) = (uri, claims.as_object_mut()) {
            map.insert("uri".into(), uri.into());
        }
        let signing_input = format!(
            "{}.{}",
            B64URL.encode(header.to_string()),
            B64URL.encode(claims.to_string())
        );
        let signature = match self.credentials.signing_key() {
            SigningKey::Es256(key) => {
                use p256::ecdsa::signature::Signer as _;
                let signature: p256::ecdsa::Signature = key.sign(signing_input.as_bytes());
                signature.to_bytes().to_vec()
            }
            SigningKey::EdDsa(key) => {
                use ed25519_dalek::Signer as _;
                key.sign(signing_input.as_bytes()).to_bytes().to_vec()
            }
        };
        format!("{signing_input}.{}", B64URL.encode(signature))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::pkcs8::LineEnding;

    fn decode(part: &str) -> serde_json::Value {
        serde_json::from_slice(&B64URL.decode(part).unwrap()).unwrap()
    }

    #[test]
    fn tokens_carry_the_cdp_claims_and_verify() {
        let secret = p256::SecretKey::random(&mut rand::rngs::OsRng);
        let pem = secret.to_sec1_pem(LineEnding::LF).unwrap();
        let creds = Arc::new(Credentials::parse("organizations/o/apiKeys/k", &pem, "t").unwrap());
        let signer = JwtSigner::new(creds).with_clock_offset(-30);
        let token = signer.rest_token("get", "api.coinbase.com", "/api/v3/brokerage/accounts?limit=5");
        let parts: Vec<&str> = token.split('.').collect();
        let (header, claims) = (decode(parts[0]), decode(parts[1]));
        assert_eq!(header["alg"], "ES256");
        assert_eq!(header["kid"], "organizations/o/apiKeys/k");
        assert_eq!(header["nonce"].as_str().unwrap().len(), 32);
        assert_eq!(claims["uri"], "GET api.coinbase.com/api/v3/brokerage/accounts");
        assert_eq!(claims["exp"].as_i64().unwrap() - claims["nbf"].as_i64().unwrap(), 120);
        assert!((claims["nbf"].as_i64().unwrap() - (crate::clock::unix_seconds() - 30)).abs() <= 2);
        let signature = p256::ecdsa::Signature::from_slice(&B64URL.decode(parts[2]).unwrap()).unwrap();
        use p256::ecdsa::signature::Verifier as _;
        p256::ecdsa::VerifyingKey::from(secret.public_key())
            .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
            .unwrap();
        assert!(
            decode(signer.ws_token().split('.').nth(1).unwrap())
                .get("uri")
                .is_none()
        );
        let other = signer.clone().with_host_override(Some("evil.example".into()));
        let claims = decode(
            other
                .rest_token("POST", "api.coinbase.com", "/x")
                .split('.')
                .nth(1)
                .unwrap(),
        );
        assert_eq!(claims["uri"], "POST evil.example/x");
    }
}
