//! `[identity]`: trusted issuers, token checks and the identity assertion sent upstream.
//!
//! The file layer (`IdentitySection`) is plain serde; [`IdentityConfig::compile`] validates it
//! and reads key files, so a bad algorithm name or an unreadable key is a config error with its
//! key and fix, not a runtime surprise.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde::Deserialize;

use super::assertion::Signer;
use crate::config::{Dur, KeyError};

/// The `issuer` of identities taken from client certificates.
pub const CERT_ISSUER: &str = "mtls";

/// The header carrying the identity assertion upstream, unless configured otherwise. Stripped
/// from client requests even when identity is off, so a client can never forge it.
pub const DEFAULT_ASSERTION_HEADER: &str = "x-modelgate-identity";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentitySection {
    /// Longest `Authorization` bearer token accepted, in bytes.
    pub max_token_bytes: usize,
    /// Clock skew allowed on `exp`, `nbf` and `iat`.
    pub leeway: Dur,
    /// Verified tokens remembered per worker (by hash, until their `exp`).
    pub token_cache_entries: usize,
    /// Least time between two JWKS fetches caused by unknown `kid`s, per issuer.
    pub kid_refresh_cooldown: Dur,
    /// Limit on one discovery or JWKS fetch (connect, TLS and body).
    pub fetch_timeout: Dur,
    pub issuer: Vec<IssuerSection>,
    /// `[[identity.client_cert]]`: service accounts known by their TLS client certificate.
    pub client_cert: Vec<ClientCertSection>,
    pub upstream_assertion: AssertionSection,
}

/// A client certificate name mapped to an identity (needs `server.tls.client_ca_file`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientCertSection {
    /// Exactly one of: a SAN URI (SPIFFE ID), a SAN DNS name, or the subject CN (counted only
    /// for certificates without a SAN extension). Exact, or a prefix ending in `*`.
    #[serde(default)]
    pub uri: Option<String>,
    #[serde(default)]
    pub dns: Option<String>,
    #[serde(default)]
    pub cn: Option<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerSection {
    /// Must equal the tokens' `iss` and the discovery document's `issuer`.
    pub issuer: String,
    /// Accepted `aud` values; a token must name at least one.
    pub audiences: Vec<String>,
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// Skip discovery and fetch keys from here.
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// PEM bundle to verify the issuer's TLS certificate (default: the system bundle).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default = "default_refresh")]
    pub refresh: Dur,
    /// Keys are kept through an IdP outage for this long after the last successful fetch.
    #[serde(default = "default_max_stale")]
    pub max_stale: Dur,
    /// Dotted path of the groups claim (`groups`, `realm_access.roles`, …).
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// Required JWT `typ` header (`at+jwt` for RFC 9068 access tokens); absent: not checked.
    #[serde(default)]
    pub typ: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AssertionSection {
    pub enabled: bool,
    /// Request header carrying the signed assertion to the model server.
    pub header: String,
    /// `iss` of the assertions.
    pub issuer: String,
    pub ttl: Dur,
    /// PKCS#8 PEM P-256 key (`modelgate identity keygen`); absent: a key generated at start.
    pub key_file: Option<PathBuf>,
    /// Older keys still published at `/.well-known/jwks.json` while assertions signed with them
    /// may be in flight (rotation).
    pub previous_key_files: Vec<PathBuf>,
    /// Forward the client's own `Authorization` header upstream (off: it is removed).
    pub forward_client_authorization: bool,
}

fn default_algorithms() -> Vec<String> {
    [
        "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
    ]
    .map(String::from)
    .to_vec()
}
fn default_refresh() -> Dur {
    Dur::secs(15 * 60)
}
fn default_max_stale() -> Dur {
    Dur::secs(24 * 3600)
}
fn default_groups_claim() -> String {
    "groups".into()
}

impl Default for IdentitySection {
    fn default() -> Self {
        IdentitySection {
            max_token_bytes: 8 * 1024,
            leeway: Dur::secs(30),
            token_cache_entries: 10_000,
            kid_refresh_cooldown: Dur::secs(30),
            fetch_timeout: Dur::secs(5),
            issuer: Vec::new(),
            client_cert: Vec::new(),
            upstream_assertion: AssertionSection::default(),
        }
    }
}

impl Default for AssertionSection {
    fn default() -> Self {
        AssertionSection {
            enabled: true,
            header: DEFAULT_ASSERTION_HEADER.into(),
            issuer: "modelgate".into(),
            ttl: Dur::secs(300),
            key_file: None,
            previous_key_files: Vec::new(),
            forward_client_authorization: false,
        }
    }
}

/// The validated `[identity]`.
#[derive(Debug)]
pub struct IdentityConfig {
    pub max_token_bytes: usize,
    pub leeway: u64,
    pub token_cache_entries: usize,
    pub kid_refresh_cooldown: Duration,
    pub fetch_timeout: Duration,
    pub issuers: Vec<Arc<IssuerConfig>>,
    pub client_certs: Vec<ClientCertRule>,
    pub assertion: Option<Arc<Signer>>,
    pub assertion_header: String,
    pub forward_client_authorization: bool,
}

/// Which certificate name a rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertName {
    Uri,
    Dns,
    Cn,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertRule {
    pub kind: CertName,
    pub name: String,
    pub groups: Vec<String>,
    pub scopes: Vec<String>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct IssuerConfig {
    pub issuer: String,
    pub audiences: Vec<String>,
    pub algorithms: Vec<Algorithm>,
    pub jwks_uri: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub refresh: Duration,
    pub max_stale: Duration,
    pub groups_claim: Vec<String>,
    pub typ: Option<String>,
}

impl IdentityConfig {
    /// Validates the section; relative paths are resolved against `base` (the config's folder).
    pub fn compile(s: &IdentitySection, base: &Path) -> Result<IdentityConfig, KeyError> {
        if !(512..=64 * 1024).contains(&s.max_token_bytes) {
            return Err(KeyError::new(
                "identity.max_token_bytes",
                "max_token_bytes must be between 512 and 65536",
                "JWT access tokens are usually 1–4 KiB; the default is 8192",
            ));
        }
        let mut issuers = Vec::new();
        for (i, is) in s.issuer.iter().enumerate() {
            let key = |k: &str| format!("identity.issuer[{i}].{k}");
            issuers.push(Arc::new(compile_issuer(is, base, &key)?));
            if issuers[..i].iter().any(|x| x.issuer == is.issuer) {
                return Err(KeyError::new(
                    &key("issuer"),
                    &format!("issuer {:?} is listed twice", is.issuer),
                    "list each issuer once; put all its audiences in one entry",
                ));
            }
        }
        let a = &s.upstream_assertion;
        let assertion = match a.enabled {
            true => Some(Arc::new(Signer::load(a, base)?)),
            false => None,
        };
        let header = a.header.to_ascii_lowercase();
        if header.is_empty()
            || !header
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(KeyError::new(
                "identity.upstream_assertion.header",
                &format!("{:?} is not a header name", a.header),
                "use letters, digits and '-', e.g. \"x-modelgate-identity\"",
            ));
        }
        let mut client_certs = Vec::new();
        for (i, c) in s.client_cert.iter().enumerate() {
            let named = match (&c.uri, &c.dns, &c.cn) {
                (Some(n), None, None) => Some((CertName::Uri, n)),
                (None, Some(n), None) => Some((CertName::Dns, n)),
                (None, None, Some(n)) => Some((CertName::Cn, n)),
                _ => None,
            };
            let Some((kind, name)) = named.filter(|(_, n)| !n.is_empty() && *n != "*") else {
                return Err(KeyError::new(
                    &format!("identity.client_cert[{i}]"),
                    "a client certificate rule names exactly one of uri, dns and cn",
                    "e.g. uri = \"spiffe://prod/ns/ml/sa/x\" (a prefix may end in *)",
                ));
            };
            client_certs.push(ClientCertRule {
                kind,
                name: name.clone(),
                groups: c.groups.clone(),
                scopes: c.scopes.clone(),
            });
        }
        Ok(IdentityConfig {
            client_certs,
            max_token_bytes: s.max_token_bytes,
            leeway: s.leeway.0.as_secs(),
            token_cache_entries: s.token_cache_entries.max(1),
            kid_refresh_cooldown: s.kid_refresh_cooldown.0,
            fetch_timeout: s.fetch_timeout.0,
            issuers,
            assertion,
            assertion_header: header,
            forward_client_authorization: a.forward_client_authorization,
        })
    }

    pub fn issuer(&self, iss: &str) -> Option<&Arc<IssuerConfig>> {
        self.issuers.iter().find(|i| i.issuer == iss)
    }

    /// The identity a verified client certificate (DER) stands for: its holder's name mapped by
    /// the first matching `[[identity.client_cert]]`, or `None` when no rule names it.
    pub fn cert_identity(&self, der: &[u8]) -> Option<super::Identity> {
        let names = super::cert::holder_names(der)?;
        let (rule, name) = self.client_certs.iter().find_map(|r| {
            let candidates: &[String] = match r.kind {
                CertName::Uri => &names.uris,
                CertName::Dns => &names.dns,
                CertName::Cn => names.cn.as_slice(),
            };
            let hit = candidates.iter().find(|n| match r.name.strip_suffix('*') {
                Some(prefix) => n.starts_with(prefix),
                None => r.name == **n,
            })?;
            Some((r, hit.clone()))
        })?;
        Some(super::Identity {
            subject: name.clone(),
            issuer: CERT_ISSUER.into(),
            groups: rule.groups.clone(),
            scopes: rule.scopes.clone(),
            client_id: Some(name),
        })
    }
}

fn compile_issuer(
    s: &IssuerSection,
    base: &Path,
    key: &dyn Fn(&str) -> String,
) -> Result<IssuerConfig, KeyError> {
    let url_ok = |u: &str| u.starts_with("https://") || is_loopback_http(u);
    if !url_ok(&s.issuer) {
        return Err(KeyError::new(
            &key("issuer"),
            &format!("issuer {:?} is not an https:// URL", s.issuer),
            "keys must be fetched over TLS; plain http:// is accepted only for 127.0.0.1/localhost",
        ));
    }
    if let Some(u) = s.jwks_uri.as_deref().filter(|u| !url_ok(u)) {
        return Err(KeyError::new(
            &key("jwks_uri"),
            &format!("jwks_uri {u:?} is not an https:// URL"),
            "use the https:// address from the issuer's discovery document",
        ));
    }
    if s.audiences.is_empty() {
        return Err(KeyError::new(
            &key("audiences"),
            "no audiences: any token of this issuer for any service would be accepted",
            "list the audience (aud) your IdP puts in tokens for modelgate, e.g. [\"https://models.example.com\"]",
        ));
    }
    let mut algorithms = Vec::new();
    for name in &s.algorithms {
        let alg = match name.parse::<Algorithm>() {
            Ok(a) if !matches!(a, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) => a,
            _ => {
                return Err(KeyError::new(
                    &key("algorithms"),
                    &format!("{name:?} is not an accepted signature algorithm"),
                    "use asymmetric algorithms only: RS256 RS384 RS512 PS256 PS384 PS512 ES256 ES384 EdDSA (HS* and none are refused)",
                ))
            }
        };
        algorithms.push(alg);
    }
    if algorithms.is_empty() {
        return Err(KeyError::new(
            &key("algorithms"),
            "no algorithms: every token would be refused",
            "list what your IdP signs with, e.g. [\"RS256\", \"ES256\"]",
        ));
    }
    let ca_file = s.ca_file.as_ref().map(|p| base.join(p));
    if let Some(p) = ca_file.as_ref().filter(|p| !p.is_file()) {
        return Err(KeyError::new(
            &key("ca_file"),
            &format!("cannot read CA bundle {}", p.display()),
            "point ca_file at a PEM file with the CA that signed the IdP's certificate",
        ));
    }
    let groups_claim: Vec<String> = s.groups_claim.split('.').map(String::from).collect();
    if groups_claim.iter().any(String::is_empty) {
        return Err(KeyError::new(
            &key("groups_claim"),
            &format!("{:?} is not a claim path", s.groups_claim),
            "write a claim name or a dotted path, e.g. \"groups\" or \"realm_access.roles\"",
        ));
    }
    if s.refresh.0 < Duration::from_secs(1) || s.max_stale.0 < s.refresh.0 {
        return Err(KeyError::new(
            &key("max_stale"),
            "refresh must be at least 1s and max_stale at least refresh",
            "the defaults are refresh = \"15m\", max_stale = \"24h\"",
        ));
    }
    Ok(IssuerConfig {
        issuer: s.issuer.clone(),
        audiences: s.audiences.clone(),
        algorithms,
        jwks_uri: s.jwks_uri.clone(),
        ca_file,
        refresh: s.refresh.0,
        max_stale: s.max_stale.0,
        groups_claim,
        typ: s.typ.clone(),
    })
}

/// `http://127.0.0.1…`, `http://[::1]…` or `http://localhost…`: plain HTTP only on loopback.
pub fn is_loopback_http(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let host = rest.split(['/', '?']).next().unwrap_or("");
    let host = host.rsplit_once(':').map_or(host, |(h, p)| {
        if p.bytes().all(|b| b.is_ascii_digit()) {
            h
        } else {
            host
        }
    });
    matches!(host, "127.0.0.1" | "[::1]" | "localhost")
}
