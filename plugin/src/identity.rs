//! Who is asking, for the audit note: `TRADINGBOT_USER` when set; else the API server's own
//! answer (SelfSubjectReview, Kubernetes 1.27+); else what the kubeconfig says (the impersonated
//! user, the client certificate's common name, which is the Kubernetes user name for certificate
//! authentication, or the kubeconfig user entry's name).

use base64::Engine;
use kube::Client;
use kube::config::{Kubeconfig, NamedAuthInfo};
use serde_json::{Value, json};

/// Overrides every other source (CI jobs, shared break-glass accounts).
pub const USER_ENV: &str = "TRADINGBOT_USER";

pub async fn requester(client: &Client) -> String {
    if let Ok(user) = std::env::var(USER_ENV)
        && !user.trim().is_empty()
    {
        return user.trim().to_string();
    }
    if let Some(user) = self_subject_review(client).await {
        return user;
    }
    Kubeconfig::read()
        .ok()
        .and_then(|config| from_kubeconfig(&config))
        .unwrap_or_else(|| format!("unknown (local user {})", local_user()))
}

fn local_user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "?".into())
}

/// The API server's view of who we are, where it can say (authentication.k8s.io v1 or v1beta1).
async fn self_subject_review(client: &Client) -> Option<String> {
    for version in ["v1", "v1beta1"] {
        let body = json!({"apiVersion": format!("authentication.k8s.io/{version}"), "kind": "SelfSubjectReview"});
        let request = http::Request::post(format!("/apis/authentication.k8s.io/{version}/selfsubjectreviews"))
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&body).ok()?)
            .ok()?;
        if let Ok(answer) = client.request::<Value>(request).await
            && let Some(user) = answer.pointer("/status/userInfo/username").and_then(Value::as_str)
        {
            return Some(user.to_string());
        }
    }
    None
}

fn current_user(config: &Kubeconfig) -> Option<&NamedAuthInfo> {
    let context = config.current_context.as_deref()?;
    let user = config
        .contexts
        .iter()
        .find(|c| c.name == context)?
        .context
        .as_ref()?
        .user
        .clone()?;
    config.auth_infos.iter().find(|a| a.name == user)
}

/// The user a kubeconfig authenticates as, as far as it can tell.
pub fn from_kubeconfig(config: &Kubeconfig) -> Option<String> {
    let named = current_user(config)?;
    let info = named.auth_info.as_ref();
    if let Some(user) = info.and_then(|i| i.impersonate.clone()) {
        return Some(user);
    }
    let pem = info
        .and_then(|i| i.client_certificate_data.as_ref())
        .and_then(|data| base64::engine::general_purpose::STANDARD.decode(data.trim()).ok());
    let pem = pem.or_else(|| {
        info.and_then(|i| i.client_certificate.as_ref())
            .and_then(|path| std::fs::read(path).ok())
    });
    if let Some(cn) = pem.as_deref().and_then(certificate_common_name) {
        return Some(cn);
    }
    Some(named.name.clone())
}

/// The subject common name of the first certificate of a PEM bundle.
pub fn certificate_common_name(pem: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(pem).ok()?;
    let begin = text.find("-----BEGIN CERTIFICATE-----")? + "-----BEGIN CERTIFICATE-----".len();
    let end = begin + text[begin..].find("-----END CERTIFICATE-----")?;
    let body: String = text[begin..end].chars().filter(|c| !c.is_whitespace()).collect();
    let der = base64::engine::general_purpose::STANDARD.decode(body).ok()?;
    der::subject_common_name(&der)
}

/// Just enough DER to walk an X.509 certificate to its subject's common name.
mod der {
    /// One TLV: (tag, content) and the rest of the input.
    fn next(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, rest) = input.split_first()?;
        let (&first, mut rest) = rest.split_first()?;
        let length = if first < 0x80 {
            usize::from(first)
        } else {
            let bytes = usize::from(first & 0x7f);
            if bytes == 0 || bytes > 4 || rest.len() < bytes {
                return None;
            }
            let (len, after) = rest.split_at(bytes);
            rest = after;
            len.iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
        };
        (rest.len() >= length).then(|| (tag, &rest[..length], &rest[length..]))
    }

    const SEQUENCE: u8 = 0x30;
    const SET: u8 = 0x31;
    const CONTEXT_0: u8 = 0xa0;
    /// 2.5.4.3, commonName.
    const COMMON_NAME: [u8; 3] = [0x55, 0x04, 0x03];

    pub fn subject_common_name(der: &[u8]) -> Option<String> {
        let (SEQUENCE, certificate, _) = next(der)? else {
            return None;
        };
        let (SEQUENCE, tbs, _) = next(certificate)? else {
            return None;
        };
        let mut rest = tbs;
        let (tag, _, after) = next(rest)?;
        if tag == CONTEXT_0 {
            rest = after; // version
        }
        // serialNumber, signature, issuer, validity, then subject.
        for _ in 0..4 {
            rest = next(rest)?.2;
        }
        let (SEQUENCE, mut subject, _) = next(rest)? else {
            return None;
        };
        let mut name = None;
        while let Some((SET, set, after)) = next(subject) {
            subject = after;
            let (SEQUENCE, attribute, _) = next(set)? else { continue };
            let (_, oid, value) = next(attribute)?;
            if oid == COMMON_NAME {
                let (_, text, _) = next(value)?;
                name = String::from_utf8(text.to_vec()).ok();
            }
        }
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// X.509 v1, subject O=system:masters, CN=alice, issued by CN=tradingbot-ca (openssl, once).
    const LEAF: &str = "-----BEGIN CERTIFICATE-----
MIIBOzCB4gIUN1M3s84Qw9v9spyGP0DrIzRzltMwCgYIKoZIzj0EAwIwGDEWMBQG
A1UEAwwNdHJhZGluZ2JvdC1jYTAeFw0yNjEyMDExMTExNTlaFw0zNjExMjgxMTEx
NTlaMCkxFzAVBgNVBAoMDnN5c3RlbTptYXN0ZXJzMQ4wDAYDVQQDDAVhbGljZTBZ
MBMGByqGSM49AgEGCCqGSM49AwEHA0IABPt+eHgJ+NH0vhaMMnbq0dYr/BWI0FYc
wAW74u+D0JDbEwMKc/xJI0+AzMVRDpoP/BmHaIY8KsI+/D8sCz9h2FgwCgYIKoZI
zj0EAwIDSAAwRQIhAJItkM2/+RmXZGDvkPPJQrzIUp/4MU8t6wsV0UUoZn/SAiAk
tXmf2NK38XiMTvvbro6eaZkR1637joc/Mh5nKzqdqA==
-----END CERTIFICATE-----";

    /// X.509 v3 (with the version field), self-signed, O=system:masters, CN=alice.
    const SELF_SIGNED: &str = "-----BEGIN CERTIFICATE-----
MIIBpzCCAU2gAwIBAgIUXt4BaAGQ56gjIMFYZzM9RuQvzn4wCgYIKoZIzj0EAwIw
KTEXMBUGA1UECgwOc3lzdGVtOm1hc3RlcnMxDjAMBgNVBAMMBWFsaWNlMB4XDTI2
MTIwMTExMTE1NVoXDTM2MTEyODExMTE1NVowKTEXMBUGA1UECgwOc3lzdGVtOm1h
c3RlcnMxDjAMBgNVBAMMBWFsaWNlMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE
6CaAQESPFaruB2UKgUEDHAwamzy43UWnYhCA60rEMqV0kdvGMP9Jfrwc1rfPR+cj
EkfxK0nSppB2LICDnsMbdqNTMFEwHQYDVR0OBBYEFBejvqe7n1O2GTVGX/Gwg63S
6L4CMB8GA1UdIwQYMBaAFBejvqe7n1O2GTVGX/Gwg63S6L4CMA8GA1UdEwEB/wQF
MAMBAf8wCgYIKoZIzj0EAwIDSAAwRQIhAIyuep9AF7gaYsY67ELVssBY9dxKcDxa
d+pgypIl2L+hAiBc+Q/SP3iPB+l5Nix6yH+pXxdG9A6dV5nzK5virpY6HA==
-----END CERTIFICATE-----";

    #[test]
    fn the_subject_common_name_is_the_user_not_the_issuers() {
        assert_eq!(certificate_common_name(LEAF.as_bytes()).as_deref(), Some("alice"));
        assert_eq!(
            certificate_common_name(SELF_SIGNED.as_bytes()).as_deref(),
            Some("alice")
        );
        assert_eq!(certificate_common_name(b"not a pem"), None);
        let truncated = &LEAF[..200];
        assert_eq!(
            certificate_common_name(format!("{truncated}\n-----END CERTIFICATE-----").as_bytes()),
            None
        );
    }

    #[test]
    fn the_kubeconfig_user_entry_names_a_token_user() {
        let config = Kubeconfig::from_yaml(
            "apiVersion: v1\nkind: Config\ncurrent-context: c\ncontexts:\n- name: c\n  context: {cluster: k, user: admin}\nusers:\n- name: admin\n  user: {token: abc}\n",
        )
        .unwrap();
        assert_eq!(from_kubeconfig(&config).as_deref(), Some("admin"));
        let impersonating = Kubeconfig::from_yaml(
            "apiVersion: v1\nkind: Config\ncurrent-context: c\ncontexts:\n- name: c\n  context: {cluster: k, user: admin}\nusers:\n- name: admin\n  user: {token: abc, as: bob}\n",
        )
        .unwrap();
        assert_eq!(from_kubeconfig(&impersonating).as_deref(), Some("bob"));
    }
}
