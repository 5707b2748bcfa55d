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

use crate::config::Config;

pub enum Control {
    Reload(Arc<Config>),
    Drain,
}

pub fn spawn(
    config: Arc<Config>,
    workers: Vec<async_channel::Sender<Control>>,
) -> std::io::Result<()> {
    let mut signals = Signals::new([SIGHUP, SIGTERM, SIGINT])?;
    std::thread::Builder::new()
        .name("modelgate-ctl".into())
        .spawn(move || {
            let mut current = config;
            for signal in signals.forever() {
                if signal == SIGHUP {
                    current = reload(current, &workers);
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

fn reload(current: Arc<Config>, workers: &[async_channel::Sender<Control>]) -> Arc<Config> {
    let next = match Config::load(&current.path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "config reload rejected");
            return current;
        }
    };
    if next.server.listen != current.server.listen || next.server.workers != current.server.workers
    {
        tracing::warn!(
            "server.listen and server.workers take effect only on restart; other changes applied"
        );
    }
    let next = Arc::new(next);
    for w in workers {
        let _ = w.send_blocking(Control::Reload(Arc::clone(&next)));
    }
    tracing::info!(path = %next.path.display(), "config reloaded");
    next
}
