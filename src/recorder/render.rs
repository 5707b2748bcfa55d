//! How sessions are shown: one line per session for `list`, a readable page for `show`, and
//! one JSON object per session for `export`. Bodies are text when they are UTF-8 (model output
//! almost always is) and hex otherwise, so an export is lossless.

use std::io::{self, Write};

use serde_json::{json, Value};

use super::codec::hex;
use super::index::Summary;
use super::model::{Chunk, SessionStart};
use super::read::Session;
use super::time::rfc3339;

fn or_dash<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

fn lower<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned())
}

fn ms(us: u64) -> String {
    format!("{:.1}ms", us as f64 / 1000.0)
}

/// `time  request-id  subject  model  route  decision  status  end  [sensitive]`
pub fn summary_line(s: &Summary) -> String {
    format!(
        "{}  {}  subject={}  model={}  route={}  decision={}  status={}  end={}{}",
        s.started_us.map_or_else(|| "-".to_owned(), rfc3339),
        s.request_id,
        or_dash(s.subject.as_deref()),
        or_dash(s.model.as_deref()),
        or_dash(s.route.as_deref()),
        or_dash(s.decision.as_ref().map(lower)),
        or_dash(s.status),
        or_dash(s.end.as_ref().map(lower)),
        if s.sensitive { "  sensitive" } else { "" },
    )
}

pub fn session_text(out: &mut dyn Write, s: &Session) -> io::Result<()> {
    writeln!(out, "session   {}", s.request_id)?;
    writeln!(
        out,
        "recorded  worker {} in {} at byte {}",
        s.worker,
        s.file.display(),
        s.offset
    )?;
    match &s.start {
        Some(st) => start_text(out, st)?,
        None => writeln!(out, "start     (not in the available segments)")?,
    }
    if let Some(h) = &s.response_head {
        writeln!(
            out,
            "response  {} from {} at +{}",
            h.status,
            or_dash(h.upstream.as_deref()),
            ms(h.offset_us)
        )?;
        for (n, v) in &h.headers {
            writeln!(out, "  {n}: {v}")?;
        }
    }
    body_text(out, "req body ", &s.request_body)?;
    body_text(out, "body     ", &s.response_body)?;
    if s.start.as_ref().is_some_and(|st| st.record_upstream_body) {
        body_text(out, "unmasked ", &s.upstream_body)?;
    }
    if let Some(t) = &s.trailers {
        writeln!(out, "trailers  at +{}", ms(t.offset_us))?;
        for (n, v) in &t.headers {
            writeln!(out, "  {n}: {v}")?;
        }
    }
    match &s.end {
        Some(e) => {
            writeln!(
                out,
                "end       {} status {} at +{}{}",
                lower(&e.reason),
                or_dash(e.status),
                ms(e.offset_us),
                e.error
                    .as_deref()
                    .map_or_else(String::new, |m| format!(" ({m})"))
            )?;
            writeln!(
                out,
                "timing    gateway {}  upstream ttfb {}  total {}",
                or_dash(e.timing.gateway_us.map(ms)),
                or_dash(e.timing.upstream_ttfb_us.map(ms)),
                or_dash(e.timing.total_us.map(ms)),
            )?;
            let verdict: Vec<String> = e.masking.iter().map(|(d, n)| format!("{d}={n}")).collect();
            let verdict = if verdict.is_empty() {
                "nothing masked".to_owned()
            } else {
                verdict.join(" ")
            };
            writeln!(out, "masking   {verdict}")?;
            writeln!(out, "bytes     in {} out {}", e.bytes_in, e.bytes_out)?;
        }
        None => writeln!(
            out,
            "end       (not recorded: still running, or the recording stopped)"
        )?,
    }
    writeln!(out)
}

fn start_text(out: &mut dyn Write, st: &SessionStart) -> io::Result<()> {
    writeln!(out, "time      {}", rfc3339(st.wall_time_us))?;
    match &st.identity {
        Some(i) => writeln!(
            out,
            "identity  {} groups [{}] issuer {}",
            i.subject,
            i.groups.join(", "),
            or_dash(i.issuer.as_deref())
        )?,
        None => writeln!(out, "identity  -")?,
    }
    writeln!(
        out,
        "client    {}  connection {}",
        or_dash(st.client_addr),
        st.connection_id
    )?;
    writeln!(
        out,
        "route     {}  class {}  model {}",
        or_dash(st.route.as_deref()),
        or_dash(st.endpoint_class.as_deref()),
        or_dash(st.model.as_deref())
    )?;
    let decision = st
        .decision
        .as_ref()
        .map(|d| format!("{} (rule {})", lower(&d.action), or_dash(d.rule.as_deref())));
    writeln!(
        out,
        "decision  {}  approval {}",
        or_dash(decision),
        or_dash(st.approval_id.as_deref())
    )?;
    writeln!(out, "request   {} {}", st.request.method, st.request.path)?;
    for (n, v) in &st.request.headers {
        writeln!(out, "  {n}: {v}")?;
    }
    if !st.record_request_body {
        writeln!(out, "req body  not recorded (route setting)")?;
    }
    Ok(())
}

fn body_text(out: &mut dyn Write, label: &str, chunks: &[Chunk]) -> io::Result<()> {
    let (Some(first), Some(last)) = (chunks.first(), chunks.last()) else {
        return Ok(());
    };
    let bytes: usize = chunks.iter().map(|c| c.data.len()).sum();
    writeln!(
        out,
        "{label} {} chunks, {bytes} bytes, first at +{}, last at +{}",
        chunks.len(),
        ms(first.offset_us),
        ms(last.offset_us)
    )
}

fn chunks_json(chunks: &[Chunk]) -> Value {
    Value::Array(
        chunks
            .iter()
            .map(|c| match std::str::from_utf8(&c.data) {
                Ok(t) => json!({ "offset_us": c.offset_us, "text": t }),
                Err(_) => json!({ "offset_us": c.offset_us, "hex": hex(&c.data) }),
            })
            .collect(),
    )
}

pub fn session_json(s: &Session) -> Value {
    json!({
        "request_id": s.request_id,
        "worker": s.worker,
        "file": s.file.file_name().map(|f| f.to_string_lossy().into_owned()),
        "offset": s.offset,
        "start": s.start,
        "request_body": chunks_json(&s.request_body),
        "response_head": s.response_head,
        "response_body": chunks_json(&s.response_body),
        "upstream_body": chunks_json(&s.upstream_body),
        "trailers": s.trailers,
        "end": s.end,
    })
}
