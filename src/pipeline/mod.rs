//! The request path, written once and in order.
//!
//! ```text
//! head parsed (server::h1) ─▶ route ─▶ [authn ─▶ policy ─▶ approval: later stages]
//!   ─▶ upstream checkout ─▶ request head + body streamed up
//!   ─▶ response head ─▶ response body streamed down ─▶ pool check-in ─▶ access log
//! ```
//!
//! One [`RequestCtx`] is created per request and passed `&mut` through every stage; it is what
//! the access log (and later the recorder) reads. Any failure is an [`Error`] that travels back
//! here, and [`rescue`] is the one place that turns it into a response.

mod admit;
mod body;
mod record;
pub mod rescue;
mod stages;

use std::net::IpAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::config::Config;
use crate::conn::Conn;
use crate::error::{Error, ErrorKind};
use crate::http::headers::{encode_request_head, encode_response_head, Forwarding};
use crate::http::{parse_response, BodyFraming, RequestHead, ResponseHead};
use crate::identity::{Authenticator, Verified};
use crate::masking::Verdict;
use crate::policy::Decision;
use crate::upstream::Pool;
pub use body::Dir;
use body::{transfer, Transfer};
pub use rescue::rescue;
use stages::Stages;
pub use stages::{Recorder, Session};

/// Longest upstream response head accepted.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// Everything known about one request as it moves through the stages.
pub struct RequestCtx {
    pub request_id: String,
    pub client_ip: IpAddr,
    pub started: Instant,
    pub method: String,
    pub path: String,
    pub route_id: Option<Arc<str>>,
    pub class: Option<Arc<str>>,
    /// `group/address` of the endpoint that served the request.
    pub upstream: Option<String>,
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Time from the request head to the upstream's response head.
    pub ttfb: Option<Duration>,
    /// Time from the request head to the request having been sent upstream.
    pub request_sent: Option<Duration>,
    pub connection_id: u64,
    pub worker_id: u32,
    /// A short reason for an abnormal end, for the recording.
    pub error: Option<String>,
    /// The exchange's recording, when the recorder is on.
    pub session: Option<Session>,
    /// What masking found in this exchange (request and response together).
    pub masking: Option<Verdict>,
    /// The verified caller (routes with `auth = "required"`).
    pub identity: Option<Rc<Verified>>,
    /// The model the request names, if it could be read.
    pub model: Option<String>,
    /// The policy decision and the rule that made it.
    pub decision: Option<Decision>,
    /// The client connection is TLS.
    pub tls: bool,
    /// The identity of the connection's client certificate (mTLS), when a rule maps it.
    pub peer_identity: Option<Rc<Verified>>,
    /// `100 Continue` already went to the client (the model was read from the body).
    pub continue_sent: bool,
    /// The model was read from the body's first bytes; the rest must not contradict it.
    pub model_from_body: bool,
    /// The route records the model server's unmasked response body too (`record_raw`), and
    /// masking may change it.
    pub record_upstream_body: bool,
    /// The response head went to the client: errors can no longer become error responses.
    pub response_started: bool,
    /// The request body was read to its end (or there was none), so the connection can carry
    /// another request.
    pub request_done: bool,
    pub outcome: Outcome,
}

/// How the exchange ended, for the access log and the recorder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Complete,
    Rejected,
    /// Masking ended the response (a `block` detector, or a scan failure).
    Blocked,
    ClientGone,
    UpstreamFailed,
}

/// What the connection does after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    KeepAlive,
    Close,
}

/// The per-worker view of one config generation: the config and the pools built from it.
pub struct Generation {
    pub config: Arc<Config>,
    pub pools: Vec<Rc<Pool>>,
    /// The worker's session recorder (kept across reloads), when recording is on.
    pub recorder: Option<Rc<Recorder>>,
    /// Token verification with this worker's token cache, when `[identity]` is configured.
    pub auth: Option<Authenticator>,
}

impl RequestCtx {
    /// A context for a request refused before its head could be parsed.
    pub fn rejected(request_id: String, client_ip: IpAddr) -> Self {
        RequestCtx {
            request_id,
            client_ip,
            started: Instant::now(),
            method: String::new(),
            path: String::new(),
            route_id: None,
            class: None,
            upstream: None,
            status: 0,
            bytes_in: 0,
            bytes_out: 0,
            ttfb: None,
            request_sent: None,
            connection_id: 0,
            worker_id: 0,
            error: None,
            session: None,
            masking: None,
            identity: None,
            model: None,
            decision: None,
            tls: false,
            peer_identity: None,
            continue_sent: false,
            model_from_body: false,
            record_upstream_body: false,
            response_started: false,
            request_done: false,
            outcome: Outcome::Rejected,
        }
    }

    pub fn new(request_id: String, client_ip: IpAddr, head: &RequestHead) -> Self {
        RequestCtx {
            method: head.method.as_str().to_owned(),
            path: head.path.clone(),
            bytes_in: head.head_len as u64,
            request_done: head.framing == BodyFraming::Empty,
            outcome: Outcome::Complete,
            ..RequestCtx::rejected(request_id, client_ip)
        }
    }
}

impl RequestCtx {
    /// Adds a body's masking verdict to the exchange's.
    fn note_verdict(&mut self, verdict: Option<&Verdict>) {
        let Some(v) = verdict else { return };
        let total = self.masking.get_or_insert_with(Verdict::default);
        for (id, n) in &v.detections {
            *total.detections.entry(Arc::clone(id)).or_insert(0) += n;
        }
        total.max_held_bytes = total.max_held_bytes.max(v.max_held_bytes);
        total.max_hold = total.max_hold.max(v.max_hold);
        total.blocked = total.blocked.take().or_else(|| v.blocked.clone());
        total.error = total.error.take().or_else(|| v.error.clone());
    }
}

/// Runs one request through the whole path and answers it, one way or another.
pub async fn handle(
    ctx: &mut RequestCtx,
    client: &mut Conn,
    head: &RequestHead,
    generation: &Generation,
    draining: bool,
) -> Next {
    let must_close = head.close || !head.http11 || draining;
    let next = match proxy(ctx, client, head, generation, must_close).await {
        Ok(()) if must_close => Next::Close,
        Ok(()) => Next::KeepAlive,
        Err(e) => rescue(ctx, client, e, &generation.config, must_close).await,
    };
    record::end(ctx);
    next
}

async fn proxy(
    ctx: &mut RequestCtx,
    client: &mut Conn,
    head: &RequestHead,
    generation: &Generation,
    must_close: bool,
) -> Result<(), Error> {
    let config = &generation.config;
    let t = &config.timeouts;

    // Route, then admission (identity, model, policy): deny by default. The session starts
    // after the verdict, so it carries who asked and why they were refused.
    let route = config.router.find(&head.host, &head.path);
    let admitted = match route {
        Some(route) => {
            ctx.route_id = Some(Arc::clone(&route.id));
            ctx.record_upstream_body =
                route.record_raw && Stages::rewrites(config.masker.as_ref().zip(route.masking));
            ctx.class = Some(route.class_of(head.method.as_str(), &head.path));
            admit::admit(ctx, client, head, route, generation).await
        }
        None => Err(Error::downstream(ErrorKind::NoRoute)),
    };
    record::start(ctx, head, generation.recorder.as_ref())?;
    admitted?;
    let Some(route) = route else {
        return Err(Error::downstream(ErrorKind::NoRoute));
    };

    // Upstream: choose an endpoint and connect (retries happen only here, before any byte).
    let pool = &generation.pools[route.upstream];
    let (mut upstream, lease) = pool.checkout(t).await?;
    ctx.upstream = Some(format!("{}/{}", pool.name(), pool.endpoint(&lease)));

    // The gateway answers `Expect: 100-continue` itself, now that the request will go through.
    if head.expect_continue && head.framing != BodyFraming::Empty && !ctx.continue_sent {
        client
            .write(
                Bytes::from_static(b"HTTP/1.1 100 Continue\r\n\r\n"),
                t.body_idle,
            )
            .await
            .map_err(|e| Error::downstream(ErrorKind::ClientClosed(body::into_io(e))))?;
    }

    // Request head and body, upstream; masked prompts change length, so they go chunked.
    let masker = config.masker.as_ref();
    let request_masking = masker.zip(route.masking).filter(|_| route.mask_requests);
    let to_upstream = match head.framing {
        BodyFraming::Empty => BodyFraming::Empty,
        _ if Stages::rewrites(request_masking) => BodyFraming::Chunked,
        f => f,
    };
    let mut out = BytesMut::new();
    let client_ip = ctx.client_ip.to_string();
    let identity = config.identity.as_deref();
    let assertion = identity
        .and_then(|i| i.assertion.as_deref().zip(ctx.identity.as_ref()))
        .and_then(|(signer, who)| who.assertion(signer, pool.name()));
    let never_forward: &[&str] = match identity {
        Some(i) if !i.forward_client_authorization => &[
            "authorization",
            &i.assertion_header,
            crate::identity::config::DEFAULT_ASSERTION_HEADER,
        ],
        Some(i) => &[
            &i.assertion_header,
            crate::identity::config::DEFAULT_ASSERTION_HEADER,
        ],
        None => &[crate::identity::config::DEFAULT_ASSERTION_HEADER],
    };
    let fwd = Forwarding {
        client_ip: &client_ip,
        proto: if ctx.tls { "https" } else { "http" },
        request_id: &ctx.request_id,
        drop: never_forward,
        identity: identity
            .zip(assertion.as_deref())
            .map(|(i, a)| (i.assertion_header.as_str(), a)),
    };
    encode_request_head(head, to_upstream, &fwd, &mut out);
    let up = Transfer {
        dir: Dir::Request,
        read_idle: t.body_idle,
        write_limit: t.upstream_idle,
        max_trailer_bytes: config.limits.max_trailer_bytes,
    };
    let content_type = head.fields.get("content-type");
    let mut stages = Stages::new(
        Dir::Request,
        request_masking,
        content_type,
        ctx.session.as_mut(),
    );
    if ctx.model_from_body {
        stages.guard_model(ctx.model.clone());
    }
    let sent = transfer(
        client,
        head.framing,
        &mut upstream,
        to_upstream,
        &mut Some(out.freeze()),
        &mut stages,
        &up,
    )
    .await;
    let verdict = stages.verdict().cloned();
    drop(stages);
    ctx.note_verdict(verdict.as_ref());
    ctx.bytes_in += sent?;
    ctx.request_done = true;
    ctx.request_sent = Some(ctx.started.elapsed());

    // Response head.
    let res = read_response_head(&mut upstream, head, t.upstream_first_byte).await?;
    ctx.ttfb = Some(ctx.started.elapsed());
    ctx.status = res.status;
    record::response_head(ctx, &res)?;

    // HTTP/1.1 clients get open-ended bodies chunked (so the connection survives); HTTP/1.0
    // clients cannot take chunked and get them delimited by close. A masked body's length is
    // not known in advance, so it is open-ended too.
    let response_masking = masker.zip(route.masking);
    let to_client = match res.framing {
        BodyFraming::Length(_) if Stages::rewrites(response_masking) => BodyFraming::UntilClose,
        f => f,
    };
    let to_client = match to_client {
        BodyFraming::Chunked | BodyFraming::UntilClose if head.http11 => BodyFraming::Chunked,
        BodyFraming::Chunked | BodyFraming::UntilClose => BodyFraming::UntilClose,
        f => f,
    };
    let close = must_close || to_client == BodyFraming::UntilClose;
    let mut out = BytesMut::new();
    encode_response_head(&res, to_client, close, &ctx.request_id, &mut out);
    ctx.bytes_out += out.len() as u64;

    // Response body, downstream: masked, recorded, forwarded chunk by chunk.
    let down = Transfer {
        dir: Dir::Response,
        read_idle: t.upstream_idle,
        write_limit: t.body_idle,
        max_trailer_bytes: config.limits.max_trailer_bytes,
    };
    let content_type = res.fields.get("content-type");
    let mut stages = Stages::new(
        Dir::Response,
        response_masking,
        content_type,
        ctx.session.as_mut(),
    );
    if ctx.record_upstream_body {
        stages.record_upstream();
    }
    let mut response_head = Some(out.freeze());
    let received = transfer(
        &mut upstream,
        res.framing,
        client,
        to_client,
        &mut response_head,
        &mut stages,
        &down,
    )
    .await;
    // Once the head went out, errors can only cut the response short.
    ctx.response_started = response_head.is_none();
    let verdict = stages.verdict().cloned();
    drop(stages);
    ctx.note_verdict(verdict.as_ref());
    ctx.bytes_out += received?;
    if !res.close {
        pool.checkin(&lease, upstream);
    }
    Ok(())
}

/// Reads the upstream's response head, skipping interim 1xx responses (the gateway already
/// answered any `Expect` itself; `Upgrade` is never forwarded, so 101 is an error).
async fn read_response_head(
    upstream: &mut Conn,
    req: &RequestHead,
    first_byte: Duration,
) -> Result<ResponseHead, Error> {
    let deadline = Instant::now() + first_byte;
    loop {
        match parse_response(&mut upstream.buf, MAX_RESPONSE_HEAD, &req.method)
            .map_err(Error::from_response_head)?
        {
            Some(res) if res.status == 101 => {
                return Err(Error::upstream(ErrorKind::BadResponse("unexpected 101")))
            }
            Some(res) if (100..200).contains(&res.status) => continue,
            Some(res) => return Ok(res),
            None => {}
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match upstream.fill(left).await {
            Ok(0) => {
                let eof = std::io::ErrorKind::UnexpectedEof.into();
                return Err(Error::upstream(ErrorKind::UpstreamClosed(eof)));
            }
            Ok(_) => {}
            Err(crate::conn::ReadError::TimedOut) => {
                return Err(Error::upstream(ErrorKind::FirstByteTimeout))
            }
            Err(crate::conn::ReadError::Io(e)) => {
                return Err(Error::upstream(ErrorKind::UpstreamClosed(e)))
            }
        }
    }
}
