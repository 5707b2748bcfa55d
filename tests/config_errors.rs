//! `modelgate check-config FILE`: a good file prints `FILE: ok` and exits 0; each kind of bad file
//! exits 1 with `error: FILE:LINE:COL: …` naming the key, the line pointing at the culprit, and a
//! `  fix: ` hint on the next line. The shipped example configs must pass.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use support::*;

const GOOD: &str = r#"[server]
listen = "127.0.0.1:0"
workers = 1
driver = "auto"
drain_grace = "30s"

[limits]
max_headers = 100
max_header_bytes = 32768
max_uri_bytes = 8192
max_trailer_bytes = 16384

[timeouts]
header_read = "10s"
body_idle = "60s"
keepalive_idle = "75s"
upstream_connect = "3s"
upstream_first_byte = "5m"
upstream_idle = "1h"

[log]
format = "json"
level = "info"
access_log = true

[[upstream]]
name = "models"
endpoints = ["127.0.0.1:8000", "127.0.0.1:8001"]
fail_backoff = "250ms"
max_idle_per_endpoint = 64

[[route]]
id = "openai"
host = "api.example.com"
path_prefix = "/v1/"
upstream = "models"
class = "inference"
auth = "none"
"#;

const MINIMAL_TAIL: &str = r#"
[[upstream]]
name = "models"
endpoints = ["127.0.0.1:8000"]

[[route]]
id = "main"
path_prefix = "/"
upstream = "models"
class = "inference"
auth = "none"
"#;

fn check_config(text: &str) -> (String, Output) {
    let dir = temp_dir("cfg");
    let path = dir.join("gateway.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(&path)
        .output()
        .expect("run check-config");
    let _ = std::fs::remove_dir_all(&dir);
    (path.display().to_string(), out)
}

/// 1-based line of the first line of `text` containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not in config"))
        + 1
}

/// Asserts exit 1 and `error: PATH:LINE:COL: message` naming everything in `mentions`, then a
/// `  fix: ` line.
#[track_caller]
fn assert_rejected(text: &str, line: Option<usize>, mentions: &[&str]) {
    let (path, out) = check_config(text);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "exit status; stderr:\n{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no `error: ` line in:\n{stderr}"));
    let rest = lines[at].strip_prefix("error: ").unwrap();
    let location = rest
        .strip_prefix(&format!("{path}:"))
        .unwrap_or_else(|| panic!("error does not start with the file path {path}: {rest}"));
    let mut parts = location.splitn(3, ':');
    let got_line: usize = parts
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no LINE in {rest}"));
    let col: usize = parts
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no COL in {rest}"));
    let message = parts.next().unwrap_or("");
    assert!(col >= 1, "column {col} in {rest}");
    if let Some(line) = line {
        assert_eq!(got_line, line, "line in {rest}");
    }
    for m in mentions {
        assert!(
            message.contains(m),
            "message does not mention {m:?}: {rest}"
        );
    }
    assert!(
        lines
            .get(at + 1)
            .is_some_and(|l| l.starts_with("  fix: ") && l.len() > "  fix: ".len()),
        "no `  fix: ` line after the error:\n{stderr}"
    );
}

#[test]
fn good_config_prints_ok_and_exits_zero() {
    let (path, out) = check_config(GOOD);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim_end(),
        format!("{path}: ok")
    );
}

#[test]
fn minimal_config_with_only_an_upstream_and_a_route_is_ok() {
    let (_, out) = check_config(MINIMAL_TAIL);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn unknown_key_is_rejected_with_its_line_and_name() {
    let text = format!("[server]\nlisten = \"127.0.0.1:0\"\nlisten_backlog = 5\n{MINIMAL_TAIL}");
    assert_rejected(&text, Some(3), &["listen_backlog"]);
}

#[test]
fn unknown_key_in_a_route_is_rejected_with_its_line() {
    let text = MINIMAL_TAIL.replace("path_prefix = \"/\"", "path_prefx = \"/\"");
    assert_rejected(&text, Some(line_of(&text, "path_prefx")), &["path_prefx"]);
}

#[test]
fn bad_duration_is_rejected_naming_the_key() {
    let text =
        format!("[timeouts]\nbody_idle = \"60s\"\nheader_read = \"10 parsecs\"\n{MINIMAL_TAIL}");
    assert_rejected(&text, Some(3), &["`timeouts.header_read`"]);
}

#[test]
fn duration_without_unit_is_rejected() {
    let text = format!("[timeouts]\nupstream_connect = \"3\"\n{MINIMAL_TAIL}");
    assert_rejected(&text, Some(2), &["`timeouts.upstream_connect`"]);
}

#[test]
fn route_naming_an_unknown_upstream_is_rejected_at_that_line() {
    let text = MINIMAL_TAIL.replace("upstream = \"models\"", "upstream = \"nope\"");
    assert_rejected(
        &text,
        Some(line_of(&text, "upstream = \"nope\"")),
        &["nope", "upstream"],
    );
}

#[test]
fn duplicate_route_id_is_rejected_at_the_second_one() {
    let text = format!("{MINIMAL_TAIL}\n[[route]]\nid = \"main\"\npath_prefix = \"/v2/\"\nupstream = \"models\"\nclass = \"inference\"\nauth = \"none\"\n");
    let second = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains("id = \"main\""))
        .nth(1)
        .unwrap()
        .0
        + 1;
    assert_rejected(&text, Some(second), &["main", "id"]);
}

#[test]
fn bad_listen_address_is_rejected_naming_the_key() {
    let text = format!("[server]\nworkers = 1\nlisten = \"localhost:notaport\"\n{MINIMAL_TAIL}");
    assert_rejected(&text, Some(3), &["`server.listen`"]);
}

#[test]
fn unknown_driver_is_rejected_naming_the_key() {
    let text = format!("[server]\ndriver = \"turbo\"\n{MINIMAL_TAIL}");
    assert_rejected(&text, Some(2), &["`server.driver`"]);
}

#[test]
fn toml_syntax_error_is_reported_at_its_line() {
    let text = format!("[server]\nworkers = 1\nlisten = \n{MINIMAL_TAIL}");
    assert_rejected(&text, Some(3), &[]);
}

#[test]
fn config_without_routes_is_rejected() {
    let text = "[[upstream]]\nname = \"models\"\nendpoints = [\"127.0.0.1:8000\"]\n";
    let (_, out) = check_config(text);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("error: "),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn missing_file_is_an_error() {
    let out = Command::new(BIN)
        .arg("check-config")
        .arg("/nonexistent/modelgate.toml")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).starts_with("error: "),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn shipped_example_configs_pass_check_config() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "toml") {
            let out = Command::new(BIN)
                .arg("check-config")
                .arg(&path)
                .output()
                .unwrap();
            assert_eq!(
                out.status.code(),
                Some(0),
                "{}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

#[test]
fn http2_upstream_protocols_must_match_the_tls_setting() {
    let h2_plain = GOOD.replace(
        "fail_backoff = \"250ms\"",
        "fail_backoff = \"250ms\"\nprotocol = \"h2\"",
    );
    let line = line_of(&h2_plain, "protocol = ");
    assert_rejected(&h2_plain, Some(line), &["h2", "[upstream.tls]"]);
    let unknown = GOOD.replace(
        "fail_backoff = \"250ms\"",
        "fail_backoff = \"250ms\"\nprotocol = \"http3\"",
    );
    assert_rejected(&unknown, None, &["protocol"]);
}
