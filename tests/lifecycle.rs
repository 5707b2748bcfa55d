//! Process lifecycle: SIGHUP reload (open streams keep going, new routes apply to new requests,
//! every worker sees them, a bad file is rejected and the old config stays), SIGTERM drain
//! (in-flight stream completes, new connections refused, exit 0, drain_grace bounds the wait),
//! and the driver each worker runs on.

mod support;

use std::io::ErrorKind;
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use support::*;

/// Config with one upstream per route: `(route id, path prefix, endpoint)`.
fn routes_config(extra: &str, routes: &[(&str, &str, &str)]) -> String {
    let mut out = format!("{extra}\n");
    for (id, prefix, endpoint) in routes {
        out.push_str(&format!(
            "\n[[upstream]]\nname = \"up-{id}\"\nendpoints = [\"{endpoint}\"]\n\n[[route]]\nid = \"{id}\"\npath_prefix = \"{prefix}\"\nupstream = \"up-{id}\"\nclass = \"inference\"\nauth = \"none\"\n"
        ));
    }
    out
}

/// Opens an SSE stream that the upstream holds after its first event until `gate` advances.
fn open_held_stream(gw: &Gateway, path: &str) -> Client {
    let mut c = gw.connect();
    c.send(get(path));
    assert_eq!(c.read_head().status(), 200);
    assert_eq!(c.read_event(), Some(sse_event(0)));
    c
}

fn assert_stream_completes(c: &mut Client) {
    assert_eq!(c.read_event(), Some(sse_event(1)));
    assert_eq!(c.read_event(), Some(sse_event(2)));
    assert_eq!(c.read_event(), None);
    let (_, _, complete) = c.finish();
    assert!(complete, "stream ended without its terminal chunk");
}

fn held_stream_upstream(gate: &Lockstep) -> Upstream {
    sse_upstream(
        3,
        Pacing::HoldAt {
            at: 1,
            gate: gate.clone(),
        },
        SseFraming::Chunked,
    )
}

on_both_drivers! {
    fn sighup_reload_keeps_the_open_stream_and_applies_a_new_route(driver) {
        let gate = Lockstep::new();
        let streamer = held_stream_upstream(&gate);
        let v2 = Upstream::ok("v2");
        let gw = Gateway::start_with(driver, &routes_config("", &[("v1", "/v1/", &streamer.url())]));
        let mut stream = open_held_stream(&gw, "/v1/chat/completions");
        assert_error(&one_shot(gw.addr, get("/v2/models")), 404, "not_found");

        gw.reload(&routes_config("", &[("v1", "/v1/", &streamer.url()), ("v2", "/v2/", &v2.url())]));
        gw.wait_log(|l| l["message"] == "config reloaded");

        let resp = one_shot(gw.addr, get("/v2/models"));
        assert_eq!(resp.status(), 200, "new route after reload: {:?} {}", resp.head, resp.body_str());
        assert_eq!(resp.body_str(), "v2");

        gate.advance();
        assert_stream_completes(&mut stream);
    }

    fn sigterm_drains_the_in_flight_stream_refuses_new_connections_and_exits_zero(driver) {
        let gate = Lockstep::new();
        let streamer = held_stream_upstream(&gate);
        let mut gw = Gateway::start_with(driver, &routes_config("[server]\ndrain_grace = \"30s\"", &[("v1", "/v1/", &streamer.url())]));
        let mut stream = open_held_stream(&gw, "/v1/chat/completions");

        gw.signal(libc::SIGTERM);
        gw.wait_log(|l| l["message"] == "draining");
        assert_connections_refused(&gw);

        gate.advance();
        assert_stream_completes(&mut stream);
        let status = gw.wait_exit(GUARD);
        assert_eq!(status.code(), Some(0), "exit status {status:?}");
    }

    fn bad_config_on_reload_is_rejected_and_the_old_routes_still_work(driver) {
        let v1 = Upstream::ok("v1");
        let v2 = Upstream::ok("v2");
        let gw = Gateway::start_with(driver, &routes_config("", &[("v1", "/v1/", &v1.url())]));

        gw.reload_raw("this is [not valid toml");
        let rejected = gw.wait_log(|l| l["message"] == "config reload rejected");
        assert!(rejected["error"].as_str().is_some_and(|e| !e.is_empty()), "{rejected}");
        assert_eq!(one_shot(gw.addr, get("/v1/models")).body_str(), "v1");

        // Valid TOML, invalid config: the new route names an upstream that does not exist.
        let mut broken = routes_config("", &[("v1", "/v1/", &v1.url()), ("v2", "/v2/", &v2.url())]);
        broken = broken.replace("upstream = \"up-v2\"", "upstream = \"missing\"");
        gw.reload(&broken);
        gw.wait_log_count(2, |l| l["message"] == "config reload rejected");
        assert_eq!(one_shot(gw.addr, get("/v1/models")).body_str(), "v1");
        assert_error(&one_shot(gw.addr, get("/v2/models")), 404, "not_found");
        assert!(!gw.logs().iter().any(|l| l["message"] == "config reloaded"), "a bad file was applied");

        // A good file afterwards is still accepted.
        gw.reload(&routes_config("", &[("v1", "/v1/", &v1.url()), ("v2", "/v2/", &v2.url())]));
        gw.wait_log(|l| l["message"] == "config reloaded");
        assert_eq!(one_shot(gw.addr, get("/v2/models")).body_str(), "v2");
    }

    fn reload_reaches_every_worker(driver) {
        let v1 = Upstream::ok("v1");
        let v2 = Upstream::ok("v2");
        let gw = Gateway::start_with(driver, &routes_config("[server]\nworkers = 2", &[("v1", "/v1/", &v1.url())]));
        gw.wait_log_count(2, |l| l["message"] == "worker started");
        gw.reload(&routes_config("[server]\nworkers = 2", &[("v1", "/v1/", &v1.url()), ("v2", "/v2/", &v2.url())]));
        gw.wait_log(|l| l["message"] == "config reloaded");
        // Connections spread over the workers (SO_REUSEPORT); every one must see the new route.
        for i in 0..16 {
            let resp = one_shot(gw.addr, get("/v2/models"));
            assert_eq!(resp.status(), 200, "connection {i} after reload: {:?}", resp.head);
        }
    }

    fn sigterm_closes_idle_keep_alive_connections_and_exits_zero(driver) {
        let up = Upstream::ok("ok");
        let mut gw = Gateway::start_with(driver, &basic_config(&up.url(), "[server]\ndrain_grace = \"30s\""));
        let mut idle = gw.connect();
        assert_eq!(idle.request(get("/v1/models")).status(), 200);
        gw.signal(libc::SIGTERM);
        let extra = idle.wait_closed();
        assert!(extra.is_empty(), "bytes on the idle connection: {:?}", String::from_utf8_lossy(&extra));
        let status = gw.wait_exit(GUARD);
        assert_eq!(status.code(), Some(0), "exit status {status:?}");
    }

    fn worker_logs_the_driver_it_was_told_to_use(driver) {
        let up = Upstream::ok("ok");
        let gw = Gateway::start_with(driver, &basic_config(&up.url(), ""));
        let line = gw.wait_log(|l| l["message"] == "worker started");
        assert_eq!(line["driver"], driver.as_str(), "{line}");
        assert_eq!(one_shot(gw.addr, get("/v1/models")).status(), 200);
    }
}

/// After `draining` is logged the listener goes away: a connect is refused (retried briefly, as the
/// log line may precede the close by a moment).
fn assert_connections_refused(gw: &Gateway) {
    let deadline = Instant::now() + GUARD;
    loop {
        match TcpStream::connect_timeout(&gw.addr, Duration::from_secs(1)) {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => return,
            // A connection that raced the listener's close is reset; try again.
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                assert!(Instant::now() < deadline, "listener never went away");
                thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("connect during drain failed oddly: {e}"),
            Ok(_) => {
                assert!(
                    Instant::now() < deadline,
                    "new connections still accepted while draining"
                );
                thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

#[test]
fn sigterm_exits_zero_when_drain_grace_runs_out_on_a_stuck_stream() {
    let gate = Lockstep::new(); // never advanced: the stream never ends on its own
    let streamer = held_stream_upstream(&gate);
    let mut gw = Gateway::start(&routes_config(
        "[server]\ndrain_grace = \"500ms\"",
        &[("v1", "/v1/", &streamer.url())],
    ));
    let mut stream = open_held_stream(&gw, "/v1/chat/completions");
    gw.signal(libc::SIGTERM);
    let status = gw.wait_exit(GUARD);
    assert_eq!(status.code(), Some(0), "exit status {status:?}");
    let (_, _, complete) = stream.finish();
    assert!(
        !complete,
        "a stream cut by the drain deadline must not look complete"
    );
}

#[test]
fn auto_driver_logs_which_driver_it_picked() {
    let up = Upstream::ok("ok");
    let gw = Gateway::start_with(Driver::Auto, &basic_config(&up.url(), ""));
    let line = gw.wait_log(|l| l["message"] == "worker started");
    let picked = line["driver"].as_str().unwrap_or_default();
    assert!(picked == "io_uring" || picked == "legacy", "{line}");
}
