//! The recording commands: `sessions list|show|replay|export|reindex`, `verify` and
//! `recorder keygen`. `main.rs` only parses (the clap types live here) and calls in; every
//! command returns an `ExitCode`: 0 success, 1 failure or a broken chain, 2 bad usage.

use std::collections::BTreeSet;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};

use super::index::{self, Summary};
use super::model::Action;
use super::read::{load_sessions, Session};
use super::render;
use super::replay::{replay, SystemClock};
use super::sign::{generate_key, load_public_key};
use super::time::parse_time;
use super::verify::verify_dir;

#[derive(Debug, Subcommand)]
pub enum SessionsCommand {
    /// List recorded sessions, newest last.
    List(ListArgs),
    /// Show one session: head, decision, verdicts, timing.
    Show(ShowArgs),
    /// Re-play a session's response stream to stdout with its original pacing.
    Replay(ReplayArgs),
    /// Export sessions (one by id, or all matching the filters) as JSON lines.
    Export(ExportArgs),
    /// Rebuild the session index sidecars from the segments.
    Reindex {
        #[arg(long)]
        dir: PathBuf,
    },
}

/// Filters shared by `list` and `export`.
#[derive(Debug, Args, Default, Clone)]
pub struct Filters {
    #[arg(long)]
    pub subject: Option<String>,
    #[arg(long)]
    pub group: Option<String>,
    #[arg(long)]
    pub model: Option<String>,
    #[arg(long)]
    pub route: Option<String>,
    /// allow, deny or hold.
    #[arg(long, value_enum)]
    pub decision: Option<DecisionArg>,
    /// RFC 3339 time, date (YYYY-MM-DD) or Unix seconds.
    #[arg(long)]
    pub since: Option<String>,
    #[arg(long)]
    pub until: Option<String>,
    /// Only sessions in which masking hid something.
    #[arg(long)]
    pub sensitive: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DecisionArg {
    Allow,
    Deny,
    Hold,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[arg(long)]
    pub dir: PathBuf,
    #[command(flatten)]
    pub filters: Filters,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    #[arg(long)]
    pub dir: PathBuf,
    pub id: String,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    #[arg(long)]
    pub dir: PathBuf,
    pub id: String,
    /// Pacing factor: 2 plays twice as fast; 0 writes everything at once.
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[arg(long)]
    pub dir: PathBuf,
    /// A request id; without it, every session matching the filters.
    pub id: Option<String>,
    #[command(flatten)]
    pub filters: Filters,
    #[arg(long, value_enum, default_value = "jsonl")]
    pub format: ExportFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ExportFormat {
    Jsonl,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Recording directory.
    pub dir: PathBuf,
    /// Ed25519 public key (64 hex digits): every seal must carry a valid signature.
    #[arg(long)]
    pub pubkey: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum RecorderCommand {
    /// Make a seal-signing key pair: FILE (secret, 0600) and FILE.pub.
    Keygen { file: PathBuf },
}

/// A failed command: the message, and whether it was the user's usage.
struct Failed(String, u8);

fn fail(msg: impl Into<String>) -> Failed {
    Failed(msg.into(), 1)
}

fn usage(msg: impl Into<String>) -> Failed {
    Failed(msg.into(), 2)
}

fn finish(r: Result<(), Failed>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failed(msg, code)) => {
            eprintln!("error: {msg}");
            ExitCode::from(code)
        }
    }
}

pub fn sessions(cmd: SessionsCommand) -> ExitCode {
    finish(match cmd {
        SessionsCommand::List(a) => list(&a),
        SessionsCommand::Show(a) => show(&a),
        SessionsCommand::Replay(a) => replay_cmd(&a),
        SessionsCommand::Export(a) => export(&a),
        SessionsCommand::Reindex { dir } => index::list(&dir, true)
            .map(|s| println!("{}: indexed {} sessions", dir.display(), s.len()))
            .map_err(|e| fail(format!("{}: {e}", dir.display()))),
    })
}

pub fn verify(args: VerifyArgs) -> ExitCode {
    let key = match args.pubkey.as_deref().map(load_public_key).transpose() {
        Ok(k) => k,
        Err(e) => return finish(Err(usage(e.to_string()))),
    };
    let report = match verify_dir(&args.dir, key.as_ref()) {
        Ok(r) => r,
        Err(e) => return finish(Err(fail(format!("{}: {e}", args.dir.display())))),
    };
    let mut out = io::stdout().lock();
    for c in &report.chains {
        let _ = writeln!(
            out,
            "worker {}: {} segments, {} records, {} seals{}",
            c.worker,
            c.segments,
            c.records,
            c.seals,
            if key.is_some() {
                format!(
                    ", {} signatures ok, {} records after the last signed seal",
                    c.signatures, c.unsigned_records
                )
            } else {
                String::new()
            }
        );
        for n in &c.notes {
            let _ = writeln!(out, "  note: {n}");
        }
    }
    match report.first_break() {
        None => {
            let _ = writeln!(out, "ok");
            ExitCode::SUCCESS
        }
        Some(b) => {
            let _ = writeln!(out, "BROKEN: {b}");
            eprintln!("error: chain broken: {b}");
            ExitCode::FAILURE
        }
    }
}

pub fn recorder(cmd: RecorderCommand) -> ExitCode {
    finish(match cmd {
        RecorderCommand::Keygen { file } => generate_key(&file)
            .map(|k| {
                println!(
                    "public key {} written to {}.pub",
                    super::codec::hex(k.as_bytes()),
                    file.display()
                )
            })
            .map_err(|e| fail(format!("{}: {e}", file.display()))),
    })
}

// === commands ===

fn list(a: &ListArgs) -> Result<(), Failed> {
    let matcher = Matcher::new(&a.filters)?;
    let all = index::list(&a.dir, false).map_err(|e| fail(format!("{}: {e}", a.dir.display())))?;
    let mut out = io::stdout().lock();
    for s in all.iter().filter(|s| matcher.matches(s)) {
        let _ = writeln!(out, "{}", render::summary_line(s));
    }
    Ok(())
}

fn show(a: &ShowArgs) -> Result<(), Failed> {
    let mut out = io::stdout().lock();
    for s in find(&a.dir, &|s| s.request_id == a.id)? {
        let _ = render::session_text(&mut out, &s);
    }
    Ok(())
}

fn replay_cmd(a: &ReplayArgs) -> Result<(), Failed> {
    if !(a.speed >= 0.0 && a.speed.is_finite()) {
        return Err(usage("--speed must be a number ≥ 0"));
    }
    let sessions = find(&a.dir, &|s| s.request_id == a.id)?;
    let Some(s) = sessions.first() else {
        return Err(fail("no such session"));
    };
    let speed = if a.speed == 0.0 { f64::MAX } else { a.speed };
    replay(
        &s.response_body,
        speed,
        &mut SystemClock::new(),
        &mut io::stdout().lock(),
    )
    .map_err(|e| fail(format!("writing to stdout: {e}")))
}

fn export(a: &ExportArgs) -> Result<(), Failed> {
    let matcher = Matcher::new(&a.filters)?;
    let sessions = match &a.id {
        Some(id) => find(&a.dir, &|s| &s.request_id == id)?,
        None => {
            let want: BTreeSet<String> = index::list(&a.dir, false)
                .map_err(|e| fail(format!("{}: {e}", a.dir.display())))?
                .into_iter()
                .filter(|s| matcher.matches(s))
                .map(|s| s.request_id)
                .collect();
            if want.is_empty() {
                return Ok(());
            }
            find(&a.dir, &|s| want.contains(&s.request_id))?
        }
    };
    let mut out = io::stdout().lock();
    for s in &sessions {
        let line =
            serde_json::to_string(&render::session_json(s)).map_err(|e| fail(e.to_string()))?;
        writeln!(out, "{line}").map_err(|e| fail(format!("writing to stdout: {e}")))?;
    }
    Ok(())
}

/// Sessions whose summary matches, read from exactly the segments that hold them. An empty
/// result is an error: the user named something that is not there.
fn find(dir: &Path, pick: &dyn Fn(&Summary) -> bool) -> Result<Vec<Session>, Failed> {
    let parts = index::parts(dir, false).map_err(|e| fail(format!("{}: {e}", dir.display())))?;
    let hits: Vec<&Summary> = parts.iter().filter(|s| pick(s)).collect();
    let ids: BTreeSet<&str> = hits.iter().map(|s| s.request_id.as_str()).collect();
    let mut files: Vec<PathBuf> = Vec::new();
    for s in &hits {
        let f = dir.join(&s.file);
        if !files.contains(&f) {
            files.push(f);
        }
    }
    let sessions = load_sessions(&files, &|id| ids.contains(id))
        .map_err(|e| fail(format!("{}: {e}", dir.display())))?;
    if sessions.is_empty() {
        return Err(fail("no such session"));
    }
    Ok(sessions)
}

/// The filters, with times parsed.
struct Matcher<'a> {
    f: &'a Filters,
    since: Option<u64>,
    until: Option<u64>,
}

impl<'a> Matcher<'a> {
    fn new(f: &'a Filters) -> Result<Matcher<'a>, Failed> {
        let t = |flag: &str, v: &Option<String>| -> Result<Option<u64>, Failed> {
            v.as_deref()
                .map(|s| {
                    parse_time(s).ok_or_else(|| {
                        usage(format!("{flag} {s:?}: expected RFC 3339 (2024-06-10T06:00:00Z), a date or Unix seconds"))
                    })
                })
                .transpose()
        };
        Ok(Matcher {
            f,
            since: t("--since", &f.since)?,
            until: t("--until", &f.until)?,
        })
    }

    fn matches(&self, s: &Summary) -> bool {
        let eq = |want: &Option<String>, have: &Option<String>| {
            want.as_ref().is_none_or(|w| have.as_ref() == Some(w))
        };
        let decision = self.f.decision.map(|d| match d {
            DecisionArg::Allow => Action::Allow,
            DecisionArg::Deny => Action::Deny,
            DecisionArg::Hold => Action::Hold,
        });
        let at = s.started_us;
        eq(&self.f.subject, &s.subject)
            && eq(&self.f.model, &s.model)
            && eq(&self.f.route, &s.route)
            && self.f.group.as_ref().is_none_or(|g| s.groups.contains(g))
            && decision.is_none_or(|d| s.decision == Some(d))
            && self.since.is_none_or(|t| at.is_some_and(|a| a >= t))
            && self.until.is_none_or(|t| at.is_some_and(|a| a < t))
            && (!self.f.sensitive || s.sensitive)
    }
}
