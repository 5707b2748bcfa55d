//! Session recording end to end: exchanges through the gateway process, read back with the
//! `modelgate sessions …` and `modelgate verify` commands. Covers what is recorded (heads with
//! secrets redacted, bodies, status, verdict, how it ended), SSE chunks with their offsets and
//! replay, a SIGKILL mid-stream with `event` durability, a full disk (a small tmpfs) failing
//! closed and open, and refusals.

mod support;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use support::*;

const MASKING: &str = r#"
[masking]
mode = "enforce"
"#;

/// Recording into `dir` (+ extra `[recording]` keys), optional masking, one upstream, one route
/// `main` on `/v1/` (anything else has no route).
fn rec_config(upstream: &str, dir: &Path, rec_extra: &str, masking: bool, server: &str) -> String {
    format!(
        "{server}\n[recording]\nenabled = true\ndir = \"{}\"\ndurability = \"event\"\n{rec_extra}\n{}\n[[upstream]]\nname = \"models\"\nendpoints = [\"{upstream}\"]\n\n[[route]]\nid = \"main\"\npath_prefix = \"/v1/\"\nupstream = \"models\"\nclass = \"inference\"\nauth = \"none\"\n",
        dir.display(),
        if masking { MASKING } else { "" },
    )
}

/// A recording directory the gateway has to create itself (so its mode is the gateway's doing).
fn rec_dir() -> (PathBuf, PathBuf) {
    let base = temp_dir("rec");
    let dir = base.join("sessions");
    (base, dir)
}

fn cli_ok(args: &[&str]) -> String {
    let out = modelgate_cli(args);
    assert_eq!(
        out.code,
        Some(0),
        "modelgate {args:?} failed:\nstdout: {}\nstderr: {}",
        out.stdout_str(),
        out.stderr
    );
    out.stdout_str()
}

fn list(dir: &Path, filters: &[&str]) -> Vec<String> {
    let d = dir.to_str().unwrap();
    let mut args = vec!["sessions", "list", "--dir", d];
    args.extend_from_slice(filters);
    cli_ok(&args).lines().map(str::to_owned).collect()
}

fn list_line(lines: &[String], id: &str) -> String {
    lines
        .iter()
        .find(|l| l.split_whitespace().nth(1) == Some(id))
        .unwrap_or_else(|| panic!("session {id} not listed:\n{}", lines.join("\n")))
        .clone()
}

fn export(dir: &Path, id: &str) -> Value {
    let out = cli_ok(&[
        "sessions",
        "export",
        "--dir",
        dir.to_str().unwrap(),
        id,
        "--format",
        "jsonl",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "one session {id}: {out}");
    serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("export line ({e}): {}", lines[0]))
}

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// Body chunks of an exported session as (offset_us, bytes).
fn chunks(v: &Value) -> Vec<(u64, Vec<u8>)> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a chunk list: {v}"))
        .iter()
        .map(|c| {
            let data = match (c["text"].as_str(), c["hex"].as_str()) {
                (Some(t), _) => t.as_bytes().to_vec(),
                (None, Some(h)) => hex_decode(h),
                _ => panic!("chunk without text or hex: {c}"),
            };
            (c["offset_us"].as_u64().expect("offset_us"), data)
        })
        .collect()
}

fn body_of(v: &Value) -> Vec<u8> {
    chunks(v).into_iter().flat_map(|(_, d)| d).collect()
}

fn header<'a>(headers: &'a Value, name: &str) -> Option<&'a str> {
    headers.as_array()?.iter().find_map(|h| {
        (h[0].as_str()?.eq_ignore_ascii_case(name))
            .then(|| h[1].as_str())
            .flatten()
    })
}

/// `modelgate verify DIR`: (exit code, stdout).
fn verify(dir: &Path) -> (Option<i32>, String) {
    let out = modelgate_cli(&["verify", dir.to_str().unwrap()]);
    (out.code, out.stdout_str() + &out.stderr)
}

#[track_caller]
fn assert_verifies(dir: &Path) -> String {
    let (code, text) = verify(dir);
    assert_eq!(code, Some(0), "verify failed:\n{text}");
    assert!(text.lines().any(|l| l == "ok"), "{text}");
    assert!(!text.contains("BROKEN"), "{text}");
    text
}

/// Verify may stop at a torn tail (a crash or a failed write mid-record), nothing worse.
#[track_caller]
fn assert_no_tampering(dir: &Path) -> String {
    let (code, text) = verify(dir);
    if code == Some(0) {
        assert!(text.lines().any(|l| l == "ok"), "{text}");
        return text;
    }
    assert_eq!(code, Some(1), "verify could not run:\n{text}");
    let broken = text
        .lines()
        .find(|l| l.starts_with("BROKEN: "))
        .unwrap_or_else(|| panic!("verify failed without a BROKEN line:\n{text}"));
    assert!(
        broken.contains(": Truncated: "),
        "verify reports more than a torn tail:\n{text}"
    );
    text
}

fn request(path: &str, id: &str, extra_headers: &str, body: &str) -> String {
    let method = if body.is_empty() { "GET" } else { "POST" };
    let len = if body.is_empty() {
        String::new()
    } else {
        format!("Content-Length: {}\r\n", body.len())
    };
    format!("{method} {path} HTTP/1.1\r\nHost: test.local\r\nx-request-id: {id}\r\n{extra_headers}{len}\r\n{body}")
}

// ───────────────────────────── 1. what is recorded ─────────────────────────────

const PROMPT: &str =
    r#"{"model":"mock-model","messages":[{"role":"user","content":"Who handles billing?"}]}"#;
const COMPLETION: &str = r#"{"id":"chatcmpl-1","choices":[{"index":0,"message":{"role":"assistant","content":"Write to billing@example.com please."}}]}"#;
const MODELS: &str = r#"{"data":[{"id":"mock-model"}]}"#;

fn chat_or_models_upstream() -> Upstream {
    script_upstream(Pacing::Burst, |req| {
        if req.head.target().ends_with("/chat/completions") {
            Script::length("application/json", &[COMPLETION.as_bytes()])
        } else {
            Script::length("application/json", &[MODELS.as_bytes()])
        }
    })
}

on_both_drivers! {
    fn recorded_sessions_list_show_export_and_verify(driver) {
        let up = chat_or_models_upstream();
        let (base, dir) = rec_dir();
        let gw = Gateway::start_with(driver, &rec_config(&up.url(), &dir, "", true, ""));

        let mut c = gw.connect();
        let chat = c.request(request(
            "/v1/chat/completions",
            "rec-chat",
            "Authorization: Bearer sk-live-SUPERSECRET0123456789\r\nContent-Type: application/json\r\nCookie: sid=COOKIESECRET\r\n",
            PROMPT,
        ));
        assert_eq!(chat.status(), 200);
        assert!(chat.complete);
        let masked_completion = chat.body_str();
        assert!(masked_completion.contains("[REDACTED:email]"), "{masked_completion}");
        let models = c.request(request("/v1/models", "rec-models", "", ""));
        assert_eq!(models.body_str(), MODELS);
        gw.access_log("rec-chat");
        gw.access_log("rec-models");

        // list: both, with route, status, end and the sensitive flag only where masking hid something.
        let all = list(&dir, &[]);
        assert_eq!(all.len(), 2, "{all:#?}");
        let l = list_line(&all, "rec-chat");
        for want in ["route=main", "status=200", "end=complete"] {
            assert!(l.contains(want), "{want} in {l}");
        }
        assert!(l.ends_with("  sensitive"), "{l}");
        let l = list_line(&all, "rec-models");
        assert!(l.contains("route=main") && l.contains("status=200") && l.contains("end=complete"), "{l}");
        assert!(!l.contains("sensitive"), "{l}");
        let sensitive = list(&dir, &["--sensitive"]);
        assert_eq!(sensitive.len(), 1, "{sensitive:#?}");
        list_line(&sensitive, "rec-chat");
        assert_eq!(list(&dir, &["--route", "main"]).len(), 2);
        assert!(list(&dir, &["--route", "other"]).is_empty());

        // show: request head with the credentials redacted, response head, body sizes, end, verdict.
        let show = cli_ok(&["sessions", "show", "--dir", dir.to_str().unwrap(), "rec-chat"]);
        assert!(!show.contains("SUPERSECRET") && !show.contains("COOKIESECRET"), "credentials in show:\n{show}");
        for want in [
            "session   rec-chat".to_string(),
            "request   POST /v1/chat/completions".to_string(),
            "  Authorization: Bearer [redacted]".to_string(),
            "  Cookie: [redacted]".to_string(),
            format!("response  200 from models/{}", up.url()),
            format!("{} bytes", PROMPT.len()),
            "end       complete status 200".to_string(),
            "masking   email=1".to_string(),
            "route     main  class inference".to_string(),
        ] {
            assert!(show.contains(&want), "{want:?} not in show:\n{show}");
        }
        assert!(show.lines().any(|l| l.starts_with("req body ")), "{show}");

        // export: the same, machine-readable, bodies included (response as the client saw it).
        let s = export(&dir, "rec-chat");
        assert_eq!(s["request_id"], "rec-chat");
        let req_headers = &s["start"]["request"]["headers"];
        assert_eq!(header(req_headers, "authorization"), Some("Bearer [redacted]"), "{req_headers}");
        assert_eq!(header(req_headers, "cookie"), Some("[redacted]"), "{req_headers}");
        assert_eq!(header(req_headers, "content-type"), Some("application/json"));
        assert_eq!(s["start"]["request"]["method"], "POST");
        assert_eq!(s["start"]["request"]["path"], "/v1/chat/completions");
        assert_eq!(s["start"]["route"], "main");
        assert_eq!(body_of(&s["request_body"]), PROMPT.as_bytes(), "request body");
        assert_eq!(s["response_head"]["status"], 200);
        assert_eq!(header(&s["response_head"]["headers"], "content-type"), Some("application/json"));
        assert_eq!(String::from_utf8(body_of(&s["response_body"])).unwrap(), masked_completion, "recorded = what the client saw");
        assert_eq!(s["end"]["reason"], "complete");
        assert_eq!(s["end"]["status"], 200);
        assert_eq!(s["end"]["masking"], json!({"email": 1}));
        assert!(!s.to_string().contains("billing@example.com"), "unmasked text recorded: {s}");
        assert!(!s.to_string().contains("SUPERSECRET"));

        // export of everything: one JSON object per line.
        let out = cli_ok(&["sessions", "export", "--dir", dir.to_str().unwrap(), "--format", "jsonl"]);
        let ids: Vec<String> = out
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}"))["request_id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(ids, vec!["rec-chat", "rec-models"]);
        let m = export(&dir, "rec-models");
        assert_eq!(body_of(&m["response_body"]), MODELS.as_bytes());
        assert_eq!(m["end"]["masking"], json!({}));

        assert_verifies(&dir);

        // Permissions: directory 0700, every file in it 0600.
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700, "recording dir mode");
        let mut files = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let p = entry.unwrap().path();
            assert_eq!(mode(&p), 0o600, "{} mode {:o}", p.display(), mode(&p));
            files += 1;
        }
        assert!(files > 0);
        drop(gw);
        let _ = std::fs::remove_dir_all(base);
    }
}

// ───────────────────────────── 2. SSE: per-event offsets, replay ─────────────────────────────

on_both_drivers! {
    fn sse_stream_is_recorded_event_by_event_and_replays_byte_exact(driver) {
        let tokens = ["Mail ", "jane.", "doe@exam", "ple.com", " today, ", "thanks, ", "bye."];
        let events = chat_stream(&tokens);
        let step = Lockstep::new();
        let script = Script::sse(&events);
        let up = script_upstream(Pacing::Lockstep(step.clone()), move |_| script.clone());
        let (base, dir) = rec_dir();
        let gw = Gateway::start_with(driver, &rec_config(&up.url(), &dir, "", true, ""));
        let mut c = gw.connect();
        c.send(request("/v1/chat/completions", "rec-sse", "Content-Type: application/json\r\n", r#"{"stream":true}"#));
        assert_eq!(c.read_head().status(), 200);
        let mut got = Vec::new();
        while let Some(e) = c.read_event() {
            got.push(e);
            step.advance();
        }
        let (rest, _, complete) = c.finish();
        assert!(rest.is_empty() && complete);
        let client_body: Vec<u8> = got.iter().flat_map(|e| format!("{e}\n\n").into_bytes()).collect();
        assert!(contains(&client_body, b"[REDACTED:email]"));
        gw.access_log("rec-sse");

        let s = export(&dir, "rec-sse");
        let recorded = chunks(&s["response_body"]);
        // One recorded chunk per upstream event (lockstep: one event per read), each with its own
        // offset, in order, and together exactly the bytes the client got. (The chunk of the finish
        // event also carries the event synthesized before it with the text held until then.)
        let recorded_bytes: Vec<u8> = recorded.iter().flat_map(|(_, d)| d.clone()).collect();
        assert_eq!(String::from_utf8_lossy(&recorded_bytes), String::from_utf8_lossy(&client_body), "recorded vs client bytes");
        assert_eq!(recorded.len(), events.len(), "one recorded chunk per upstream event");
        for (_, d) in &recorded {
            assert!(d.ends_with(b"\n\n"), "a chunk that is not whole events: {:?}", String::from_utf8_lossy(d));
        }
        assert_eq!(got.len(), events.len() + 1, "the held \"bye.\" comes in a synthesized event");
        let offsets: Vec<u64> = recorded.iter().map(|(o, _)| *o).collect();
        assert!(offsets.windows(2).all(|w| w[0] <= w[1]), "offsets out of order: {offsets:?}");
        assert!(offsets.last() > offsets.first(), "all events at one offset: {offsets:?}");
        assert_eq!(s["end"]["masking"], json!({"email": 1}));
        assert!(list_line(&list(&dir, &[]), "rec-sse").ends_with("sensitive"));

        let out = modelgate_cli(&["sessions", "replay", "--dir", dir.to_str().unwrap(), "rec-sse", "--speed", "100"]);
        assert_eq!(out.code, Some(0), "replay: {}", out.stderr);
        assert_eq!(String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&client_body), "replay output vs client bytes");
        assert_verifies(&dir);
        drop(gw);
        let _ = std::fs::remove_dir_all(base);
    }
}

// ───────────────────────────── 3. kill -9 mid-stream ─────────────────────────────

#[test]
fn sigkill_mid_stream_loses_nothing_the_clients_received() {
    // Three streams held open by their upstream after 2, 5 and 9 events.
    let gate = Lockstep::new(); // never released while the gateway lives
    let g = gate.clone();
    let up = Upstream::start(move |c| {
        while let Some(req) = c.read_request() {
            let at: usize = req
                .head
                .target()
                .rsplit('/')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            let events: Vec<String> = (0..at + 3)
                .map(|i| {
                    format!(
                        "id: {i}\ndata: {{\"token\":\"t{i}-{}\"}}",
                        "x".repeat(i * 7)
                    )
                })
                .collect();
            let pacing = match at {
                0 => Pacing::Burst,
                _ => Pacing::HoldAt {
                    at,
                    gate: g.clone(),
                },
            };
            if !Script::sse(&events).write(c, &pacing) {
                return;
            }
        }
    });
    let (base, dir) = rec_dir();
    let mut gw = Gateway::start(&rec_config(
        &up.url(),
        &dir,
        "",
        false,
        "[server]\nworkers = 2",
    ));
    let mut streams = Vec::new();
    for at in [2usize, 5, 9] {
        let mut c = gw.connect();
        c.send(request(
            &format!("/v1/stream/{at}"),
            &format!("kill-{at}"),
            "",
            "",
        ));
        assert_eq!(c.read_head().status(), 200);
        let mut body = Vec::new();
        for _ in 0..at {
            let e = c.read_event().expect("event before the hold");
            body.extend_from_slice(format!("{e}\n\n").as_bytes());
        }
        streams.push((at, c, body));
    }
    // A completed exchange too, before the kill.
    let done = one_shot(gw.addr, request("/v1/stream/0", "kill-done", "", ""));
    assert_eq!(done.status(), 200);
    gw.access_log("kill-done");

    gw.signal(libc::SIGKILL);
    let status = gw.wait_exit(GUARD);
    assert!(!status.success(), "{status:?}");
    drop(gate);

    for (at, c, body) in &mut streams {
        let (rest, _, complete) = c.finish();
        assert!(!complete, "stream {at} looked complete after the kill");
        let mut client = body.clone();
        client.extend_from_slice(&rest);
        let s = export(&dir, &format!("kill-{at}"));
        let recorded = body_of(&s["response_body"]);
        assert!(
            recorded.starts_with(&client),
            "stream {at}: client bytes are not in the recording\nclient:   {:?}\nrecorded: {:?}",
            String::from_utf8_lossy(&client),
            String::from_utf8_lossy(&recorded)
        );
        assert_eq!(
            recorded, client,
            "stream {at}: recording holds more than the upstream sent before the hold"
        );
        assert!(
            s["end"].is_null(),
            "stream {at} has an end record: {}",
            s["end"]
        );
        assert_eq!(s["response_head"]["status"], 200);
    }
    let lines = list(&dir, &[]);
    assert_eq!(lines.len(), 4, "{lines:#?}");
    assert!(list_line(&lines, "kill-done").contains("end=complete"));
    assert!(list_line(&lines, "kill-5").contains("end=-"), "{lines:#?}");
    let text = assert_no_tampering(&dir);
    eprintln!("verify after SIGKILL:\n{text}");
    let _ = std::fs::remove_dir_all(base);
}

// ───────────────────────────── 4. disk full ─────────────────────────────

/// A tmpfs mounted by the test; unmounted (and removed) on drop.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let path = temp_dir("tmpfs");
        let out = run_guarded(
            Command::new("mount")
                .args([
                    "-t",
                    "tmpfs",
                    "-o",
                    &format!("size={size},mode=0755"),
                    "tmpfs",
                ])
                .arg(&path),
            GUARD,
        );
        if out.code != Some(0) {
            eprintln!("skipped: cannot mount tmpfs ({})", out.stderr.trim());
            let _ = std::fs::remove_dir(&path);
            return None;
        }
        Some(Tmpfs { path })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Incompressible, deterministic bytes (so zstd cannot shrink the recording).
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

const BLOB: usize = 16 * 1024;

fn blob_upstream(pacing: Pacing) -> Upstream {
    script_upstream(pacing, |req| {
        let n: u64 = req
            .head
            .target()
            .rsplit('/')
            .next()
            .unwrap()
            .parse()
            .unwrap_or(0);
        let body = noise(n, BLOB);
        let pieces: Vec<&[u8]> = body.chunks(4096).collect();
        Script::length("application/octet-stream", &pieces)
    })
}

/// Sends `GET /v1/blob/{i}` on a fresh connection; Ok(body) for a complete 200 with the right
/// bytes, Err(response) otherwise (None: closed without a response).
fn fetch_blob(gw: &Gateway, i: u64) -> Result<Vec<u8>, Option<Message>> {
    let mut c = gw.connect();
    c.send(request(
        &format!("/v1/blob/{i}"),
        &format!("blob-{i}"),
        "",
        "",
    ));
    match c.try_read_response() {
        Ok(Some(m)) if m.status() == 200 && m.complete => {
            assert_eq!(m.body, noise(i, BLOB), "blob {i} corrupted");
            Ok(m.body)
        }
        Ok(m) => Err(m),
        Err(e) => panic!("blob {i}: {e}"),
    }
}

#[test]
fn disk_full_fails_closed_with_503_and_keeps_what_was_written() {
    disk_full_fail_closed(Pacing::Burst);
}

/// Same, with the response head going out before the body (paced pieces): the stream that hits
/// the full disk has started and must be cut short.
#[test]
fn disk_full_mid_stream_fails_closed() {
    disk_full_fail_closed(Pacing::Every(std::time::Duration::from_millis(2)));
}

fn disk_full_fail_closed(pacing: Pacing) {
    let Some(fs) = Tmpfs::mount("256k") else {
        return;
    };
    let dir = fs.path.join("sessions");
    let up = blob_upstream(pacing);
    let gw = Gateway::start(&rec_config(
        &up.url(),
        &dir,
        "segment_max_bytes = 65536\non_disk_error = \"fail_closed\"",
        false,
        "",
    ));

    let mut ok = BTreeMap::new();
    let mut first_failure = None;
    for i in 0..100u64 {
        match fetch_blob(&gw, i) {
            Ok(body) => {
                ok.insert(i, body);
            }
            Err(resp) => {
                first_failure = Some((i, resp));
                break;
            }
        }
    }
    let (failed_at, resp) = first_failure.expect("256 KiB never filled up");
    assert!(
        ok.len() >= 4,
        "disk 'full' after only {} requests",
        ok.len()
    );
    eprintln!(
        "first failure at request {failed_at}: {:?}",
        resp.as_ref()
            .map(|r| (r.head.start_line.clone(), r.complete, r.body.len()))
    );
    // The exchange that hit the full disk: a 503 if nothing went out yet, else its body cut short.
    // Never silence (a connection closed without any response). Checked last, so the checks
    // below still run and report.
    let in_flight_problem = match &resp {
        None => Some(format!(
            "request {failed_at}, the one that hit the full disk, got no response at all: the \
             gateway closed the connection without a head or an error"
        )),
        Some(r) if r.status() == 503 => {
            assert_error(r, 503, "recording_unavailable");
            None
        }
        Some(r) => {
            assert_eq!(r.status(), 200);
            (r.complete).then(|| "the stream that hit the full disk looked complete".to_string())
        }
    };

    // Afterwards: every new request is refused with 503 recording_unavailable, and the gateway
    // keeps answering (no crash).
    for i in 0..5u64 {
        let r = one_shot(
            gw.addr,
            request(
                &format!("/v1/blob/{}", 1000 + i),
                &format!("after-{i}"),
                "",
                "",
            ),
        );
        assert_error(&r, 503, "recording_unavailable");
    }
    // Waited for: the log lines come through a pipe read by another thread.
    gw.try_wait_log(GUARD, |l| {
        l.to_string().contains("recording") && l["level"] == "ERROR"
    })
    .unwrap_or_else(|why| panic!("the disk error was not logged: {why}"));
    assert!(!gw.log_dump().contains("panicked"), "gateway panicked");

    // What was written before is intact: listed, readable, and the chain verifies (at most a torn
    // tail where the failed write stopped).
    let lines = list(&dir, &[]);
    for (i, body) in &ok {
        let l = list_line(&lines, &format!("blob-{i}"));
        assert!(
            l.contains("status=200") && l.contains("end=complete"),
            "{l}"
        );
        if *i == 0 || *i == *ok.keys().last().unwrap() {
            let s = export(&dir, &format!("blob-{i}"));
            assert_eq!(
                &body_of(&s["response_body"]),
                body,
                "blob-{i} recording damaged"
            );
        }
    }
    let text = assert_no_tampering(&dir);
    eprintln!("verify after disk full:\n{text}");
    drop(gw);
    if let Some(problem) = in_flight_problem {
        panic!("{problem}");
    }
}

#[test]
fn disk_full_fail_open_keeps_serving() {
    let Some(fs) = Tmpfs::mount("256k") else {
        return;
    };
    let dir = fs.path.join("sessions");
    let up = blob_upstream(Pacing::Burst);
    let gw = Gateway::start(&rec_config(
        &up.url(),
        &dir,
        "segment_max_bytes = 65536\non_disk_error = \"fail_open\"",
        false,
        "",
    ));
    for i in 0..40u64 {
        if let Err(resp) = fetch_blob(&gw, i) {
            panic!(
                "fail_open: request {i} failed: {:?}",
                resp.map(|r| (r.head.start_line.clone(), r.complete, r.body_str()))
            );
        }
    }
    gw.try_wait_log(GUARD, |l| {
        l["level"] == "ERROR" && l.to_string().contains("recording")
    })
    .unwrap_or_else(|why| panic!("the disk never filled up (no recording error logged): {why}"));
    let lines = list(&dir, &[]);
    let complete = lines.iter().filter(|l| l.contains("end=complete")).count();
    assert!(
        (4..40).contains(&complete),
        "recorded {complete} complete sessions:\n{}",
        lines.join("\n")
    );
    let text = assert_no_tampering(&dir);
    eprintln!("verify after disk full (fail_open):\n{text}");
    drop(gw);
}

// ───────────────────────────── 5. refusals ─────────────────────────────

on_both_drivers! {
    fn refused_requests_are_recorded_as_denied(driver) {
        let up = chat_or_models_upstream();
        let (base, dir) = rec_dir();
        let gw = Gateway::start_with(driver, &rec_config(&up.url(), &dir, "", false, ""));
        let r = one_shot(gw.addr, request("/nope/models", "refused-1", "Authorization: Bearer TOPSECRET\r\n", ""));
        assert_error(&r, 404, "not_found");
        let ok = one_shot(gw.addr, request("/v1/models", "allowed-1", "", ""));
        assert_eq!(ok.status(), 200);
        gw.access_log("refused-1");
        gw.access_log("allowed-1");
        let lines = list(&dir, &[]);
        let l = list_line(&lines, "refused-1");
        assert!(l.contains("route=-") && l.contains("status=404") && l.contains("end=denied"), "{l}");
        let s = export(&dir, "refused-1");
        assert_eq!(s["end"]["reason"], "denied");
        assert_eq!(s["end"]["status"], 404);
        assert_eq!(s["start"]["request"]["path"], "/nope/models");
        assert_eq!(header(&s["start"]["request"]["headers"], "authorization"), Some("Bearer [redacted]"));
        assert!(s["response_head"].is_null(), "no upstream response: {}", s["response_head"]);
        assert!(list_line(&lines, "allowed-1").contains("end=complete"));
        assert_eq!(up.requests().len(), 1, "the refused request reached the upstream");
        assert_verifies(&dir);
        drop(gw);
        let _ = std::fs::remove_dir_all(base);
    }
}

/// The refusal says "requests are refused until it recovers": once the disk has room again
/// (the tmpfs is grown), requests are served and recorded again. Allowed: refusals until the
/// worker's next reopen attempt (polled, bounded by 100 tries).
#[test]
fn recording_recovers_once_the_disk_has_room_again() {
    let Some(fs) = Tmpfs::mount("256k") else {
        return;
    };
    let dir = fs.path.join("sessions");
    let up = blob_upstream(Pacing::Every(std::time::Duration::from_millis(1)));
    let gw = Gateway::start(&rec_config(
        &up.url(),
        &dir,
        "segment_max_bytes = 65536\non_disk_error = \"fail_closed\"",
        false,
        "",
    ));
    let mut filled = false;
    for i in 0..100u64 {
        if fetch_blob(&gw, i).is_err() {
            filled = true;
            break;
        }
    }
    assert!(filled, "256 KiB never filled up");
    let r = one_shot(gw.addr, request("/v1/blob/500", "still-full", "", ""));
    assert_error(&r, 503, "recording_unavailable");

    let out = run_guarded(
        Command::new("mount")
            .args(["-o", "remount,size=4m"])
            .arg(&fs.path),
        GUARD,
    );
    assert_eq!(out.code, Some(0), "remount: {}", out.stderr);
    // The worker retries opening a fresh segment about once a second; poll (bounded).
    let recovered = (0..100u64).find(|i| {
        let ok = fetch_blob(&gw, 600 + i).is_ok();
        if !ok {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        ok
    });
    let Some(i) = recovered else {
        panic!("still refusing after the disk got room again: the recorder never recovers (503 recording_unavailable for good)");
    };
    gw.access_log(&format!("blob-{}", 600 + i));
    let l = list_line(&list(&dir, &[]), &format!("blob-{}", 600 + i));
    assert!(l.contains("end=complete"), "{l}");
    assert_no_tampering(&dir);
}

#[test]
fn a_route_can_record_the_unmasked_body_too_and_says_so() {
    let up = chat_or_models_upstream();
    let (_base, dir) = rec_dir();
    let raw_route = "\n[[route]]\nid = \"raw\"\npath_prefix = \"/raw/\"\nupstream = \"models\"\nclass = \"inference\"\nauth = \"none\"\nrecord_raw = true\n";
    let gw = Gateway::start(&(rec_config(&up.url(), &dir, "", true, "") + raw_route));
    let mut c = gw.connect();
    for (path, id) in [
        ("/v1/chat/completions", "masked-only"),
        ("/raw/chat/completions", "with-raw"),
    ] {
        let res = c.request(request(
            path,
            id,
            "Content-Type: application/json\r\n",
            PROMPT,
        ));
        assert!(
            res.body_str().contains("[REDACTED:email]"),
            "{}",
            res.body_str()
        );
        gw.access_log(id);
    }
    let text = |v: &Value| -> String {
        v.as_array()
            .unwrap()
            .iter()
            .map(|c| {
                c["text"]
                    .as_str()
                    .or(c["data"].as_str())
                    .unwrap_or_default()
                    .to_string()
            })
            .collect()
    };
    let plain = export(&dir, "masked-only");
    assert_eq!(plain["start"]["record_upstream_body"], false);
    assert_eq!(plain["upstream_body"], json!([]));
    let raw = export(&dir, "with-raw");
    assert_eq!(raw["start"]["record_upstream_body"], true);
    let (seen, unmasked) = (text(&raw["response_body"]), text(&raw["upstream_body"]));
    assert!(
        seen.contains("[REDACTED:email]") && !seen.contains('@'),
        "{seen}"
    );
    assert!(!unmasked.contains("[REDACTED"), "{unmasked}");
    assert!(
        unmasked.contains('@'),
        "the model's own text, email and all: {unmasked}"
    );
    cli_ok(&["verify", dir.to_str().unwrap()]);
    // Without [recording], asking for raw bodies is a config error, not a silent no.
    let bad = basic_config(&up.url(), "")
        .replace("auth = \"none\"\n", "auth = \"none\"\nrecord_raw = true\n");
    let path = dir.parent().unwrap().join("bad.toml");
    std::fs::write(&path, compose_config(Driver::Auto, &bad)).unwrap();
    let out = modelgate_cli(&["check-config", path.to_str().unwrap()]);
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("route[0].record_raw"), "{}", out.stderr);
}
