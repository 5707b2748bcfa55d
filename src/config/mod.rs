//! Configuration in two layers: the TOML file as serde structs (`file::*`, unknown keys are
//! errors), then a validated, typed [`Config`] with names resolved to indices and durations as
//! `Duration`. Every error names file, line, column and key, and says how to fix it.
//!
//! `config/modelgate.toml` is the commented reference of every key and its default; the
//! `defaults_match_reference_file` test keeps the two in step.

mod error;
mod values;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

pub use error::{ConfigError, KeyError};
use values::Addr;
pub use values::{DriverChoice, Dur, LogFormat};

use crate::identity::{IdentityConfig, IdentitySection};
use crate::masking::{Masker, MaskingSection, Mode};
use crate::policy::{classes, Policy, PolicySection};
use crate::recorder::{RecorderConfig, RecordingSection};
use crate::route::{ClassOf, HostMatch, Route, Router};
use crate::tls::{Tls, TlsSection, UpstreamTls, UpstreamTlsSection};

/// The validated configuration a worker runs with. Shared read-only (`Arc`) between workers and
/// swapped whole on reload.
#[derive(Debug)]
pub struct Config {
    pub path: PathBuf,
    pub server: Server,
    pub limits: Limits,
    pub timeouts: Timeouts,
    pub log: Log,
    pub upstreams: Vec<Upstream>,
    pub router: Router,
    /// The compiled detector database, when `[masking]` is configured and enabled.
    pub masker: Option<Arc<Masker>>,
    /// Session recording, when `[recording] enabled = true`.
    pub recording: Option<RecorderConfig>,
    /// Token verification, when `[identity]` names issuers.
    pub identity: Option<Arc<IdentityConfig>>,
    pub policy: Policy,
    /// The admin listener (JWKS of the identity assertion), when `[admin] listen` is set.
    pub admin: Option<SocketAddr>,
}

#[derive(Debug, Clone)]
pub struct Server {
    pub listen: SocketAddr,
    /// Worker threads, each with its own runtime and listener.
    pub workers: usize,
    pub driver: DriverChoice,
    pub drain_grace: Duration,
    /// TLS termination on the listener, when `[server.tls]` is set.
    pub tls: Option<Arc<Tls>>,
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_headers: usize,
    pub max_header_bytes: usize,
    pub max_uri_bytes: usize,
    pub max_trailer_bytes: usize,
}

#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub header_read: Duration,
    pub body_idle: Duration,
    pub keepalive_idle: Duration,
    pub upstream_connect: Duration,
    pub upstream_first_byte: Duration,
    pub upstream_idle: Duration,
}

#[derive(Debug, Clone)]
pub struct Log {
    pub format: LogFormat,
    pub level: String,
    pub access_log: bool,
}

/// A named group of equivalent model-server endpoints.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub name: String,
    pub endpoints: Vec<SocketAddr>,
    pub fail_backoff: Duration,
    pub max_idle_per_endpoint: usize,
    pub pool_idle_timeout: Duration,
    /// PING interval on HTTP/2 upstream connections; zero = off.
    pub h2_keepalive: Duration,
    /// TLS to the model servers, when `[upstream.tls]` is set.
    pub tls: Option<Arc<UpstreamTls>>,
    /// How requests are sent to the model servers.
    pub protocol: UpstreamProtocol,
}

/// `protocol` of an `[[upstream]]` group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamProtocol {
    /// HTTP/1.1 with a keep-alive pool (over TLS when `[upstream.tls]` is set).
    #[default]
    Http1,
    /// HTTP/2 with prior knowledge over plain TCP: gRPC servers (Triton, KServe).
    H2c,
    /// HTTP/2 over TLS (ALPN `h2`); needs `[upstream.tls]`.
    H2,
}

/// The file as written. Defaults live here, once.
mod file {
    use super::*;

    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Root {
        #[serde(default)]
        pub server: Server,
        #[serde(default)]
        pub limits: Limits,
        #[serde(default)]
        pub timeouts: Timeouts,
        #[serde(default)]
        pub log: Log,
        #[serde(default)]
        pub upstream: Vec<Upstream>,
        #[serde(default)]
        pub route: Vec<Route>,
        pub masking: Option<MaskingSection>,
        pub recording: Option<RecordingSection>,
        pub identity: Option<IdentitySection>,
        pub policy: Option<PolicySection>,
        pub admin: Option<Admin>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Admin {
        pub listen: Addr,
    }

    #[derive(Deserialize)]
    #[serde(default, deny_unknown_fields)]
    pub struct Server {
        pub listen: Addr,
        pub workers: usize,
        pub driver: DriverChoice,
        pub drain_grace: Dur,
        pub tls: Option<TlsSection>,
    }

    impl Default for Server {
        fn default() -> Self {
            Server {
                listen: Addr(SocketAddr::from(([127, 0, 0, 1], 8080))),
                workers: 0,
                driver: DriverChoice::Auto,
                drain_grace: Dur::secs(30),
                tls: None,
            }
        }
    }

    #[derive(Deserialize)]
    #[serde(default, deny_unknown_fields)]
    pub struct Limits {
        pub max_headers: Spanned<usize>,
        pub max_header_bytes: usize,
        pub max_uri_bytes: usize,
        pub max_trailer_bytes: usize,
    }

    impl Default for Limits {
        fn default() -> Self {
            Limits {
                max_headers: Spanned::new(0..0, 100),
                max_header_bytes: 32 * 1024,
                max_uri_bytes: 8 * 1024,
                max_trailer_bytes: 16 * 1024,
            }
        }
    }

    #[derive(Deserialize)]
    #[serde(default, deny_unknown_fields)]
    pub struct Timeouts {
        pub header_read: Dur,
        pub body_idle: Dur,
        pub keepalive_idle: Dur,
        pub upstream_connect: Dur,
        pub upstream_first_byte: Dur,
        pub upstream_idle: Dur,
    }

    impl Default for Timeouts {
        fn default() -> Self {
            Timeouts {
                header_read: Dur::secs(10),
                body_idle: Dur::secs(60),
                keepalive_idle: Dur::secs(75),
                upstream_connect: Dur::secs(3),
                upstream_first_byte: Dur::secs(300),
                upstream_idle: Dur::secs(300),
            }
        }
    }

    #[derive(Deserialize)]
    #[serde(default, deny_unknown_fields)]
    pub struct Log {
        pub format: LogFormat,
        pub level: String,
        pub access_log: bool,
    }

    impl Default for Log {
        fn default() -> Self {
            Log {
                format: LogFormat::Text,
                level: "info".into(),
                access_log: true,
            }
        }
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Upstream {
        pub name: Spanned<String>,
        pub endpoints: Spanned<Vec<Addr>>,
        #[serde(default = "default_fail_backoff")]
        pub fail_backoff: Dur,
        #[serde(default = "default_max_idle")]
        pub max_idle_per_endpoint: usize,
        #[serde(default = "default_pool_idle")]
        pub pool_idle_timeout: Dur,
        #[serde(default = "default_h2_keepalive")]
        pub h2_keepalive: Dur,
        #[serde(default)]
        pub tls: Option<UpstreamTlsSection>,
        #[serde(default)]
        pub protocol: Option<Spanned<UpstreamProtocol>>,
    }

    fn default_fail_backoff() -> Dur {
        Dur::secs(5)
    }
    fn default_max_idle() -> usize {
        64
    }
    fn default_pool_idle() -> Dur {
        Dur::secs(30)
    }
    /// Off: gRPC servers by default answer PINGs on a connection without calls more often
    /// than every 5 minutes with GOAWAY `too_many_pings`, so the interval is the operator's
    /// choice, to be matched with the server's keepalive policy.
    fn default_h2_keepalive() -> Dur {
        Dur::secs(0)
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Route {
        pub id: Spanned<String>,
        #[serde(default)]
        pub host: Option<String>,
        #[serde(default = "default_prefix")]
        pub path_prefix: Spanned<String>,
        pub upstream: Spanned<String>,
        /// One endpoint class for the whole route; or `api` to classify each request.
        #[serde(default)]
        pub class: Option<String>,
        /// `openai`, `vllm`, `tgi`, `llamacpp` or `kserve`: the built-in endpoint classes.
        #[serde(default)]
        pub api: Option<Spanned<String>>,
        /// `required` (default): a verified token and an allowing policy rule; `none`: open.
        #[serde(default)]
        pub auth: Option<Spanned<RouteAuth>>,
        /// The model this route serves, for servers that host one (TGI, llama.cpp).
        #[serde(default)]
        pub model: Option<String>,
        /// `enforce`, `detect` or `off`; default: `[masking] mode` when masking is enabled.
        #[serde(default)]
        pub masking: Option<Spanned<RouteMasking>>,
        /// Also mask request bodies (prompts) on this route.
        #[serde(default)]
        pub mask_requests: bool,
        /// Record the model server's unmasked response body too (needs [recording]).
        #[serde(default)]
        pub record_raw: bool,
    }

    #[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
    #[serde(rename_all = "lowercase")]
    pub enum RouteAuth {
        Required,
        None,
    }

    #[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
    #[serde(rename_all = "lowercase")]
    pub enum RouteMasking {
        Enforce,
        Detect,
        Off,
    }

    fn default_prefix() -> Spanned<String> {
        Spanned::new(0..0, "/".into())
    }
}

impl Config {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let source = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::whole_file(
                path,
                format!("cannot read config: {e}"),
                "check the path and that the file is readable by the modelgate user",
            )
        })?;
        Config::parse(path, &source)
    }

    /// Validates `source` as if read from `path` (which is only used in messages).
    pub fn parse(path: &Path, source: &str) -> Result<Config, ConfigError> {
        let root: file::Root =
            toml::from_str(source).map_err(|e| ConfigError::from_toml(path, source, &e))?;
        let err = |span: std::ops::Range<usize>, msg: &str, fix: &str| {
            ConfigError::at(path, source, Some(span), msg, fix)
        };

        let limits = &root.limits;
        if *limits.max_headers.get_ref() == 0 || *limits.max_headers.get_ref() > 256 {
            return Err(err(
                limits.max_headers.span(),
                "max_headers must be between 1 and 256",
                "set limits.max_headers to a value from 1 to 256 (default 100)",
            ));
        }

        let mut upstreams: Vec<Upstream> = Vec::new();
        for (i, u) in root.upstream.iter().enumerate() {
            if upstreams.iter().any(|x| x.name == *u.name.get_ref()) {
                return Err(err(
                    u.name.span(),
                    &format!("duplicate upstream name {:?}", u.name.get_ref()),
                    "give every [[upstream]] a unique name",
                ));
            }
            if u.endpoints.get_ref().is_empty() {
                return Err(err(
                    u.endpoints.span(),
                    "upstream has no endpoints",
                    "list at least one address, e.g. endpoints = [\"127.0.0.1:8000\"]",
                ));
            }
            let protocol = u
                .protocol
                .as_ref()
                .map_or_else(Default::default, |p| *p.get_ref());
            let protocol_span = u
                .protocol
                .as_ref()
                .map_or_else(|| u.name.span(), |p| p.span());
            match (protocol, &u.tls) {
                (UpstreamProtocol::H2, None) => {
                    return Err(err(
                        protocol_span.clone(),
                        "protocol = \"h2\" is HTTP/2 over TLS, but the upstream has no [upstream.tls]",
                        "add an [upstream.tls] section (ca_file, server_name), or use protocol = \"h2c\" for plain HTTP/2",
                    ))
                }
                (UpstreamProtocol::H2c, Some(_)) => {
                    return Err(err(
                        protocol_span.clone(),
                        "protocol = \"h2c\" is plain HTTP/2, but the upstream has [upstream.tls]",
                        "use protocol = \"h2\" for HTTP/2 over TLS, or remove [upstream.tls]",
                    ))
                }
                _ => {}
            }
            let tls = match &u.tls {
                Some(section) => {
                    let base = path.parent().unwrap_or(Path::new("."));
                    let at = format!("upstream[{i}].tls");
                    let alpn: &[u8] = match protocol {
                        UpstreamProtocol::H2 => b"h2",
                        _ => b"http/1.1",
                    };
                    let tls = UpstreamTls::load(section, base, &at, alpn).map_err(|e| {
                        ConfigError::at_key(path, source, &e.key, &e.message, &e.fix)
                    })?;
                    Some(Arc::new(tls))
                }
                None => None,
            };
            upstreams.push(Upstream {
                tls,
                protocol,
                name: u.name.get_ref().clone(),
                endpoints: u.endpoints.get_ref().iter().map(|a| a.0).collect(),
                fail_backoff: u.fail_backoff.0,
                max_idle_per_endpoint: u.max_idle_per_endpoint,
                pool_idle_timeout: u.pool_idle_timeout.0,
                h2_keepalive: u.h2_keepalive.0,
            });
        }

        let masker = match &root.masking {
            Some(section) if section.enabled => {
                let base = path.parent().unwrap_or(Path::new("."));
                let masker = Masker::compile(section, base)
                    .map_err(|e| ConfigError::at_key(path, source, &e.key, &e.message, &e.fix))?;
                Some((Arc::new(masker), section.mode))
            }
            _ => None,
        };
        let recording = match &root.recording {
            Some(section) => {
                let rec = section.validate().map_err(|e| {
                    let (message, fix) = e.message.split_once(" | fix: ").map_or(
                        (e.message.as_str(), "see config/modelgate.toml"),
                        |(m, f)| (m, f),
                    );
                    ConfigError::at_key(path, source, &format!("recording.{}", e.key), message, fix)
                })?;
                rec.enabled.then_some(rec)
            }
            None => None,
        };

        let identity = match &root.identity {
            Some(section) if !section.issuer.is_empty() || !section.client_cert.is_empty() => {
                let base = path.parent().unwrap_or(Path::new("."));
                let id = IdentityConfig::compile(section, base)
                    .map_err(|e| ConfigError::at_key(path, source, &e.key, &e.message, &e.fix))?;
                Some(Arc::new(id))
            }
            _ => None,
        };

        let mut routes: Vec<Route> = Vec::new();
        for (i, r) in root.route.iter().enumerate() {
            if routes.iter().any(|x| *x.id == **r.id.get_ref()) {
                return Err(err(
                    r.id.span(),
                    &format!("duplicate route id {:?}", r.id.get_ref()),
                    "give every [[route]] a unique id",
                ));
            }
            let Some(upstream) = upstreams
                .iter()
                .position(|u| u.name == *r.upstream.get_ref())
            else {
                let known: Vec<&str> = upstreams.iter().map(|u| u.name.as_str()).collect();
                return Err(err(
                    r.upstream.span(),
                    &format!("unknown upstream {:?}", r.upstream.get_ref()),
                    &format!(
                        "define an [[upstream]] with name = {:?}, or use one of: {}",
                        r.upstream.get_ref(),
                        if known.is_empty() {
                            "(none defined)".into()
                        } else {
                            known.join(", ")
                        }
                    ),
                ));
            };
            if !r.path_prefix.get_ref().starts_with('/') {
                return Err(err(
                    r.path_prefix.span(),
                    "path_prefix must start with '/'",
                    "write it as an absolute path, e.g. \"/v1/\"",
                ));
            }
            let masking = match (r.masking.as_ref().map(|m| *m.get_ref()), &masker) {
                (Some(file::RouteMasking::Off), _) => None,
                (Some(_), None) => {
                    return Err(err(
                        r.masking.as_ref().map_or(0..0, |m| m.span()),
                        "this route asks for masking but no detectors are configured",
                        "add a [masking] section (enabled = true), or set masking = \"off\"",
                    ))
                }
                (Some(file::RouteMasking::Enforce), Some(_)) => Some(Mode::Enforce),
                (Some(file::RouteMasking::Detect), Some(_)) => Some(Mode::Detect),
                (None, Some((_, default))) => Some(*default),
                (None, None) => None,
            };
            if r.record_raw && recording.is_none() {
                return Err(ConfigError::at_key(
                    path,
                    source,
                    &format!("route[{i}].record_raw"),
                    "record_raw asks for unmasked response bodies in the recording, but recording is off",
                    "enable [recording], or remove record_raw",
                ));
            }
            let class = match (&r.class, &r.api) {
                (Some(c), None) => ClassOf::Fixed(c.as_str().into()),
                (None, Some(api)) => ClassOf::Api(classes::Api::parse(api.get_ref()).ok_or_else(|| {
                    err(
                        api.span(),
                        &format!("unknown api {:?}", api.get_ref()),
                        &format!("use one of: {}", classes::Api::NAMES.join(", ")),
                    )
                })?),
                _ => {
                    return Err(ConfigError::at_key(
                        path,
                        source,
                        &format!("route[{i}].class"),
                        "a route needs exactly one of class and api",
                        "set api = \"openai\" (or vllm, tgi, llamacpp, kserve) to classify each request, or class = \"inference\" for the whole route",
                    ))
                }
            };
            let auth_required =
                r.auth.as_ref().map(|a| *a.get_ref()) != Some(file::RouteAuth::None);
            if auth_required && identity.is_none() {
                return Err(err(
                    r.auth.as_ref().map_or(r.id.span(), |a| a.span()),
                    &format!("route {:?} requires authentication (the default) but no [[identity.issuer]] is configured", r.id.get_ref()),
                    "add an [[identity.issuer]] section, or set auth = \"none\" on a route that is deliberately open",
                ));
            }
            routes.push(Route {
                id: r.id.get_ref().as_str().into(),
                host: HostMatch::parse(r.host.as_deref()),
                path_prefix: r.path_prefix.get_ref().clone(),
                upstream,
                class,
                auth_required,
                model: r.model.as_deref().map(Into::into),
                masking,
                mask_requests: r.mask_requests && masking.is_some(),
                record_raw: r.record_raw,
            });
        }
        if routes.is_empty() {
            return Err(ConfigError::whole_file(
                path,
                "no [[route]] defined: every request would be answered 404".into(),
                "add at least one [[route]] with path_prefix, upstream and class",
            ));
        }

        let policy = {
            let route_ids: Vec<&str> = routes.iter().map(|r| &*r.id).collect();
            let mut class_names: Vec<&str> = crate::policy::CLASSES.to_vec();
            for r in &routes {
                if let ClassOf::Fixed(c) = &r.class {
                    class_names.push(c);
                }
            }
            let section = root.policy.unwrap_or_default();
            Policy::compile(&section, &route_ids, &class_names)
                .map_err(|e| ConfigError::at_key(path, source, &e.key, &e.message, &e.fix))?
        };

        let tls = match &root.server.tls {
            Some(section) => {
                let base = path.parent().unwrap_or(Path::new("."));
                let tls = Tls::load(section, base)
                    .map_err(|e| ConfigError::at_key(path, source, &e.key, &e.message, &e.fix))?;
                Some(Arc::new(tls))
            }
            None => None,
        };

        if identity
            .as_ref()
            .is_some_and(|i| !i.client_certs.is_empty())
            && !tls.as_ref().is_some_and(|t| t.client_certs)
        {
            return Err(ConfigError::at_key(
                path,
                source,
                "identity.client_cert",
                "client certificate identities need verified client certificates",
                "set server.tls.client_ca_file to the CA that issues them",
            ));
        }

        let t = &root.timeouts;
        let workers = match root.server.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        Ok(Config {
            path: path.to_path_buf(),
            server: Server {
                listen: root.server.listen.0,
                workers,
                driver: root.server.driver,
                drain_grace: root.server.drain_grace.0,
                tls,
            },
            limits: Limits {
                max_headers: *limits.max_headers.get_ref(),
                max_header_bytes: limits.max_header_bytes,
                max_uri_bytes: limits.max_uri_bytes,
                max_trailer_bytes: limits.max_trailer_bytes,
            },
            timeouts: Timeouts {
                header_read: t.header_read.0,
                body_idle: t.body_idle.0,
                keepalive_idle: t.keepalive_idle.0,
                upstream_connect: t.upstream_connect.0,
                upstream_first_byte: t.upstream_first_byte.0,
                upstream_idle: t.upstream_idle.0,
            },
            log: Log {
                format: root.log.format,
                level: root.log.level,
                access_log: root.log.access_log,
            },
            upstreams,
            router: Router::new(routes),
            masker: masker.map(|(m, _)| m),
            recording,
            identity,
            policy,
            admin: root.admin.map(|a| a.listen.0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(src: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("test.toml"), src)
    }

    const MIN: &str = "[[upstream]]\nname = \"m\"\nendpoints = [\"127.0.0.1:1\"]\n[[route]]\nid = \"r\"\nupstream = \"m\"\nclass = \"inference\"\nauth = \"none\"\n";

    #[test]
    fn reference_file_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/modelgate.toml");
        Config::load(&path).unwrap();
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let e = parse(&format!("[timeouts]\nheader_reed = \"1s\"\n{MIN}")).unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("unknown field `header_reed`"), "{e}");
    }

    #[test]
    fn bad_duration_names_key_and_fix() {
        let e = parse(&format!("[timeouts]\nbody_idle = \"10 parsecs\"\n{MIN}")).unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (2, "timeouts.body_idle"));
        assert!(e.fix.contains("\"10s\""), "{e}");
    }

    #[test]
    fn route_to_unknown_upstream_lists_known_ones() {
        let e = parse(&MIN.replace("upstream = \"m\"", "upstream = \"x\"")).unwrap_err();
        assert_eq!(e.key, "route[0].upstream");
        assert!(e.fix.contains("one of: m"), "{e}");
    }
}
