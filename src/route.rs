//! Routing: host and path prefix → upstream group and endpoint class.
//!
//! The most specific route wins: an exact host beats a `*.suffix` wildcard beats any host, and
//! among those the longest path prefix wins. A prefix matches on a path-segment boundary or as a
//! plain string prefix when it ends in `/`, so `/v1` matches `/v1` and `/v1/x` but not `/v10`.
//! Deny by default: no match is a 404 and nothing is sent upstream.

use std::sync::Arc;

use crate::masking::Mode;
use crate::policy::classes::{classify, Api};

/// Which hosts a route applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    Any,
    /// Lower-case host without port.
    Exact(String),
    /// `*.example.com` stored as `.example.com`.
    Suffix(String),
}

impl HostMatch {
    pub fn parse(host: Option<&str>) -> HostMatch {
        match host.map(|h| h.trim().to_ascii_lowercase()) {
            None => HostMatch::Any,
            Some(h) if h.is_empty() || h == "*" => HostMatch::Any,
            Some(h) => match h.strip_prefix('*') {
                Some(suffix) => HostMatch::Suffix(suffix.to_owned()),
                None => HostMatch::Exact(h),
            },
        }
    }

    /// Specificity rank, or `None` when the host does not match.
    fn rank(&self, host: &str) -> Option<u8> {
        match self {
            HostMatch::Any => Some(0),
            HostMatch::Suffix(s) => host.ends_with(s.as_str()).then_some(1),
            HostMatch::Exact(h) => (h == host).then_some(2),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Route {
    pub id: Arc<str>,
    pub host: HostMatch,
    pub path_prefix: String,
    /// Index into `Config::upstreams`.
    pub upstream: usize,
    /// Endpoint class (`inference`, `management`, …) for the policy stage.
    pub class: ClassOf,
    /// Requests need a verified token and an allowing policy rule (`auth = "required"`).
    pub auth_required: bool,
    /// The one model this route serves, when its server hosts one.
    pub model: Option<Arc<str>>,
    /// Response masking on this route (`None`: off).
    pub masking: Option<Mode>,
    /// Mask request bodies (prompts) too.
    pub mask_requests: bool,
    /// Record the model server's unmasked response body beside the masked one.
    pub record_raw: bool,
}

/// Where a request's endpoint class comes from.
#[derive(Debug, Clone)]
pub enum ClassOf {
    /// One class for the whole route.
    Fixed(Arc<str>),
    /// The built-in endpoint table of a server API, per method and path.
    Api(Api),
}

impl Route {
    /// The endpoint class of `method path` (query allowed) on this route.
    pub fn class_of(&self, method: &str, path: &str) -> Arc<str> {
        match &self.class {
            ClassOf::Fixed(c) => Arc::clone(c),
            ClassOf::Api(api) => {
                let path = path.split('?').next().unwrap_or(path);
                classify(*api, method, path).into()
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct Router {
    routes: Vec<Route>,
}

impl Router {
    pub fn new(routes: Vec<Route>) -> Self {
        Router { routes }
    }

    /// The best route for `host` (as sent, port allowed) and `path` (origin-form, query allowed).
    pub fn find(&self, host: &str, path: &str) -> Option<&Route> {
        let host = strip_port(host);
        let lower;
        let host = match host.bytes().any(|b| b.is_ascii_uppercase()) {
            true => {
                lower = host.to_ascii_lowercase();
                lower.as_str()
            }
            false => host,
        };
        let path = path.split('?').next().unwrap_or(path);
        // Match on the path as model servers route it (Starlette, for one, decodes %XX), so
        // `/%761/…` cannot slip past a `/v1` route into a broader, more open one.
        let decoded = percent_decoded(path);
        let path = decoded.as_deref().unwrap_or(path);
        self.routes
            .iter()
            .filter_map(|r| {
                let rank = r.host.rank(host)?;
                prefix_matches(&r.path_prefix, path).then_some(((rank, r.path_prefix.len()), r))
            })
            .max_by_key(|(key, _)| *key)
            .map(|(_, r)| r)
    }
}

/// `path` with `%XX` escapes decoded, when it has any (invalid escapes and non-UTF-8 results
/// are kept as written).
fn percent_decoded(path: &str) -> Option<String> {
    if !path.contains('%') {
        return None;
    }
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host
            .split(']')
            .next()
            .map_or(host, |h| &host[..h.len() + 1]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

fn prefix_matches(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        None => false,
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(id: &str, host: Option<&str>, prefix: &str) -> Route {
        Route {
            id: id.into(),
            host: HostMatch::parse(host),
            path_prefix: prefix.into(),
            upstream: 0,
            class: ClassOf::Fixed("inference".into()),
            auth_required: false,
            model: None,
            masking: None,
            mask_requests: false,
            record_raw: false,
        }
    }

    #[test]
    fn most_specific_host_then_longest_prefix_wins() {
        let r = Router::new(vec![
            route("any", None, "/"),
            route("v1", None, "/v1"),
            route("wild", Some("*.example.com"), "/"),
            route("exact", Some("api.example.com"), "/"),
        ]);
        assert_eq!(r.find("other", "/v1/chat").unwrap().id.as_ref(), "v1");
        assert_eq!(r.find("other", "/v10").unwrap().id.as_ref(), "any");
        assert_eq!(
            r.find("x.example.com:443", "/v1").unwrap().id.as_ref(),
            "wild"
        );
        assert_eq!(
            r.find("API.example.com", "/v1").unwrap().id.as_ref(),
            "exact"
        );
    }

    #[test]
    fn encoded_paths_route_like_their_decoded_form() {
        let r = Router::new(vec![route("open", None, "/"), route("v1", None, "/v1")]);
        assert_eq!(
            r.find("h", "/%761/load_lora_adapter").unwrap().id.as_ref(),
            "v1"
        );
        assert_eq!(r.find("h", "/v1%2Fx").unwrap().id.as_ref(), "v1");
        assert_eq!(r.find("h", "/%zz").unwrap().id.as_ref(), "open");
    }

    #[test]
    fn no_route_when_nothing_matches() {
        let r = Router::new(vec![route("v1", Some("a"), "/v1/")]);
        assert!(r.find("b", "/v1/x").is_none());
        assert!(r.find("a", "/v2").is_none());
    }
}
