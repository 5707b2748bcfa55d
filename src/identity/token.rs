//! Bearer-token checks, pure: take the token apart under size limits, then verify it against one
//! issuer's key. No I/O and no clock of its own (`now` is passed in), so every refusal in the
//! attack table is a unit-testable function call.
//!
//! Order matters: the cheap structural checks come first and are bounded, so a hostile token
//! costs microseconds and never a signature check unless it names a trusted issuer and a known
//! key whose type matches an allowed algorithm.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use jsonwebtoken::{Algorithm, Header, Validation};
use serde_json::Value;

use super::config::IssuerConfig;
use super::jwks::VerifyKey;
use super::Identity;

/// Longest header segment accepted (base64url): real headers are ~100–300 bytes.
const MAX_HEADER_B64: usize = 1024;

/// Why a token was refused. Logged; the client only ever sees `invalid_token`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    TooLarge,
    Malformed(&'static str),
    UntrustedIssuer,
    /// No key with this `kid` (after a refresh, if one was allowed).
    UnknownKey,
    /// The issuer's keys could not be fetched (never, or not for `max_stale`).
    KeysUnavailable,
    Rejected(String),
}

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenError::TooLarge => f.write_str("token too large"),
            TokenError::Malformed(why) => write!(f, "malformed token: {why}"),
            TokenError::UntrustedIssuer => f.write_str("token from an untrusted issuer"),
            TokenError::UnknownKey => f.write_str("token signed with an unknown key"),
            TokenError::KeysUnavailable => f.write_str("issuer keys unavailable"),
            TokenError::Rejected(why) => write!(f, "token rejected: {why}"),
        }
    }
}

/// A token taken apart but not yet trusted.
#[derive(Debug)]
pub struct Parsed<'a> {
    pub token: &'a str,
    pub header: Header,
    pub kid: String,
    /// `iss`, unverified: only used to pick the issuer whose key must then verify the token.
    pub iss: String,
}

/// Structural checks and header/issuer extraction, bounded by `max_bytes`.
pub fn parse(token: &str, max_bytes: usize) -> Result<Parsed<'_>, TokenError> {
    if token.len() > max_bytes {
        return Err(TokenError::TooLarge);
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed("not three segments"));
    };
    let b64url = |seg: &str| {
        seg.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if h.is_empty() || p.is_empty() || s.is_empty() || !b64url(h) || !b64url(p) || !b64url(s) {
        return Err(TokenError::Malformed("bad base64url segment"));
    }
    if h.len() > MAX_HEADER_B64 {
        return Err(TokenError::Malformed("header too large"));
    }
    let header: Value = decode_json(h)?;
    if header.get("crit").is_some() {
        // RFC 7515 §4.1.11: unknown critical extensions must be refused; we know none.
        return Err(TokenError::Malformed("crit header"));
    }
    let header: Header = serde_json::from_value(header)
        .map_err(|_| TokenError::Malformed("unsupported header or alg"))?;
    let kid = header
        .kid
        .clone()
        .filter(|k| !k.is_empty() && k.len() <= 256)
        .ok_or(TokenError::Malformed("missing kid"))?;
    let claims: Value = decode_json(p)?;
    let iss = claims
        .get("iss")
        .and_then(Value::as_str)
        .ok_or(TokenError::Malformed("missing iss"))?
        .to_owned();
    Ok(Parsed {
        token,
        header,
        kid,
        iss,
    })
}

fn decode_json(seg: &str) -> Result<Value, TokenError> {
    let bytes = B64
        .decode(seg)
        .map_err(|_| TokenError::Malformed("bad base64url"))?;
    // serde_json refuses nesting deeper than 128, so a JSON bomb fails here, cheaply.
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(v @ Value::Object(_)) => Ok(v),
        _ => Err(TokenError::Malformed("segment is not a JSON object")),
    }
}

/// Verifies `t` with `key` under `issuer`'s rules; on success, who the token speaks for and
/// its `exp`.
pub fn verify(
    t: &Parsed<'_>,
    issuer: &IssuerConfig,
    key: &VerifyKey,
    now: u64,
    leeway: u64,
) -> Result<(Identity, u64), TokenError> {
    let alg = t.header.alg;
    if !issuer.algorithms.contains(&alg) || !key.algorithms.contains(&alg) {
        return Err(TokenError::Rejected(format!(
            "alg {alg:?} not allowed for this key"
        )));
    }
    if let Some(want) = &issuer.typ {
        let typ = t.header.typ.as_deref().unwrap_or("");
        if !short_media_type(typ).eq_ignore_ascii_case(short_media_type(want)) {
            return Err(TokenError::Rejected(format!("typ {typ:?}")));
        }
    }
    let mut v = Validation::new(alg);
    // The time claims are checked below against `now`: jsonwebtoken would read the clock.
    v.validate_exp = false;
    v.validate_nbf = false;
    v.set_issuer(&[&issuer.issuer]);
    v.set_audience(&issuer.audiences);
    v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    let claims = jsonwebtoken::decode::<Value>(t.token, &key.key, &v)
        .map_err(|e| TokenError::Rejected(e.to_string()))?
        .claims;
    // `exp` is present (required above); the others are checked when present.
    let exp = numeric_date(&claims, "exp")?.unwrap_or(0);
    if exp.saturating_add(leeway) < now {
        return Err(TokenError::Rejected("token expired".into()));
    }
    let late = |t: Option<u64>| t.is_some_and(|t| t > now.saturating_add(leeway));
    if late(numeric_date(&claims, "nbf")?) {
        return Err(TokenError::Rejected("token not valid yet (nbf)".into()));
    }
    if late(numeric_date(&claims, "iat")?) {
        return Err(TokenError::Rejected("iat in the future".into()));
    }
    // An identity without a subject cannot be named in a rule, a log or a recording.
    if claims["sub"].as_str().is_none_or(str::is_empty) {
        return Err(TokenError::Rejected("empty or non-string sub".into()));
    }
    Ok((identity_of(&claims, issuer), exp))
}

/// A time claim, if present: RFC 7519 NumericDate, seconds that may have a fraction.
fn numeric_date(claims: &Value, name: &str) -> Result<Option<u64>, TokenError> {
    let Some(v) = claims.get(name) else {
        return Ok(None);
    };
    match (v.as_u64(), v.as_f64()) {
        (Some(n), _) => Ok(Some(n)),
        // `as` saturates: a date beyond u64 is u64::MAX, not a wrapped one.
        (None, Some(f)) if f.is_finite() && f >= 0.0 => Ok(Some(f as u64)),
        _ => Err(TokenError::Rejected(format!("{name} is not a NumericDate"))),
    }
}

/// `typ` without its optional `application/` prefix (RFC 7515 §4.1.9), so `at+jwt` and
/// `application/at+jwt` compare equal whichever of them the config or the token uses.
fn short_media_type(typ: &str) -> &str {
    match typ.get(..12) {
        Some(prefix) if prefix.eq_ignore_ascii_case("application/") => &typ[12..],
        _ => typ,
    }
}

/// Subject, groups (at the configured claim path), scopes and client id.
fn identity_of(claims: &Value, issuer: &IssuerConfig) -> Identity {
    let strings = |v: Option<&Value>| -> Vec<String> {
        match v {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect(),
            Some(Value::String(s)) => s.split_whitespace().map(String::from).collect(),
            _ => Vec::new(),
        }
    };
    let groups = issuer
        .groups_claim
        .iter()
        .try_fold(claims, |v, k| v.get(k.as_str()));
    let scopes = claims.get("scope").or_else(|| claims.get("scp"));
    let client_id = ["client_id", "azp", "appid"]
        .iter()
        .find_map(|k| claims.get(*k).and_then(Value::as_str));
    Identity {
        subject: claims["sub"].as_str().unwrap_or_default().to_owned(),
        issuer: issuer.issuer.clone(),
        groups: strings(groups),
        scopes: strings(scopes),
        client_id: client_id.map(String::from),
    }
}

/// The algorithms a JWK may verify, from its type and curve (and its own `alg`, if set).
pub fn algorithms_for(kty: &str, crv: Option<&str>, alg: Option<&str>) -> Vec<Algorithm> {
    use Algorithm::*;
    let family: &[Algorithm] = match (kty, crv) {
        ("RSA", _) => &[RS256, RS384, RS512, PS256, PS384, PS512],
        ("EC", Some("P-256")) => &[ES256],
        ("EC", Some("P-384")) => &[ES384],
        ("OKP", Some("Ed25519")) => &[EdDSA],
        // Symmetric (`oct`) keys are never accepted: a public JWKS must not hold secrets.
        _ => &[],
    };
    match alg.map(str::parse::<Algorithm>) {
        None => family.to_vec(),
        Some(Ok(a)) if family.contains(&a) => vec![a],
        Some(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests;
