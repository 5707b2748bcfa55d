//! The gRPC side of the tests: a KServe v2 server written with `grpcio` on the stubs
//! `tritonclient` ships (tests/clients/kserve_grpc_server.py), and the `tritonclient[grpc]`
//! client (tests/clients/triton_grpc_client.py), both real, both Python child processes.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::http::GUARD;
use super::script::{client_script, run_guarded};

/// A running KServe gRPC server; killed on drop.
pub struct KserveServer {
    child: Child,
    pub addr: SocketAddr,
    lines: Arc<Mutex<Vec<String>>>,
}

impl KserveServer {
    pub fn start() -> KserveServer {
        let mut child = Command::new("python3")
            .arg(client_script("kserve_grpc_server.py"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the KServe gRPC server (python3 with tritonclient[grpc])");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        out.read_line(&mut first).expect("read PORT line");
        let port: u16 = first
            .strip_prefix("PORT ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("KServe server said {first:?}; is tritonclient[grpc] installed? (tests/install-deps.sh)"));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        KserveServer {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            lines,
        }
    }

    /// Freezes (`SIGSTOP`) or thaws (`SIGCONT`) the server: its kernel keeps the connections
    /// open and acknowledges bytes, but nothing answers, as with a hung host.
    pub fn freeze(&self, frozen: bool) {
        let signal = if frozen { "-STOP" } else { "-CONT" };
        let ok = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill {signal} the KServe server");
    }

    /// Local ports of the established TCP connections to this server (one per client
    /// connection), from `ss`.
    pub fn client_ports(&self) -> Vec<u16> {
        let out = Command::new("ss")
            .args(["-Htn", "state", "established"])
            .arg(format!("dport = :{}", self.addr.port()))
            .output()
            .expect("run ss");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                l.split_whitespace()
                    .nth(2)?
                    .rsplit(':')
                    .next()?
                    .parse()
                    .ok()
            })
            .collect()
    }

    /// What the server reported so far (`INFER echo`, `LOAD m`, …).
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits until the server reported `line` (false after the guard).
    pub fn wait_line(&self, line: &str) -> bool {
        let deadline = Instant::now() + GUARD;
        while Instant::now() < deadline {
            if self.lines().iter().any(|l| l == line) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for KserveServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the tritonclient CLI against `addr` and returns its one JSON line.
/// `args`: `--mode`, `--model`, `--token`, `--text`, `--timeout` as the script takes them.
pub fn triton(addr: SocketAddr, args: &[&str]) -> Value {
    let out = run_guarded(
        Command::new("python3")
            .arg(client_script("triton_grpc_client.py"))
            .args(["--url", &addr.to_string()])
            .args(args),
        GUARD * 3,
    );
    let text = out.stdout_str();
    serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "tritonclient printed {text:?} ({e}); stderr: {}",
            out.stderr
        )
    })
}
