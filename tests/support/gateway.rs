//! The gateway under test as a child process: config written to a private temp dir, JSON logs
//! collected from stderr on a background thread (and echoed, so a failing test shows them), the
//! real listening address taken from the `listening` log line, the process killed on drop.

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::client::Client;
use super::http::GUARD;

pub const BIN: &str = env!("CARGO_BIN_EXE_modelgate");

/// Startup may compete with the owner's compile on a 2-core machine: a more generous guard.
const START_GUARD: Duration = Duration::from_secs(30);

/// Which I/O driver the gateway is told to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Driver {
    Auto,
    IoUring,
    Legacy,
}

impl Driver {
    pub fn as_str(self) -> &'static str {
        match self {
            Driver::Auto => "auto",
            Driver::IoUring => "io_uring",
            Driver::Legacy => "legacy",
        }
    }

    /// Whether this kernel lets the test process set up an io_uring (Legacy and Auto always run).
    pub fn is_available(self) -> bool {
        if self != Driver::IoUring {
            return true;
        }
        let mut params = [0u8; 120]; // struct io_uring_params, zeroed
                                     // SAFETY: io_uring_setup reads and writes only the params buffer we pass; the returned fd
                                     // is closed right away.
        let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 4u32, params.as_mut_ptr()) };
        if fd < 0 {
            return false;
        }
        // SAFETY: fd was just returned by io_uring_setup and is owned here.
        unsafe { libc::close(fd as i32) };
        true
    }
}

#[derive(Default)]
struct Logs {
    lines: Mutex<(Vec<Value>, bool)>,
    changed: Condvar,
}

pub struct Gateway {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub dir: PathBuf,
    pub config_path: PathBuf,
    pub driver: Driver,
    logs: Arc<Logs>,
}

impl Gateway {
    /// Starts with `driver = "auto"`.
    pub fn start(config: &str) -> Gateway {
        Gateway::start_with(Driver::Auto, config)
    }

    /// Starts the gateway with `config` completed by [`compose_config`]; panics (with the logs) if
    /// it does not report a listening address.
    pub fn start_with(driver: Driver, config: &str) -> Gateway {
        let dir = temp_dir("gw");
        let config_path = dir.join("modelgate.toml");
        write_atomically(&config_path, &compose_config(driver, config));
        let mut child = Command::new(BIN)
            .arg("run")
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {BIN}: {e}"));
        let logs = Arc::new(Logs::default());
        let stderr = child.stderr.take().unwrap();
        let sink = logs.clone();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                eprintln!("[gateway] {line}");
                let value = serde_json::from_str(&line).unwrap_or(Value::String(line));
                sink.lines.lock().unwrap().0.push(value);
                sink.changed.notify_all();
            }
            sink.lines.lock().unwrap().1 = true;
            sink.changed.notify_all();
        });
        let mut gw = Gateway {
            child: Some(child),
            addr: "0.0.0.0:0".parse().unwrap(),
            dir,
            config_path,
            driver,
            logs,
        };
        let listening = gw.wait_log_within(START_GUARD, |l| l["message"] == "listening");
        let addr = listening["addr"]
            .as_str()
            .unwrap_or_else(|| panic!("listening line without addr: {listening}"));
        gw.addr = addr
            .parse()
            .unwrap_or_else(|e| panic!("listening addr {addr:?}: {e}"));
        gw
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("gateway already reaped").id() as i32
    }

    pub fn connect(&self) -> Client {
        Client::connect(self.addr)
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid; it has not been reaped (child is Some).
        let rc = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(rc, 0, "kill({}, {sig})", self.pid());
    }

    /// Rewrites the config file (same driver, same completion) and sends SIGHUP. Callers wait
    /// for the `config reloaded` / `config reload rejected` line themselves.
    pub fn reload(&self, config: &str) {
        write_atomically(&self.config_path, &compose_config(self.driver, config));
        self.signal(libc::SIGHUP);
    }

    /// Writes raw text as the config file (no completion) and sends SIGHUP.
    pub fn reload_raw(&self, text: &str) {
        write_atomically(&self.config_path, text);
        self.signal(libc::SIGHUP);
    }

    /// All log lines so far (JSON objects; non-JSON lines as strings).
    pub fn logs(&self) -> Vec<Value> {
        self.logs.lines.lock().unwrap().0.clone()
    }

    /// Waits for a log line matching `pred`; panics with the full log when the guard runs out or
    /// the gateway's stderr closes first.
    pub fn wait_log(&self, pred: impl Fn(&Value) -> bool) -> Value {
        self.wait_log_within(GUARD, pred)
    }

    pub fn wait_log_within(&self, limit: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        self.try_wait_log(limit, pred)
            .unwrap_or_else(|why| panic!("{why}; log so far:\n{}", self.log_dump()))
    }

    pub fn try_wait_log(
        &self,
        limit: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<Value, String> {
        let deadline = Instant::now() + limit;
        let mut guard = self.logs.lines.lock().unwrap();
        loop {
            if let Some(v) = guard.0.iter().find(|v| pred(v)) {
                return Ok(v.clone());
            }
            if guard.1 {
                return Err("gateway stderr closed before the expected log line".into());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(format!("expected log line not seen within {limit:?}"));
            }
            guard = self
                .logs
                .changed
                .wait_timeout(guard, deadline - now)
                .unwrap()
                .0;
        }
    }

    /// Waits until at least `n` log lines match `pred`; returns them.
    pub fn wait_log_count(&self, n: usize, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + GUARD;
        let mut guard = self.logs.lines.lock().unwrap();
        loop {
            let found: Vec<Value> = guard.0.iter().filter(|v| pred(v)).cloned().collect();
            if found.len() >= n {
                return found;
            }
            let now = Instant::now();
            if guard.1 || now >= deadline {
                drop(guard);
                panic!(
                    "saw {} matching log lines, expected {n}; log so far:\n{}",
                    found.len(),
                    self.log_dump()
                );
            }
            guard = self
                .logs
                .changed
                .wait_timeout(guard, deadline - now)
                .unwrap()
                .0;
        }
    }

    /// The access log line for a request id.
    pub fn access_log(&self, request_id: &str) -> Value {
        self.wait_log(|l| l["message"] == "access" && l["request_id"] == request_id)
    }

    pub fn log_dump(&self) -> String {
        self.logs()
            .iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits (up to `limit`) for the process to exit and reaps it.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        let child = self.child.as_mut().expect("gateway already reaped");
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "gateway did not exit within {limit:?}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Peak resident set size (VmHWM) of the gateway process, in KiB.
    pub fn vm_hwm_kib(&self) -> u64 {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/PID/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/PID/status")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Completes a test's config: `[server]` gets `listen = "127.0.0.1:0"`, `workers = 1` and the
/// driver unless the test set them; `[log]` gets `format = "json"` and `level = "info"`.
/// Keys are inserted right under an existing section header, or a new section is added at the top.
pub fn compose_config(driver: Driver, body: &str) -> String {
    let mut server = Vec::new();
    if !has_key(body, "listen") {
        server.push("listen = \"127.0.0.1:0\"".to_string());
    }
    if !has_key(body, "workers") {
        server.push("workers = 1".to_string());
    }
    if !has_key(body, "driver") {
        server.push(format!("driver = \"{}\"", driver.as_str()));
    }
    let mut log = vec!["format = \"json\"".to_string()];
    if !has_key(body, "level") {
        log.push("level = \"info\"".to_string());
    }
    let with_server = insert_into_section(body, "server", &server);
    insert_into_section(&with_server, "log", &log)
}

fn has_key(body: &str, key: &str) -> bool {
    body.lines().any(|l| {
        l.trim_start()
            .strip_prefix(key)
            .is_some_and(|rest| rest.trim_start().starts_with('='))
    })
}

fn insert_into_section(body: &str, section: &str, keys: &[String]) -> String {
    if keys.is_empty() {
        return body.to_string();
    }
    let header = format!("[{section}]");
    let added = keys.join("\n");
    let mut out = String::new();
    let mut inserted = false;
    for line in body.lines() {
        out.push_str(line);
        out.push('\n');
        if !inserted && line.trim() == header {
            out.push_str(&added);
            out.push('\n');
            inserted = true;
        }
    }
    if inserted {
        out
    } else {
        format!("{header}\n{added}\n\n{out}")
    }
}

/// A fresh directory under the system temp dir, unique per process and call.
pub fn temp_dir(tag: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!(
        "modelgate-test-{tag}-{}-{n}-{nanos}",
        std::process::id()
    ));
    fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// Writes through a temporary file and a rename, so the gateway never reads a half-written config.
pub fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, text).expect("write config");
    fs::rename(&tmp, path).expect("rename config");
}

/// The minimal config used by most tests: one upstream `models` and one catch-all route `main`
/// on `/` pointing at it, plus any extra sections.
pub fn basic_config(upstream: &str, extra: &str) -> String {
    format!(
        "{extra}\n\n[[upstream]]\nname = \"models\"\nendpoints = [\"{upstream}\"]\n\n[[route]]\nid = \"main\"\npath_prefix = \"/\"\nupstream = \"models\"\nclass = \"inference\"\nauth = \"none\"\n"
    )
}
