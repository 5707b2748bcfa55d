//! Workers: one thread, one monoio runtime, one `SO_REUSEPORT` listener each (thread per core).
//!
//! A worker owns its connections, its upstream pools and its config generation; nothing on the
//! request path is shared across threads. The control thread (signals) talks to workers only
//! through a channel: `Reload` swaps in a new `Arc<Config>` (new requests use it, requests in
//! flight keep theirs), `Drain` stops accepting, closes idle connections and lets in-flight ones
//! finish within the grace period.
//!
//! The driver is io_uring when the kernel and the memlock limit allow it, else epoll; which one
//! is in use is logged, because monoio's fallback is otherwise silent.

mod aux;
mod control;
mod drain;

use std::cell::{Cell, RefCell};
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use monoio::net::TcpListener;
use monoio::{FusionRuntime, IoUringDriver, LegacyDriver, RuntimeBuilder};

use crate::config::{Config, DriverChoice};
use crate::identity::hub::KeyHub;
use crate::identity::Authenticator;
use crate::pipeline::{Generation, Recorder};
use crate::upstream::Pool;
pub use control::Control;
pub use drain::Drain;

type Runtime =
    FusionRuntime<monoio::time::TimeDriver<IoUringDriver>, monoio::time::TimeDriver<LegacyDriver>>;

/// Per-thread state shared by the worker's connection tasks.
pub struct Worker {
    pub id: usize,
    generation: RefCell<Rc<Generation>>,
    pub drain: Drain,
    active: Cell<usize>,
    id_seed: u64,
    id_counter: Cell<u64>,
    connections: Cell<u64>,
    /// This worker's session recorder; kept across reloads (recording settings need a restart).
    recorder: Option<Rc<Recorder>>,
    /// Issuer keys, shared by all workers.
    hub: Arc<KeyHub>,
}

impl Worker {
    fn new(id: usize, config: Arc<Config>, hub: Arc<KeyHub>) -> std::io::Result<Worker> {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_usize(id);
        let recorder = match &config.recording {
            Some(rec) => Some(Rc::new(Recorder::open(rec, id as u32)?)),
            None => None,
        };
        Ok(Worker {
            id,
            generation: RefCell::new(Rc::new(generation(config, recorder.clone(), &hub))),
            drain: Drain::default(),
            active: Cell::new(0),
            id_seed: h.finish(),
            id_counter: Cell::new(0),
            connections: Cell::new(0),
            recorder,
            hub,
        })
    }

    /// A connection id unique within this worker, for the recorder.
    pub fn next_connection_id(&self) -> u64 {
        let n = self.connections.get() + 1;
        self.connections.set(n);
        n
    }

    /// The config generation new requests run with.
    pub fn generation(&self) -> Rc<Generation> {
        Rc::clone(&self.generation.borrow())
    }

    /// A request id unique across workers and restarts: 16 hex of per-worker random seed, 16 hex
    /// of counter.
    pub fn next_request_id(&self) -> String {
        let n = self.id_counter.get().wrapping_add(1);
        self.id_counter.set(n);
        request_id(self.id_seed, n)
    }

    /// Counts a connection as active until the guard drops.
    pub fn enter(self: &Rc<Self>) -> ActiveGuard {
        self.active.set(self.active.get() + 1);
        ActiveGuard(Rc::clone(self))
    }
}

/// `seed` and `n` as 32 lowercase hex digits. By hand: `format!` cost more than the rest of
/// making the id (perf, h1-1k).
fn request_id(seed: u64, n: u64) -> String {
    let mut id = String::with_capacity(32);
    for word in [seed, n] {
        for shift in (0..16).rev() {
            let digit = (word >> (shift * 4)) & 0xf;
            id.push(char::from(b"0123456789abcdef"[digit as usize]));
        }
    }
    id
}

pub struct ActiveGuard(Rc<Worker>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.set(self.0.active.get() - 1);
    }
}

fn generation(
    config: Arc<Config>,
    recorder: Option<Rc<Recorder>>,
    hub: &Arc<KeyHub>,
) -> Generation {
    let pools = config.upstreams.iter().map(Pool::new).collect();
    let auth = config
        .identity
        .as_ref()
        .map(|i| Authenticator::new(Arc::clone(i), Arc::clone(hub)));
    Generation {
        config,
        pools,
        recorder,
        auth,
    }
}

/// Binds the listeners, starts the workers and the control thread, and returns when every
/// worker has drained. `ready` receives the bound address (useful when listening on port 0).
pub fn run(config: Config, ready: impl FnOnce(SocketAddr)) -> std::io::Result<()> {
    let config = Arc::new(config);
    let listeners = bind(config.server.listen, config.server.workers)?;
    let addr = listeners[0].local_addr()?;
    // Signal handlers go in before anyone can learn the address: a SIGHUP that arrives before
    // them would kill the process (the default action).
    let (senders, receivers): (Vec<_>, Vec<_>) =
        listeners.iter().map(|_| async_channel::unbounded()).unzip();
    let shared = aux::Shared::new(Arc::clone(&config));
    let admin = aux::spawn(Arc::clone(&shared))?;
    control::spawn(Arc::clone(&shared), senders)?;

    let mut threads = Vec::new();
    for (id, (listener, rx)) in listeners.into_iter().zip(receivers).enumerate() {
        let config = Arc::clone(&config);
        let hub = Arc::clone(&shared.hub);
        let thread = std::thread::Builder::new()
            .name(format!("modelgate-w{id}"))
            .spawn(move || run_worker(id, listener, config, hub, rx))?;
        threads.push(thread);
    }
    tracing::info!(%addr, workers = config.server.workers, "listening");
    if let Some(admin) = admin {
        tracing::info!(%admin, "admin listener");
    }
    ready(addr);
    for t in threads {
        if let Err(e) = t.join() {
            tracing::error!(?e, "worker thread panicked");
        }
    }
    Ok(())
}

/// One listening socket per worker on the same address; the kernel spreads connections.
fn bind(addr: SocketAddr, workers: usize) -> std::io::Result<Vec<std::net::TcpListener>> {
    use socket2::{Domain, Socket, Type};
    let mut out: Vec<std::net::TcpListener> = Vec::with_capacity(workers);
    for _ in 0..workers.max(1) {
        // After the first bind, reuse its real port (the config may say port 0).
        let at = out.first().map_or(Ok(addr), |l| l.local_addr())?;
        let socket = Socket::new(Domain::for_address(at), Type::STREAM, None)?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&at.into())?;
        socket.listen(1024)?;
        out.push(socket.into());
    }
    Ok(out)
}

pub(crate) fn build_runtime(choice: DriverChoice) -> std::io::Result<Runtime> {
    match choice {
        DriverChoice::Auto => RuntimeBuilder::<monoio::FusionDriver>::new()
            .uring_builder(ring_setup())
            .enable_timer()
            .build(),
        DriverChoice::IoUring => RuntimeBuilder::<IoUringDriver>::new()
            .uring_builder(ring_setup())
            .enable_timer()
            .build()
            .map(Into::into),
        DriverChoice::Legacy => RuntimeBuilder::<LegacyDriver>::new()
            .enable_timer()
            .build()
            .map(Into::into),
    }
}

/// Ring flags for a ring only its own thread touches: completions' task work runs when the
/// worker next enters the kernel instead of interrupting it (`COOP_TASKRUN`, Linux 5.19), and
/// the kernel skips cross-thread submission locking (`SINGLE_ISSUER`, 6.0). A kernel that
/// refuses them gets a plain ring (probed here, because monoio's fusion driver would otherwise
/// fall back to epoll). `DEFER_TASKRUN` is not used: monoio submits without `GETEVENTS` while
/// tasks are runnable, so completions would wait until the worker is idle.
fn ring_setup() -> io_uring::Builder {
    let mut tuned = io_uring::IoUring::builder();
    tuned.setup_coop_taskrun().setup_single_issuer();
    match tuned.build(8) {
        Ok(_) => tuned,
        Err(_) => io_uring::IoUring::builder(),
    }
}

fn run_worker(
    id: usize,
    listener: std::net::TcpListener,
    config: Arc<Config>,
    hub: Arc<KeyHub>,
    rx: async_channel::Receiver<Control>,
) {
    let mut rt = match build_runtime(config.server.driver) {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(worker = id, error = %e, "cannot build runtime (io_uring needs a kernel ≥ 5.6 and LimitMEMLOCK); try driver = \"legacy\"");
            std::process::exit(1);
        }
    };
    let driver = match rt {
        FusionRuntime::Uring(_) => "io_uring",
        FusionRuntime::Legacy(_) => "legacy",
    };
    tracing::info!(worker = id, driver, "worker started");
    rt.block_on(async move {
        let listener = match TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(worker = id, error = %e, "cannot register listener");
                return;
            }
        };
        let worker = match Worker::new(id, config, hub) {
            Ok(w) => Rc::new(w),
            Err(e) => {
                tracing::error!(worker = id, error = %e, "cannot open the session recorder");
                std::process::exit(1);
            }
        };
        if let Some(recorder) = &worker.recorder {
            monoio::spawn(recorder_upkeep(Rc::clone(recorder)));
        }
        accept_loop(&worker, listener, rx).await;
        drain(&worker).await;
        if let Some(recorder) = &worker.recorder {
            if let Err(e) = recorder.writer.borrow_mut().flush() {
                tracing::error!(worker = id, error = %e, "final recording flush failed");
            }
        }
    });
}

/// Accepts until draining starts. Control messages are handled by their own task, so the
/// accept operation is never cancelled just to look at the channel: on io_uring, dropping an
/// accept that already completed in the kernel would leak the accepted socket.
async fn accept_loop(
    worker: &Rc<Worker>,
    listener: TcpListener,
    rx: async_channel::Receiver<Control>,
) {
    monoio::spawn(control_task(Rc::clone(worker), rx));
    loop {
        let accepted = monoio::select! {
            accepted = listener.accept() => accepted,
            _ = worker.drain.wait() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let worker = Rc::clone(worker);
                monoio::spawn(crate::server::serve(worker, stream, peer));
            }
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(worker = worker.id, error = %e, "accept failed");
                monoio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Applies reloads; starts the drain on `Drain` (or when the control thread is gone).
async fn control_task(worker: Rc<Worker>, rx: async_channel::Receiver<Control>) {
    loop {
        match rx.recv().await {
            Ok(Control::Reload(config, ack)) => {
                let next = generation(config, worker.recorder.clone(), &worker.hub);
                *worker.generation.borrow_mut() = Rc::new(next);
                let _ = ack.send(());
            }
            Ok(Control::Drain) | Err(_) => {
                worker.drain.start();
                return;
            }
        }
    }
}

/// Time-driven recorder work: interval flushes, segment age rotation, fsync policy, retention,
/// and replacing a failed writer once the disk takes writes again.
async fn recorder_upkeep(recorder: Rc<Recorder>) {
    let mut last_retention = Instant::now();
    let mut last_reopen = Instant::now();
    loop {
        monoio::time::sleep(Duration::from_millis(100)).await;
        if recorder.writer.borrow().is_failed() {
            if last_reopen.elapsed() >= Duration::from_secs(1) {
                last_reopen = Instant::now();
                recorder.reopen();
            }
            continue;
        }
        let mut writer = recorder.writer.borrow_mut();
        if let Err(e) = writer.maybe_flush(std::time::Instant::now()) {
            tracing::error!(error = %e, "session recording failed");
        }
        if last_retention.elapsed() >= Duration::from_secs(60) {
            last_retention = Instant::now();
            if let Err(e) = writer.enforce_retention(std::time::SystemTime::now()) {
                tracing::warn!(error = %e, "recording retention failed");
            }
        }
    }
}

/// After the accept loop ended (listener dropped, idle connections woken to close): wait for
/// active connections up to the grace period.
async fn drain(worker: &Rc<Worker>) {
    let grace = worker.generation().config.server.drain_grace;
    let started = Instant::now();
    while worker.active.get() > 0 && started.elapsed() < grace {
        monoio::time::sleep(Duration::from_millis(20)).await;
    }
    if worker.active.get() > 0 {
        tracing::warn!(
            worker = worker.id,
            open = worker.active.get(),
            "drain grace period over, closing connections"
        );
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn request_ids_are_the_seed_and_counter_in_hex() {
        for (seed, n) in [(0, 0), (0xdead_beef, 1), (u64::MAX, 0x0123_4567_89ab_cdef)] {
            assert_eq!(super::request_id(seed, n), format!("{seed:016x}{n:016x}"));
        }
    }
}
