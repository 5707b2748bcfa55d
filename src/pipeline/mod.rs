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
mod exchange;
mod record;
pub mod rescue;
mod stages;

use std::net::IpAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::config::Config;
use crate::conn::Conn;
use crate::error::{Error, ErrorKind};
use crate::grpc::is_grpc_content_type;
use crate::grpc::status::parse_timeout;
use crate::http::head::Method;
use crate::http::{BodyFraming, RequestHead};
use crate::http2::stream::{H2Recv, H2Send};
use crate::identity::{Authenticator, Verified};
use crate::masking::Verdict;
use crate::policy::Decision;
use crate::upstream::{Lease, Pool};
pub use body::Dir;
use body::Source;
use exchange::Exchange;
pub use rescue::rescue;
use stages::Stages;
pub use stages::{Recorder, Session};

/// The KServe v2 / Triton gRPC service's path prefix.
const KSERVE_GRPC_SERVICE: &str = "/inference.GRPCInferenceService/";

/// Everything known about one request as it moves through the stages.
pub struct RequestCtx {
    pub request_id: String,
    pub client_ip: IpAddr,
    pub started: Instant,
    pub method: Method,
    pub path: Rc<str>,
    pub route_id: Option<Arc<str>>,
    pub class: Option<Arc<str>>,
    /// `group/address` of the endpoint that served the request.
    pub upstream: Option<Rc<str>>,
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
    pub session: Option<Rc<Session>>,
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
    /// The request arrived on an HTTP/2 stream.
    pub http2: bool,
    /// The request is a gRPC call: refusals are gRPC statuses.
    pub grpc: bool,
    /// How a gRPC call ended (`grpc-status`), the model server's or the gateway's.
    pub grpc_status: Option<crate::grpc::status::Code>,
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
            method: Method::Other(String::new()),
            path: "".into(),
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
            http2: false,
            grpc: false,
            grpc_status: None,
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
            method: head.method.clone(),
            path: Rc::clone(&head.path),
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

/// The client side of one exchange: an HTTP/1.1 connection, or one HTTP/2 stream.
pub enum Client<'a> {
    H1(&'a mut Conn),
    H2(&'a mut H2Exchange),
}

/// A client's HTTP/2 stream: the request body coming in and the response going out.
pub struct H2Exchange {
    pub body: H2Recv,
    pub send: H2Send,
}

impl Client<'_> {
    /// The request body as a transfer source.
    fn body(&mut self, framing: BodyFraming, max_trailer_bytes: usize) -> Source<'_> {
        match self {
            Client::H1(conn) => Source::h1(conn, framing, max_trailer_bytes),
            Client::H2(x) => Source::H2(&mut x.body),
        }
    }
}

/// Runs one request through the whole path and answers it, one way or another.
pub async fn handle(
    ctx: &mut RequestCtx,
    client: &mut Client<'_>,
    head: &RequestHead,
    generation: &Generation,
    draining: bool,
) -> Next {
    let must_close = head.close || !head.http11 || draining;
    // A gRPC call by its content type, or on HTTP/2 by a KServe gRPC method path whatever the
    // content type says (gRPC servers serve those regardless, so they get gRPC's treatment:
    // the model read from the message, the per-message guard, gRPC masking).
    ctx.grpc = head
        .fields
        .get("content-type")
        .is_some_and(is_grpc_content_type)
        || (ctx.http2 && head.path.starts_with(KSERVE_GRPC_SERVICE));
    // A gRPC caller's deadline bounds the whole exchange; when it passes, the call is over
    // (HTTP/2 only: what was sent on a stream is known after the exchange is dropped, while an
    // HTTP/1.1 response cut there could not be told from a complete one).
    let deadline = (ctx.grpc && ctx.http2)
        .then(|| head.fields.get("grpc-timeout"))
        .flatten()
        .and_then(parse_timeout);
    let exchange = proxy(ctx, client, head, generation, must_close);
    let result = match deadline {
        Some(limit) => crate::clock::timeout(limit, exchange)
            .await
            .unwrap_or_else(|_| Err(Error::downstream(ErrorKind::DeadlineExceeded))),
        None => exchange.await,
    };
    let next = match result {
        // An HTTP/1.1 upstream whose response ended cleanly goes back to its pool.
        Ok(Some((pool_conn, lease))) => {
            lease.checkin(pool_conn);
            if must_close {
                Next::Close
            } else {
                Next::KeepAlive
            }
        }
        Ok(None) if must_close => Next::Close,
        Ok(None) => Next::KeepAlive,
        Err(e) => rescue(ctx, client, e, &generation.config, must_close).await,
    };
    record::end(ctx);
    next
}

/// An HTTP/1.1 upstream connection that may serve another request.
type Reusable = Option<(Conn, Lease)>;

async fn proxy(
    ctx: &mut RequestCtx,
    client: &mut Client<'_>,
    head: &RequestHead,
    generation: &Generation,
    must_close: bool,
) -> Result<Reusable, Error> {
    let config = &generation.config;

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
    let (upstream, lease) = pool.checkout(&config.timeouts).await?;
    ctx.upstream = Some(Rc::clone(pool.label(&lease)));

    // The gateway answers `Expect: 100-continue` itself, now that the request will go through.
    if let Client::H1(conn) = client {
        if head.expect_continue && head.framing != BodyFraming::Empty && !ctx.continue_sent {
            conn.write(
                Bytes::from_static(b"HTTP/1.1 100 Continue\r\n\r\n"),
                config.timeouts.body_idle,
            )
            .await
            .map_err(|e| Error::downstream(ErrorKind::ClientClosed(body::into_io(e))))?;
        }
    }

    // The exchange itself; the session is shared by its two directions while it runs (and
    // stays in the context, so it is ended even when a deadline drops the exchange).
    let session = ctx.session.clone();
    let exchange = Exchange {
        config,
        route,
        head,
        pool_name: pool.name(),
        session: session.as_deref(),
        must_close,
        scheme: if pool.is_tls() { "https" } else { "http" },
        grpc: ctx.grpc,
    };
    let result = exchange.run(ctx, client, upstream).await;
    if let Err(e) = &result {
        // A shared HTTP/2 connection that stalls or breaks is not reused for the next call.
        if matches!(
            e.kind,
            ErrorKind::FirstByteTimeout | ErrorKind::UpstreamClosed(_)
        ) {
            pool.forget_h2(&lease);
        }
    }
    Ok(result?.map(|conn| (conn, lease)))
}
