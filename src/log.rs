//! Logging: `tracing` to stderr as text or JSON (one object per line, event fields at the top
//! level), and the access log line written once per request.

use tracing_subscriber::EnvFilter;

use crate::config::{Log, LogFormat};
use crate::pipeline::RequestCtx;

/// Installs the global subscriber. `RUST_LOG`, when set, overrides `log.level`.
pub fn init(cfg: &Log) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&cfg.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match cfg.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// The access log line: who asked what, where it went, what came back, how long it took.
pub fn access(ctx: &RequestCtx) {
    tracing::info!(
        target: "modelgate::access",
        request_id = %ctx.request_id,
        client = %ctx.client_ip,
        method = %ctx.method.as_str(),
        protocol = if ctx.http2 { "HTTP/2" } else { "HTTP/1.1" },
        // Without the query: query strings carry API keys often enough to keep them out of logs.
        path = %ctx.path.split('?').next().unwrap_or(""),
        route = ctx.route_id.as_deref().unwrap_or("-"),
        class = ctx.class.as_deref().unwrap_or("-"),
        subject = ctx.identity.as_ref().map_or("-", |v| v.identity.subject.as_str()),
        model = ctx.model.as_deref().unwrap_or("-"),
        decision = ctx.decision.as_ref().map_or("-", |d| match d.effect {
            crate::policy::Effect::Allow => "allow",
            crate::policy::Effect::Deny => "deny",
            crate::policy::Effect::Hold => "hold",
        }),
        rule = ctx.decision.as_ref().map_or("-", |d| &*d.rule),
        upstream = ctx.upstream.as_deref().unwrap_or("-"),
        status = ctx.status,
        grpc_status = ctx.grpc_status.map(|c| c.name()),
        bytes_in = ctx.bytes_in,
        bytes_out = ctx.bytes_out,
        duration_us = ctx.started.elapsed().as_micros() as u64,
        ttfb_us = ctx.ttfb.map_or(0, |d| d.as_micros() as u64),
        outcome = ?ctx.outcome,
        masked = ctx.masking.as_ref().map_or(0, |v| v.detections.values().sum::<u64>()),
        error = ctx.error.as_deref(),
        "access"
    );
}
