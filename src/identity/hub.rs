//! Issuer keys shared by all workers, and the task that keeps them fresh.
//!
//! Workers only read (`RwLock` read on a cold token; cached tokens never touch it). One fetcher
//! task on the identity thread does all fetching: each issuer's discovery document and JWKS at
//! start, every `refresh`, and when a worker meets an unknown `kid` — at most once per
//! `kid_refresh_cooldown` per issuer, so random kids cannot make the gateway hammer the IdP.
//! A failed fetch keeps the old keys (an IdP outage changes nothing) until `max_stale` after the
//! last success; then the issuer's tokens fail with "keys unavailable" (503), not silently.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use super::config::{IdentityConfig, IssuerConfig};
use super::jwks::{self, Keys, VerifyKey};
use super::{fetch, token::TokenError};

/// All issuers' keys, by issuer URL. Lives for the whole process, across reloads.
pub struct KeyHub {
    issuers: RwLock<HashMap<String, Arc<IssuerKeys>>>,
    wake: async_channel::Sender<()>,
    woken: async_channel::Receiver<()>,
    epoch: Instant,
}

pub struct IssuerKeys {
    config: RwLock<Arc<IssuerConfig>>,
    keys: RwLock<KeySet>,
    /// Bumped when a key is dropped, so tokens cached under it are verified again.
    pub generation: AtomicU64,
    /// A worker asked for a fetch (unknown kid, or no keys yet).
    wanted: AtomicBool,
    /// A fetch is running or wanted; waiters poll this.
    in_flight: AtomicBool,
    /// Milliseconds since the hub's epoch of the last fetch attempt (cooldown clock).
    last_attempt_ms: AtomicU64,
    /// Fetches so far, for logs and tests.
    pub fetches: AtomicU64,
}

#[derive(Default)]
struct KeySet {
    keys: Keys,
    fetched_at: Option<Instant>,
}

pub enum Lookup {
    Found(Arc<VerifyKey>),
    Unknown,
    /// No keys yet, or too stale to trust.
    Unavailable,
}

impl KeyHub {
    pub fn new() -> Arc<KeyHub> {
        let (wake, woken) = async_channel::bounded(1);
        Arc::new(KeyHub {
            issuers: RwLock::new(HashMap::new()),
            wake,
            woken,
            epoch: Instant::now(),
        })
    }

    /// Adopts a config's issuers: new ones are added (and fetched), changed ones keep their
    /// keys but take the new settings, removed ones are dropped.
    pub fn configure(&self, identity: Option<&IdentityConfig>) {
        let wanted = identity.map_or(&[][..], |i| &i.issuers[..]);
        let mut map = self.issuers.write().unwrap_or_else(|e| e.into_inner());
        map.retain(|url, _| wanted.iter().any(|w| &w.issuer == url));
        for cfg in wanted {
            match map.get(&cfg.issuer) {
                Some(keys) => *keys.config.write().unwrap_or_else(|e| e.into_inner()) = cfg.clone(),
                None => {
                    map.insert(cfg.issuer.clone(), Arc::new(IssuerKeys::new(cfg.clone())));
                }
            }
        }
        drop(map);
        let _ = self.wake.try_send(());
    }

    pub fn issuer(&self, url: &str) -> Option<Arc<IssuerKeys>> {
        let map = self.issuers.read().unwrap_or_else(|e| e.into_inner());
        map.get(url).cloned()
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Asks the fetcher for a fetch of `issuer` unless one ran within `cooldown`; returns
    /// whether a fetch is now running or queued (worth waiting for).
    pub fn request_fetch(&self, issuer: &IssuerKeys, cooldown: Duration) -> bool {
        if issuer.in_flight.load(Ordering::Acquire) {
            return true;
        }
        let now = self.now_ms();
        let last = issuer.last_attempt_ms.load(Ordering::Acquire);
        let never = issuer.fetches.load(Ordering::Acquire) == 0;
        if !never && now.saturating_sub(last) < cooldown.as_millis() as u64 {
            return false;
        }
        // One worker wins the right to ask; the others see `in_flight` and wait with it.
        if issuer
            .last_attempt_ms
            .compare_exchange(last, now.max(1), Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return issuer.in_flight.load(Ordering::Acquire);
        }
        issuer.in_flight.store(true, Ordering::Release);
        issuer.wanted.store(true, Ordering::Release);
        let _ = self.wake.try_send(());
        true
    }

    /// The fetcher: runs on the identity thread until the process ends. Each issuer's fetch is
    /// its own task, so a slow or unreachable IdP never delays another issuer's keys.
    pub async fn run_fetcher(self: Arc<Self>, fetch_timeout: impl Fn() -> Duration) {
        // url → (next due, consecutive failures); a url in `running` has a fetch task.
        let due: Rc<RefCell<HashMap<String, (Instant, u32)>>> = Rc::default();
        let running: Rc<RefCell<HashSet<String>>> = Rc::default();
        loop {
            let issuers: Vec<(String, Arc<IssuerKeys>)> = {
                let map = self.issuers.read().unwrap_or_else(|e| e.into_inner());
                map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
            };
            due.borrow_mut()
                .retain(|url, _| issuers.iter().any(|(u, _)| u == url));
            let now = Instant::now();
            for (url, keys) in issuers {
                let (at, failures) = due.borrow().get(&url).copied().unwrap_or((now, 0));
                if running.borrow().contains(&url)
                    || (at > now && !keys.wanted.load(Ordering::Acquire))
                {
                    continue;
                }
                keys.wanted.store(false, Ordering::Release);
                keys.in_flight.store(true, Ordering::Release);
                keys.last_attempt_ms
                    .store(self.now_ms().max(1), Ordering::Release);
                running.borrow_mut().insert(url.clone());
                let task = fetch_task(
                    Arc::clone(&self),
                    url,
                    keys,
                    failures,
                    fetch_timeout(),
                    Rc::clone(&due),
                    Rc::clone(&running),
                );
                drop(monoio::spawn(task));
            }
            let sleep = due
                .borrow()
                .values()
                .map(|(at, _)| at.saturating_duration_since(Instant::now()))
                .min()
                .unwrap_or(Duration::from_secs(60))
                .min(Duration::from_secs(60));
            monoio::select! {
                _ = self.woken.recv() => {}
                _ = monoio::time::sleep(sleep) => {}
            }
        }
    }
}

/// One fetch of one issuer's keys; records when the next is due and wakes the fetcher.
async fn fetch_task(
    hub: Arc<KeyHub>,
    url: String,
    keys: Arc<IssuerKeys>,
    failures: u32,
    timeout: Duration,
    due: Rc<RefCell<HashMap<String, (Instant, u32)>>>,
    running: Rc<RefCell<HashSet<String>>>,
) {
    let cfg = keys.config();
    let result = fetch_keys(&cfg, timeout).await;
    keys.fetches.fetch_add(1, Ordering::AcqRel);
    let next = match result {
        Ok(new) => {
            tracing::info!(issuer = %url, keys = new.len(), "issuer keys fetched");
            keys.replace(new);
            (Instant::now() + cfg.refresh, 0)
        }
        Err(e) => {
            keys.expire_if_stale();
            // Back off 1s, 2s, 4s … up to the refresh interval; old keys stay.
            let wait = Duration::from_secs(1 << failures.min(10)).min(cfg.refresh);
            tracing::warn!(issuer = %url, error = %e, retry_in = ?wait, "issuer key fetch failed; keeping the keys we have");
            (Instant::now() + wait, failures + 1)
        }
    };
    due.borrow_mut().insert(url.clone(), next);
    running.borrow_mut().remove(&url);
    keys.in_flight.store(false, Ordering::Release);
    let _ = hub.wake.try_send(());
}

impl IssuerKeys {
    fn new(config: Arc<IssuerConfig>) -> IssuerKeys {
        IssuerKeys {
            config: RwLock::new(config),
            keys: RwLock::new(KeySet::default()),
            generation: AtomicU64::new(0),
            wanted: AtomicBool::new(true),
            in_flight: AtomicBool::new(true),
            last_attempt_ms: AtomicU64::new(0),
            fetches: AtomicU64::new(0),
        }
    }

    pub fn config(&self) -> Arc<IssuerConfig> {
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn in_flight(&self) -> bool {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Past `max_stale` without a successful fetch, the keys are dropped (and tokens cached
    /// under them with them): an IdP outage is bridged for a day, not forever.
    fn expire_if_stale(&self) {
        let max_stale = self.config().max_stale;
        let mut set = self.keys.write().unwrap_or_else(|e| e.into_inner());
        if set.fetched_at.is_some_and(|at| at.elapsed() > max_stale) {
            set.keys.clear();
            set.fetched_at = None;
            self.generation.fetch_add(1, Ordering::AcqRel);
            tracing::error!("issuer keys older than max_stale dropped; its tokens are refused until a fetch succeeds");
        }
    }

    pub fn lookup(&self, kid: &str) -> Lookup {
        let max_stale = self.config().max_stale;
        let set = self.keys.read().unwrap_or_else(|e| e.into_inner());
        match set.fetched_at {
            Some(at) if at.elapsed() <= max_stale => match set.keys.get(kid) {
                Some(k) => Lookup::Found(k.clone()),
                None => Lookup::Unknown,
            },
            _ => Lookup::Unavailable,
        }
    }

    fn replace(&self, new: Keys) {
        let mut set = self.keys.write().unwrap_or_else(|e| e.into_inner());
        // A key gone, or replaced under the same kid: tokens cached under it are checked again.
        let changed = set.keys.iter().any(|(kid, old)| {
            new.get(kid)
                .is_none_or(|k| k.fingerprint != old.fingerprint)
        });
        if changed {
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        set.keys = new;
        set.fetched_at = Some(Instant::now());
    }
}

/// Discovery (unless `jwks_uri` is configured), then the JWKS.
async fn fetch_keys(cfg: &IssuerConfig, timeout: Duration) -> Result<Keys, String> {
    let ca = cfg.ca_file.as_deref();
    let jwks_uri = match &cfg.jwks_uri {
        Some(u) => u.clone(),
        None => {
            let url = format!(
                "{}/.well-known/openid-configuration",
                cfg.issuer.trim_end_matches('/')
            );
            let doc: serde_json::Value =
                serde_json::from_slice(&fetch::get(&url, ca, timeout).await?)
                    .map_err(|e| format!("discovery document is not JSON: {e}"))?;
            // OIDC Discovery §4.3: the document's issuer must be exactly the one asked for.
            if doc["issuer"].as_str() != Some(cfg.issuer.as_str()) {
                return Err(format!(
                    "discovery names issuer {}, expected {:?}",
                    doc["issuer"], cfg.issuer
                ));
            }
            doc["jwks_uri"]
                .as_str()
                .ok_or("discovery document has no jwks_uri")?
                .to_owned()
        }
    };
    if !jwks_uri.starts_with("https://") && !super::config::is_loopback_http(&jwks_uri) {
        return Err(format!("jwks_uri {jwks_uri:?} is not https"));
    }
    jwks::parse(&fetch::get(&jwks_uri, ca, timeout).await?)
}

impl From<Lookup> for Result<Arc<VerifyKey>, TokenError> {
    fn from(l: Lookup) -> Self {
        match l {
            Lookup::Found(k) => Ok(k),
            Lookup::Unknown => Err(TokenError::UnknownKey),
            Lookup::Unavailable => Err(TokenError::KeysUnavailable),
        }
    }
}
