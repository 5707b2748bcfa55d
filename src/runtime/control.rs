//! The control thread: turns signals into messages for the workers.
//!
//! - SIGHUP: re-read and validate the config file; on success every worker gets the new config
//!   (open connections and streams are untouched); on failure the error is logged with file,
//!   line and key, and the old config stays.
//! - SIGTERM / SIGINT: drain. Workers stop accepting and finish in-flight requests within
//!   `server.drain_grace`.

use std::sync::Arc;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use super::aux::Shared;
use crate::config::Config;

pub enum Control {
    /// Swap in this config, then acknowledge, so "config reloaded" is logged only once every
    /// worker runs with it.
    Reload(Arc<Config>, std::sync::mpsc::Sender<()>),
    Drain,
}

pub fn spawn(
    shared: Arc<Shared>,
    workers: Vec<async_channel::Sender<Control>>,
) -> std::io::Result<()> {
    let mut signals = Signals::new([SIGHUP, SIGTERM, SIGINT])?;
    std::thread::Builder::new()
        .name("modelgate-ctl".into())
        .spawn(move || {
            for signal in signals.forever() {
                if signal == SIGHUP {
                    reload(&shared, &workers);
                    continue;
                }
                tracing::info!(signal, "draining");
                for w in &workers {
                    let _ = w.send_blocking(Control::Drain);
                }
                return;
            }
        })?;
    Ok(())
}

fn reload(shared: &Shared, workers: &[async_channel::Sender<Control>]) {
    let current = shared.config();
    let next = match Config::load(&current.path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "config reload rejected");
            return;
        }
    };
    if next.server.listen != current.server.listen || next.server.workers != current.server.workers
    {
        tracing::warn!(
            "server.listen and server.workers take effect only on restart; other changes applied"
        );
    }
    let next = Arc::new(next);
    // Issuers first, so a worker with the new config finds their keys.
    shared.hub.configure(next.identity.as_deref());
    shared.set_config(Arc::clone(&next));
    let (ack, acks) = std::sync::mpsc::channel();
    for w in workers {
        let _ = w.send_blocking(Control::Reload(Arc::clone(&next), ack.clone()));
    }
    drop(ack);
    let applied = (0..workers.len())
        .filter(|_| acks.recv_timeout(std::time::Duration::from_secs(5)).is_ok())
        .count();
    tracing::info!(path = %next.path.display(), workers = applied, "config reloaded");
}
