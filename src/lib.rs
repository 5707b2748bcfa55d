//! modelgate: an identity-aware, streaming gateway in front of self-hosted model servers.
//!
//! # The request path
//!
//! ```text
//! client ─▶ accept            runtime/     one SO_REUSEPORT listener per worker thread
//!        ─▶ TLS               tls.rs       when [server.tls]: SNI certificate, optional mTLS
//!                             (a mapped client certificate is the connection's identity)
//!        ─▶ HTTP/1.1 codec    server.rs    heads parsed strictly (http/head.rs); 400/414/431
//!           or HTTP/2         http2/       ALPN h2 or the h2c preface; each stream becomes the
//!                             same request head (http2/convert.rs) and runs this same path
//!        ─▶ route             route.rs     host + path prefix → upstream group, endpoint class; 404
//!        ─▶ admission         pipeline/admit.rs  identity (identity/: bearer JWT, cached per
//!                             worker, or the client certificate's; 401/503) ─▶ model (path or JSON body prefix, policy/model.rs)
//!                             ─▶ policy (policy/: first matching rule, deny by default; 403)
//!        ─▶ session start     pipeline/record.rs  the recorder opens the exchange with who,
//!                             which model and the decision, refusals included (503 if down)
//!        ─▶ [approval: the hold decision's stage to come]
//!        ─▶ upstream          upstream.rs  least-outstanding endpoint; HTTP/1.1 keep-alive pool
//!                             or one multiplexed HTTP/2 connection (h2c/h2); TLS when
//!                             [upstream.tls]; the client's token replaced by the signed
//!                             identity assertion (identity/assertion.rs); 502/504
//!        ─▶ exchange          pipeline/exchange.rs  any client protocol to any upstream
//!                             protocol; HTTP/2 on both sides runs both directions at once
//!        ─▶ request body      pipeline/body.rs  streamed chunk by chunk, re-framed
//!                             pipeline/stages.rs  (prompt masking, recording) per chunk
//!        ◀─ response body     pipeline/body.rs  each chunk written as it arrives (SSE-safe)
//!                             pipeline/stages.rs  masking (masking/), then recording (recorder/)
//!        ◀─ session end, access log   pipeline/record.rs, log.rs
//! ```
//!
//! gRPC calls get gRPC statuses for the gateway's own refusals (grpc/status.rs), their model
//! from the first `ModelInferRequest`, and their `grpc-timeout` as a deadline on the whole path.
//!
//! The whole path is one function, [`pipeline::handle`], with one [`pipeline::RequestCtx`]
//! passed through it; errors are one type ([`error::Error`], which knows the side that failed)
//! and become responses in one place ([`pipeline::rescue`]).
//!
//! # Threads
//!
//! One monoio runtime per worker thread, io_uring (epoll fallback). Workers share nothing on the
//! request path: each owns its connections and pools. Config reloads arrive as a new
//! `Arc<Config>` over a channel from the control thread ([`runtime`]).

pub mod clock;
pub mod config;
pub mod conn;
pub mod demo;
pub mod error;
pub mod grpc;
pub mod http;
pub mod http2;
pub mod identity;
pub mod log;
pub mod masking;
pub mod pipeline;
pub mod policy;
pub mod recorder;
pub mod route;
pub mod runtime;
pub mod server;
pub mod tls;
pub mod upstream;
