//! The recording commands, run as the real binary on a directory written by the real writer:
//! `sessions list|show|replay|export|reindex`, `verify` (exit codes and messages) and
//! `recorder keygen`.

mod recorder_fixtures;

use std::path::Path;
use std::process::{Command, Output};

use modelgate::recorder::{sign, Action, PolicyDecision, SegmentWriter};
use recorder_fixtures::*;

fn modelgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_modelgate"))
        .args(args)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Three sessions: alice allowed (masked an email), bob denied, carol on another model.
fn write_dir(dir: &Path, key: Option<&Path>) {
    let mut s = settings(dir);
    s.signing_key = key.map(|k| sign::load_signing_key(k).unwrap());
    let mut w = SegmentWriter::open(s, 0).unwrap();
    let t0 = 1_718_000_000_000_000; // 2024-06-10T06:13:20Z
    let sid = w.start_session(&start("req-alice", "alice", t0)).unwrap();
    w.response_head(sid, &response_head()).unwrap();
    for (k, e) in sse_events(1, 3).iter().enumerate() {
        w.response_chunk(sid, 20_000 + k as u64 * 10_000, e.as_bytes())
            .unwrap();
    }
    w.end_session(sid, &end(70_000, 2)).unwrap();

    let mut st = start("req-bob", "bob", t0 + 3_600_000_000);
    st.decision = Some(PolicyDecision {
        action: Action::Deny,
        rule: Some("no-admin".into()),
    });
    let sid = w.start_session(&st).unwrap();
    let mut e = end(500, 0);
    e.status = Some(403);
    e.reason = modelgate::recorder::EndReason::Denied;
    w.end_session(sid, &e).unwrap();
    w.rotate().unwrap();

    let mut st = start("req-carol", "carol", t0 + 7_200_000_000);
    st.model = Some("qwen2".into());
    st.identity.as_mut().unwrap().groups = vec!["research".into()];
    let sid = w.start_session(&st).unwrap();
    w.end_session(sid, &end(100, 0)).unwrap();
    w.close().unwrap();
}

fn ids(out: &str) -> Vec<&str> {
    out.lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect()
}

#[test]
fn sessions_list_filters_by_subject_group_model_decision_time_and_sensitivity() {
    let dir = tempfile::tempdir().unwrap();
    write_dir(dir.path(), None);
    let d = dir.path().to_str().unwrap();
    let list = |extra: &[&str]| {
        let mut args = vec!["sessions", "list", "--dir", d];
        args.extend_from_slice(extra);
        let o = modelgate(&args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        stdout(&o)
    };
    let all = list(&[]);
    assert_eq!(ids(&all), ["req-alice", "req-bob", "req-carol"]);
    assert!(
        all.starts_with("2024-06-10T06:13:20.000000Z  req-alice  subject=alice"),
        "{all}"
    );
    assert_eq!(ids(&list(&["--subject", "bob"])), ["req-bob"]);
    assert_eq!(ids(&list(&["--group", "research"])), ["req-carol"]);
    assert_eq!(ids(&list(&["--model", "qwen2"])), ["req-carol"]);
    assert_eq!(
        ids(&list(&["--route", "chat", "--decision", "deny"])),
        ["req-bob"]
    );
    assert_eq!(ids(&list(&["--sensitive"])), ["req-alice"]);
    assert_eq!(
        ids(&list(&["--since", "2024-06-10T07:00:00Z"])),
        ["req-bob", "req-carol"]
    );
    assert_eq!(ids(&list(&["--until", "1718003600"])), ["req-alice"]);
    // The index sidecars were written, 0600, and a second listing uses them.
    let idx = dir.path().join("w0-000001.mgidx");
    assert!(idx.exists());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&idx).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // A stale or garbage index is rebuilt, not trusted.
    std::fs::write(&idx, b"{not json").unwrap();
    assert_eq!(ids(&list(&[])), ["req-alice", "req-bob", "req-carol"]);
    let o = modelgate(&["sessions", "reindex", "--dir", d]);
    assert!(stdout(&o).contains("indexed 3 sessions"), "{}", stdout(&o));
}

#[test]
fn a_bad_time_filter_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    write_dir(dir.path(), None);
    let o = modelgate(&[
        "sessions",
        "list",
        "--dir",
        dir.path().to_str().unwrap(),
        "--since",
        "yesterday",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("RFC 3339"));
}

#[test]
fn sessions_show_prints_head_decision_verdicts_and_timing_with_secrets_redacted() {
    let dir = tempfile::tempdir().unwrap();
    write_dir(dir.path(), None);
    let o = modelgate(&[
        "sessions",
        "show",
        "--dir",
        dir.path().to_str().unwrap(),
        "req-alice",
    ]);
    assert!(o.status.success());
    let out = stdout(&o);
    for want in [
        "session   req-alice",
        "identity  alice groups [ml-users, eng] issuer https://idp.example",
        "decision  allow (rule ml-users-chat)",
        "request   POST /v1/chat/completions",
        "  authorization: Bearer [redacted]",
        "response  200 from vllm/10.0.1.2:8000 at +12.0ms",
        "body      6 chunks",
        "end       complete status 200 at +70.0ms",
        "timing    gateway 0.3ms  upstream ttfb 11.7ms  total 70.0ms",
        "masking   email=2",
        "req body  not recorded (route setting)",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    assert!(!out.contains("secret.sig"));
    let o = modelgate(&[
        "sessions",
        "show",
        "--dir",
        dir.path().to_str().unwrap(),
        "nope",
    ]);
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn sessions_replay_writes_the_response_stream_to_stdout() {
    let dir = tempfile::tempdir().unwrap();
    write_dir(dir.path(), None);
    // The recorded stream spans 50 ms; at speed 100 the replay takes about half a millisecond.
    let o = modelgate(&[
        "sessions",
        "replay",
        "--dir",
        dir.path().to_str().unwrap(),
        "req-alice",
        "--speed",
        "100",
    ]);
    assert!(o.status.success());
    assert_eq!(stdout(&o), sse_events(1, 3).concat());
}

#[test]
fn sessions_export_writes_one_json_line_per_session_by_id_or_filter() {
    let dir = tempfile::tempdir().unwrap();
    write_dir(dir.path(), None);
    let d = dir.path().to_str().unwrap();
    let o = modelgate(&[
        "sessions",
        "export",
        "--dir",
        d,
        "--format",
        "jsonl",
        "--subject",
        "carol",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let lines: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["request_id"], "req-carol");
    assert_eq!(lines[0]["file"], "w0-000002.mgrec");
    let o = modelgate(&["sessions", "export", "--dir", d, "req-alice"]);
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["start"]["identity"]["subject"], "alice");
    assert_eq!(v["end"]["masking"]["email"], 2);
    let text: String = v["response_body"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["text"].as_str().unwrap())
        .collect();
    assert_eq!(text, sse_events(1, 3).concat());
    assert_eq!(v["response_body"][0]["offset_us"], 20_000);
}

#[test]
fn verify_exits_0_on_an_intact_signed_directory_and_1_with_the_first_break() {
    let dir = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("seal.key");
    let o = modelgate(&["recorder", "keygen", key.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    write_dir(dir.path(), Some(&key));
    let d = dir.path().to_str().unwrap();
    let pubkey = format!("{}.pub", key.display());
    let o = modelgate(&["verify", d, "--pubkey", &pubkey]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(stdout(&o).contains("2 signatures ok"), "{}", stdout(&o));

    // Flip one byte inside the first segment's streamed record (its zstd frame).
    let seg = dir.path().join("w0-000001.mgrec");
    let recs = records(&seg);
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[recs[0].0 + 60] ^= 0x20;
    std::fs::write(&seg, bytes).unwrap();
    let o = modelgate(&["verify", d]);
    assert_eq!(o.status.code(), Some(1));
    let msg = String::from_utf8_lossy(&o.stderr).into_owned();
    let want = format!("w0-000001.mgrec: record 0 at byte {}: Corrupt", recs[0].0);
    assert!(msg.contains(&want), "{msg}");
}
