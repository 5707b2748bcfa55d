//! Who is calling: OIDC access tokens verified against the issuers' published keys.
//!
//! ```text
//! Authorization: Bearer <jwt> ─▶ token cache (per worker, whole token compared, until exp)
//!   miss ─▶ token::parse (bounded, no crypto) ─▶ trusted issuer? ─▶ key by kid (hub)
//!        ─▶ unknown kid: one fetch per cooldown, then again ─▶ token::verify (signature, claims)
//! ```
//!
//! A repeated token costs a short keyed hash, one map lookup and one compare. Keys live in the process-wide
//! [`hub::KeyHub`], fetched by one task on the identity thread ([`hub::KeyHub::run_fetcher`]).

pub mod assertion;
pub mod cert;
pub mod config;
pub mod fetch;
pub mod hub;
pub mod jwks;
pub mod token;

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

pub use config::{IdentityConfig, IdentitySection};
use hub::{IssuerKeys, KeyHub, Lookup};
pub use token::TokenError;

use assertion::Signer;

/// A verified caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub subject: String,
    pub issuer: String,
    pub groups: Vec<String>,
    pub scopes: Vec<String>,
    pub client_id: Option<String>,
}

/// Why a request is not authenticated.
#[derive(Debug)]
pub enum AuthError {
    /// No bearer token at all.
    Missing,
    Invalid(TokenError),
}

impl std::fmt::Display for AuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthError::Missing => f.write_str("no bearer token"),
            AuthError::Invalid(e) => e.fmt(f),
        }
    }
}

/// A verified token: who it speaks for, and the assertion last signed for it.
#[derive(Debug)]
pub struct Verified {
    pub identity: Identity,
    assertion: RefCell<Option<(String, Rc<str>, u64)>>,
}

impl Verified {
    pub fn new(identity: Identity) -> Verified {
        Verified {
            identity,
            assertion: RefCell::new(None),
        }
    }

    /// The signed identity assertion for `audience`, reused while more than a fifth of its
    /// lifetime is left (signing costs ~20 µs; a cached token should not pay it every time).
    pub fn assertion(&self, signer: &Signer, audience: &str) -> Option<Rc<str>> {
        let now = crate::clock::unix_secs();
        let mut slot = self.assertion.borrow_mut();
        if let Some((aud, jwt, exp)) = slot.as_ref() {
            if aud == audience && *exp > now + signer.ttl_secs / 5 {
                return Some(jwt.clone());
            }
        }
        let (jwt, exp) = signer.sign(&self.identity, audience)?;
        let jwt: Rc<str> = jwt.into();
        *slot = Some((audience.to_owned(), jwt.clone(), exp));
        Some(jwt)
    }
}

struct Cached {
    /// The whole token: the map key only picks the bucket, equality is on every byte.
    token: Box<str>,
    verified: Rc<Verified>,
    exp: u64,
    issuer: Arc<IssuerKeys>,
    generation: u64,
}

impl Cached {
    /// The token's `exp` (with the same leeway verification allowed) has not passed.
    fn unexpired(&self, now: u64, leeway: u64) -> bool {
        self.exp.saturating_add(leeway) >= now
    }
}

/// One worker's authenticator: the config's rules, the shared keys and a private token cache.
pub struct Authenticator {
    config: Arc<IdentityConfig>,
    hub: Arc<KeyHub>,
    /// By a keyed hash of the token's last 32 bytes (its signature): cheap, and unpredictable
    /// to an attacker, who in any case only gets a miss when copying another token's tail.
    cache: RefCell<HashMap<u64, Cached>>,
    hasher: RandomState,
}

impl Authenticator {
    pub fn new(config: Arc<IdentityConfig>, hub: Arc<KeyHub>) -> Self {
        Authenticator {
            config,
            hub,
            cache: RefCell::new(HashMap::new()),
            hasher: RandomState::new(),
        }
    }

    /// The identity of a connection's verified client certificate, if a rule maps it.
    pub fn certificate(&self, der: &[u8]) -> Option<Rc<Verified>> {
        self.config
            .cert_identity(der)
            .map(|i| Rc::new(Verified::new(i)))
    }

    /// Authenticates the value of the request's `Authorization` header.
    pub async fn authenticate(
        &self,
        authorization: Option<&[u8]>,
    ) -> Result<Rc<Verified>, AuthError> {
        let token = bearer(authorization.ok_or(AuthError::Missing)?).ok_or(AuthError::Invalid(
            TokenError::Malformed("not a bearer token"),
        ))?;
        let key = self
            .hasher
            .hash_one(&token.as_bytes()[token.len().saturating_sub(32)..]);
        let now = crate::clock::unix_secs();
        if let Some(hit) = self.cached(key, token, now) {
            return Ok(hit);
        }
        // A miss verifies against the precise clock (`iat` may be this very second).
        let precise = crate::clock::precise_unix_secs();
        let (verified, exp, issuer) = self
            .verify(token, precise)
            .await
            .map_err(AuthError::Invalid)?;
        let generation = issuer.generation.load(std::sync::atomic::Ordering::Acquire);
        let mut cache = self.cache.borrow_mut();
        if cache.len() >= self.config.token_cache_entries {
            let leeway = self.config.leeway;
            cache.retain(|_, c| c.unexpired(now, leeway));
            if cache.len() >= self.config.token_cache_entries {
                cache.clear();
            }
        }
        cache.insert(
            key,
            Cached {
                token: token.into(),
                verified: verified.clone(),
                exp,
                issuer,
                generation,
            },
        );
        Ok(verified)
    }

    fn cached(&self, key: u64, token: &str, now: u64) -> Option<Rc<Verified>> {
        let mut cache = self.cache.borrow_mut();
        let c = cache.get(&key).filter(|c| *c.token == *token)?;
        let current = c
            .issuer
            .generation
            .load(std::sync::atomic::Ordering::Acquire);
        if c.unexpired(now, self.config.leeway) && c.generation == current {
            return Some(c.verified.clone());
        }
        cache.remove(&key);
        None
    }

    async fn verify(
        &self,
        token: &str,
        now: u64,
    ) -> Result<(Rc<Verified>, u64, Arc<IssuerKeys>), TokenError> {
        let parsed = token::parse(token, self.config.max_token_bytes)?;
        let cfg = self
            .config
            .issuer(&parsed.iss)
            .ok_or(TokenError::UntrustedIssuer)?;
        let issuer = self
            .hub
            .issuer(&cfg.issuer)
            .ok_or(TokenError::KeysUnavailable)?;
        let key = match issuer.lookup(&parsed.kid) {
            Lookup::Found(k) => k,
            // A kid we have not seen: maybe the IdP rotated. Ask for one fetch (the hub
            // enforces the cooldown) and look again once it is done.
            Lookup::Unknown | Lookup::Unavailable => {
                if self
                    .hub
                    .request_fetch(&issuer, self.config.kid_refresh_cooldown)
                {
                    wait_for_fetch(&issuer, self.config.fetch_timeout).await;
                }
                Result::from(issuer.lookup(&parsed.kid))?
            }
        };
        let (identity, exp) = token::verify(&parsed, cfg, &key, now, self.config.leeway)?;
        let verified = Rc::new(Verified {
            identity,
            assertion: RefCell::new(None),
        });
        Ok((verified, exp, issuer))
    }
}

/// Polls until the issuer's fetch is done (fetches are rare: start, rotation, cooldown-limited).
async fn wait_for_fetch(issuer: &IssuerKeys, limit: Duration) {
    let deadline = std::time::Instant::now() + limit + Duration::from_millis(500);
    while issuer.in_flight() && std::time::Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The token of `Bearer <token>` (scheme case-insensitive, RFC 6750 §2.1).
fn bearer(value: &[u8]) -> Option<&str> {
    let value = std::str::from_utf8(value).ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim_matches(' ');
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && !token.contains(' '))
        .then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_taken_from_the_header() {
        assert_eq!(bearer(b"Bearer abc.def.ghi"), Some("abc.def.ghi"));
        assert_eq!(bearer(b"bearer  abc"), Some("abc"));
        assert_eq!(bearer(b"Basic dXNlcjpwYXNz"), None);
        assert_eq!(bearer(b"Bearer"), None);
        assert_eq!(bearer(b"Bearer a b"), None);
    }
}
