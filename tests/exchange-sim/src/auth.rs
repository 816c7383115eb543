//! CDP JWT verification (REST `Authorization: Bearer`, WebSocket `jwt` field).

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::Value;

use crate::keys::{KeyRegistry, RegisteredKey};

/// Expected `iss` claim.
const ISSUER: &str = "cdp";
/// Longest accepted token lifetime (`exp - nbf`), before leeway.
const MAX_LIFETIME_SECS: i64 = 120;

/// Why a token was refused. The reason string is counted in `/admin/stats` and logged at
/// debug level; clients only ever see `401 Unauthorized`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    #[error("missing Authorization header")]
    MissingHeader,
    #[error("Authorization header is not `Bearer <jwt>`")]
    MalformedHeader,
    #[error("token is not a decodable JWT")]
    MalformedToken,
    #[error("unsupported alg (need ES256 or EdDSA)")]
    UnsupportedAlgorithm,
    #[error("typ header is not JWT")]
    WrongType,
    #[error("kid header missing")]
    MissingKid,
    #[error("nonce header missing")]
    MissingNonce,
    #[error("kid is not a registered key")]
    UnknownKey,
    #[error("alg does not match the registered key type")]
    AlgorithmMismatch,
    #[error("signature verification failed")]
    BadSignature,
    #[error("iss is not cdp")]
    WrongIssuer,
    #[error("sub missing or different from kid")]
    SubjectMismatch,
    #[error("nbf or exp claim missing or not a number")]
    MissingTimeClaims,
    #[error("nbf is in the future")]
    NotYetValid,
    #[error("token expired")]
    Expired,
    #[error("exp - nbf exceeds 120 s")]
    LifetimeTooLong,
    #[error("uri claim missing")]
    MissingUri,
    #[error("uri claim does not match the request")]
    UriMismatch,
    #[error("request has no Host header")]
    MissingHost,
}

impl AuthFailure {
    /// Stable snake_case label for statistics.
    pub fn label(self) -> &'static str {
        match self {
            AuthFailure::MissingHeader => "missing_header",
            AuthFailure::MalformedHeader => "malformed_header",
            AuthFailure::MalformedToken => "malformed_token",
            AuthFailure::UnsupportedAlgorithm => "unsupported_alg",
            AuthFailure::WrongType => "wrong_typ",
            AuthFailure::MissingKid => "missing_kid",
            AuthFailure::MissingNonce => "missing_nonce",
            AuthFailure::UnknownKey => "unknown_key",
            AuthFailure::AlgorithmMismatch => "alg_mismatch",
            AuthFailure::BadSignature => "bad_signature",
            AuthFailure::WrongIssuer => "wrong_iss",
            AuthFailure::SubjectMismatch => "sub_mismatch",
            AuthFailure::MissingTimeClaims => "missing_time_claims",
            AuthFailure::NotYetValid => "nbf_in_future",
            AuthFailure::Expired => "expired",
            AuthFailure::LifetimeTooLong => "lifetime_too_long",
            AuthFailure::MissingUri => "missing_uri",
            AuthFailure::UriMismatch => "uri_mismatch",
            AuthFailure::MissingHost => "missing_host",
        }
    }
}

/// What a request must match: `Some("GET 127.0.0.1:8080/api/v3/brokerage/accounts")` for REST,
/// `None` for WebSocket tokens (which carry no `uri`).
pub struct Expectation<'a> {
    pub uri: Option<&'a str>,
    pub now_secs: i64,
    pub leeway_secs: i64,
}

/// Extracts the token from an `Authorization` header value.
pub fn bearer_token(header: Option<&str>) -> Result<&str, AuthFailure> {
    let value = header.ok_or(AuthFailure::MissingHeader)?;
    let token = value
        .strip_prefix("Bearer ")
        .ok_or(AuthFailure::MalformedHeader)?
        .trim();
    if token.is_empty() {
        return Err(AuthFailure::MalformedHeader);
    }
    Ok(token)
}

/// Verifies a CDP JWT and returns the key it was signed with.
pub fn verify(registry: &KeyRegistry, token: &str, expect: &Expectation<'_>) -> Result<RegisteredKey, AuthFailure> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| AuthFailure::MalformedToken)?;
    if !matches!(header.alg, Algorithm::ES256 | Algorithm::EdDSA) {
        return Err(AuthFailure::UnsupportedAlgorithm);
    }
    if header.typ.as_deref() != Some("JWT") {
        return Err(AuthFailure::WrongType);
    }
    let kid = header
        .kid
        .as_deref()
        .filter(|k| !k.is_empty())
        .ok_or(AuthFailure::MissingKid)?;
    if header.nonce.as_deref().is_none_or(str::is_empty) {
        return Err(AuthFailure::MissingNonce);
    }
    let key = registry.get(kid).ok_or(AuthFailure::UnknownKey)?;
    if key.algorithm.jwt_algorithm() != header.alg {
        return Err(AuthFailure::AlgorithmMismatch);
    }

    // Signature only: every claim is checked below so each failure has its own reason.
    let mut validation = Validation::new(header.alg);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    let claims = jsonwebtoken::decode::<Value>(token, &key.decoding_key, &validation)
        .map_err(|e| match e.kind() {
            ErrorKind::InvalidSignature | ErrorKind::InvalidEcdsaKey | ErrorKind::InvalidEddsaKey => {
                AuthFailure::BadSignature
            }
            _ => AuthFailure::MalformedToken,
        })?
        .claims;

    if claims.get("iss").and_then(Value::as_str) != Some(ISSUER) {
        return Err(AuthFailure::WrongIssuer);
    }
    if claims.get("sub").and_then(Value::as_str) != Some(kid) {
        return Err(AuthFailure::SubjectMismatch);
    }
    let nbf = time_claim(&claims, "nbf").ok_or(AuthFailure::MissingTimeClaims)?;
    let exp = time_claim(&claims, "exp").ok_or(AuthFailure::MissingTimeClaims)?;
    if nbf > expect.now_secs.saturating_add(expect.leeway_secs) {
        return Err(AuthFailure::NotYetValid);
    }
    if exp <= expect.now_secs {
        return Err(AuthFailure::Expired);
    }
    if exp.saturating_sub(nbf) > MAX_LIFETIME_SECS + expect.leeway_secs {
        return Err(AuthFailure::LifetimeTooLong);
    }
    if let Some(expected_uri) = expect.uri {
        let uri = claims
            .get("uri")
            .and_then(Value::as_str)
            .ok_or(AuthFailure::MissingUri)?;
        if uri != expected_uri {
            return Err(AuthFailure::UriMismatch);
        }
    }
    Ok(key.clone())
}

/// Reads a numeric date claim as whole seconds (integers, or floats from lenient signers).
fn time_claim(claims: &Value, name: &str) -> Option<i64> {
    let value = claims.get(name)?;
    value.as_i64().or_else(|| {
        value
            .as_f64()
            .filter(|f| f.is_finite() && f.abs() < 1e15)
            .map(|f| f.floor() as i64)
    })
}
