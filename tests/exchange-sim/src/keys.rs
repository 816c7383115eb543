//! API key registry and key generation for tests.

use std::collections::HashMap;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use jsonwebtoken::{Algorithm, DecodingKey};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::pkcs8::{DecodePublicKey, EncodePublicKey, LineEnding};
use rand::rngs::OsRng;
use serde::{Deserialize, Serialize};

use crate::config::{KeySpec, Permissions};

/// Signature algorithm of a CDP API key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KeyAlgorithm {
    /// ECDSA P-256 with SHA-256 (`ES256`), the classic CDP key.
    #[serde(rename = "ES256")]
    Es256,
    /// Ed25519 (`EdDSA`), issued by newer CDP key flows.
    #[serde(rename = "EdDSA")]
    EdDsa,
}

impl KeyAlgorithm {
    pub fn jwt_algorithm(self) -> Algorithm {
        match self {
            KeyAlgorithm::Es256 => Algorithm::ES256,
            KeyAlgorithm::EdDsa => Algorithm::EdDSA,
        }
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyAlgorithm::Es256 => "ES256",
            KeyAlgorithm::EdDsa => "EdDSA",
        })
    }
}

/// A freshly generated key pair, shaped like what CDP hands out.
#[derive(Debug, Clone)]
pub struct GeneratedKey {
    /// `organizations/{uuid}/apiKeys/{uuid}`.
    pub name: String,
    pub algorithm: KeyAlgorithm,
    /// ES256: SEC1 PEM (`-----BEGIN EC PRIVATE KEY-----`), as Coinbase issues it.
    /// EdDSA: base64 of the 64 bytes `seed || public key`, as CDP issues it.
    pub private_key_pem: String,
    /// SPKI PEM (`-----BEGIN PUBLIC KEY-----`) to register with the simulator.
    pub public_key_pem: String,
}

impl GeneratedKey {
    /// A [`KeySpec`] for this key with default permissions and balances.
    pub fn key_spec(&self) -> KeySpec {
        KeySpec::new(self.name.clone(), self.public_key_pem.clone())
    }

    /// The CDP key file a user downloads: `{"name": ..., "privateKey": ...}`.
    pub fn cdp_key_json(&self) -> String {
        serde_json::json!({ "name": self.name, "privateKey": self.private_key_pem }).to_string()
    }
}

/// Generates a key pair with the operating system's RNG.
pub fn generate_key(algorithm: KeyAlgorithm) -> GeneratedKey {
    let name = format!(
        "organizations/{}/apiKeys/{}",
        uuid::Uuid::new_v4(),
        uuid::Uuid::new_v4()
    );
    let (private_key_pem, public_key_pem) = match algorithm {
        KeyAlgorithm::Es256 => {
            let secret = p256::SecretKey::random(&mut OsRng);
            let private = sec1_pem_with_curve(&secret);
            let public = secret
                .public_key()
                .to_public_key_pem(LineEnding::LF)
                .unwrap_or_default();
            (private, public)
        }
        KeyAlgorithm::EdDsa => {
            let signing = ed25519_dalek::SigningKey::generate(&mut OsRng);
            let private = BASE64.encode(signing.to_keypair_bytes());
            let public = signing
                .verifying_key()
                .to_public_key_pem(LineEnding::LF)
                .unwrap_or_default();
            (private, public)
        }
    };
    GeneratedKey {
        name,
        algorithm,
        private_key_pem,
        public_key_pem,
    }
}

/// OID 1.2.840.10045.3.1.7 (prime256v1), DER-encoded.
const PRIME256V1: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// The SEC1 `EC PRIVATE KEY` PEM as Coinbase (and OpenSSL) write it: version, private key, the
/// named curve (`[0]`, which OpenSSL and Python's `cryptography` need to load it) and the
/// public key (`[1]`).
fn sec1_pem_with_curve(secret: &p256::SecretKey) -> String {
    let private = secret.to_bytes();
    let public = secret.public_key().to_encoded_point(false);
    let mut body = vec![0x02, 0x01, 0x01, 0x04, 0x20];
    body.extend_from_slice(&private);
    body.extend_from_slice(&[0xa0, PRIME256V1.len() as u8]);
    body.extend_from_slice(&PRIME256V1);
    body.extend_from_slice(&[0xa1, 0x44, 0x03, 0x42, 0x00]);
    body.extend_from_slice(public.as_bytes());
    let mut der = vec![0x30, body.len() as u8];
    der.extend(body);
    let encoded = BASE64.encode(der);
    let lines: Vec<&str> = encoded
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect();
    format!(
        "-----BEGIN EC PRIVATE KEY-----\n{}\n-----END EC PRIVATE KEY-----\n",
        lines.join("\n")
    )
}

/// Why a key could not be registered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("key name must not be empty")]
    EmptyName,
    #[error("public_key_pem is not an SPKI PEM P-256 or Ed25519 public key")]
    BadPublicKey,
}

/// A registered key with its parsed verification key.
#[derive(Clone)]
pub struct RegisteredKey {
    pub name: String,
    pub algorithm: KeyAlgorithm,
    pub permissions: Permissions,
    pub portfolio_uuid: String,
    pub portfolio_type: String,
    pub decoding_key: DecodingKey,
}

impl fmt::Debug for RegisteredKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegisteredKey")
            .field("name", &self.name)
            .field("algorithm", &self.algorithm)
            .field("permissions", &self.permissions)
            .field("portfolio_uuid", &self.portfolio_uuid)
            .finish_non_exhaustive()
    }
}

/// Parses an SPKI PEM public key into its algorithm and a verification key.
pub fn parse_public_key(pem: &str) -> Result<(KeyAlgorithm, DecodingKey), KeyError> {
    if let Ok(key) = p256::PublicKey::from_public_key_pem(pem) {
        let point = key.to_encoded_point(false);
        return Ok((KeyAlgorithm::Es256, DecodingKey::from_ec_der(point.as_bytes())));
    }
    if let Ok(key) = ed25519_dalek::VerifyingKey::from_public_key_pem(pem) {
        return Ok((KeyAlgorithm::EdDsa, DecodingKey::from_ed_der(key.as_bytes())));
    }
    Err(KeyError::BadPublicKey)
}

/// Registered keys by name.
#[derive(Debug, Default)]
pub struct KeyRegistry {
    keys: HashMap<String, RegisteredKey>,
}

impl KeyRegistry {
    /// Adds or replaces a key; `portfolio_uuid` is the portfolio the key trades from.
    pub fn insert(&mut self, spec: &KeySpec, portfolio_uuid: String) -> Result<(), KeyError> {
        if spec.name.trim().is_empty() {
            return Err(KeyError::EmptyName);
        }
        let (algorithm, decoding_key) = parse_public_key(&spec.public_key_pem)?;
        self.keys.insert(
            spec.name.clone(),
            RegisteredKey {
                name: spec.name.clone(),
                algorithm,
                permissions: spec.permissions,
                portfolio_uuid,
                portfolio_type: spec.portfolio_type.clone(),
                decoding_key,
            },
        );
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&RegisteredKey> {
        self.keys.get(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_back() {
        for alg in [KeyAlgorithm::Es256, KeyAlgorithm::EdDsa] {
            let key = generate_key(alg);
            let (parsed, _) = parse_public_key(&key.public_key_pem).unwrap();
            assert_eq!(parsed, alg);
        }
        let es = generate_key(KeyAlgorithm::Es256);
        assert!(es.private_key_pem.starts_with("-----BEGIN EC PRIVATE KEY-----"));
        // The SEC1 key names its curve, as OpenSSL writes it (other clients need that), and
        // round-trips to the same key pair.
        let der = BASE64
            .decode(
                es.private_key_pem
                    .lines()
                    .filter(|l| !l.starts_with("-----"))
                    .collect::<String>(),
            )
            .unwrap();
        assert_eq!(der.len(), 121);
        assert!(der.windows(PRIME256V1.len()).any(|w| w == PRIME256V1));
        let secret = p256::SecretKey::from_sec1_pem(&es.private_key_pem).unwrap();
        assert_eq!(
            secret.public_key().to_public_key_pem(LineEnding::LF).unwrap(),
            es.public_key_pem
        );
        let ed = generate_key(KeyAlgorithm::EdDsa);
        assert_eq!(BASE64.decode(&ed.private_key_pem).unwrap().len(), 64);
    }

    #[test]
    fn rejects_garbage_keys() {
        assert_eq!(parse_public_key("not a key").err(), Some(KeyError::BadPublicKey));
    }
}
