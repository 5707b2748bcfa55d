//! Recording settings: the `[recording]` file section ([`RecordingSection`], serde, unknown keys
//! are errors) and the validated [`RecorderConfig`] the workers run with.
//!
//! The owner mounts the section in the config file structs and calls
//! [`RecordingSection::validate`]; its errors name the key and the fix, in the project's
//! `what | fix: how` form.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::dict;
use super::sign::{load_signing_key, SealKey};
use crate::config::Dur;

/// `[recording]` as written in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecordingSection {
    /// Record sessions at all.
    pub enabled: bool,
    /// Directory of segment files (created 0700; files are 0600).
    pub dir: PathBuf,
    /// `"event"`: each event reaches the kernel before the bytes go to the client (a gateway
    /// crash loses nothing the client saw). `"interval"`: batch and write every
    /// `flush_interval` / `flush_bytes` (better compression; a crash loses the last batch).
    pub durability: DurabilityChoice,
    /// Interval mode: longest time an event waits in the batch.
    pub flush_interval: Dur,
    /// Interval mode: batch size that triggers a write.
    pub flush_bytes: u64,
    /// `"never"`, `"interval"` (every `flush_interval`) or `"segment"` (at each seal).
    pub fsync: FsyncChoice,
    /// Seal and start a new segment past this size.
    pub segment_max_bytes: u64,
    /// Seal and start a new segment past this age.
    pub segment_max_age: Dur,
    /// Delete sealed segments older than this (`"0s"`: keep regardless of age).
    pub retention_max_age: Dur,
    /// Delete the oldest sealed segments while the directory holds more (0: no limit).
    pub retention_max_bytes: u64,
    /// `"fail_closed"`: when the disk fails, new requests get 503 and streams end with an error.
    /// `"fail_open"`: keep serving, unrecorded (counted and logged).
    pub on_disk_error: OnDiskError,
    /// Ed25519 key (64 hex digits) to sign each segment seal; `modelgate recorder keygen FILE`.
    pub signing_key: Option<PathBuf>,
    /// zstd level, 1..=19; 1–3 keep appends cheap.
    pub zstd_level: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DurabilityChoice {
    Event,
    Interval,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FsyncChoice {
    Never,
    Interval,
    Segment,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnDiskError {
    FailClosed,
    FailOpen,
}

impl Default for RecordingSection {
    fn default() -> Self {
        RecordingSection {
            enabled: false,
            dir: PathBuf::from("/var/lib/modelgate/sessions"),
            durability: DurabilityChoice::Event,
            flush_interval: Dur(Duration::from_millis(250)),
            flush_bytes: 64 * 1024,
            fsync: FsyncChoice::Segment,
            segment_max_bytes: 64 << 20,
            segment_max_age: Dur::secs(3600),
            retention_max_age: Dur::secs(30 * 24 * 3600),
            retention_max_bytes: 0,
            on_disk_error: OnDiskError::FailClosed,
            signing_key: None,
            zstd_level: 3,
        }
    }
}

/// Validated recording settings.
#[derive(Debug, Clone)]
pub struct RecorderConfig {
    pub enabled: bool,
    pub on_disk_error: OnDiskError,
    pub writer: WriterSettings,
}

/// What a [`super::SegmentWriter`] needs.
#[derive(Clone)]
pub struct WriterSettings {
    pub dir: PathBuf,
    pub durability: Durability,
    pub fsync: FsyncPolicy,
    pub segment_max_bytes: u64,
    pub segment_max_age: Duration,
    pub retention: Retention,
    pub zstd_level: i32,
    pub signing_key: Option<SealKey>,
    /// zstd dictionary copied into each new segment ([`dict::DEFAULT`]).
    pub dictionary: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    Event,
    Interval { every: Duration, bytes: usize },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    Never,
    Interval(Duration),
    Segment,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retention {
    pub max_age: Option<Duration>,
    pub max_bytes: Option<u64>,
}

/// A rejected setting: the key, what is wrong, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingError {
    pub key: &'static str,
    pub message: String,
}

impl std::fmt::Display for SettingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "recording.{}: {}", self.key, self.message)
    }
}

impl std::error::Error for SettingError {}

// === impl RecordingSection ===

impl RecordingSection {
    /// Checks values and loads the signing key.
    pub fn validate(&self) -> Result<RecorderConfig, SettingError> {
        let err = |key, message: String| Err(SettingError { key, message });
        if !(1..=19).contains(&self.zstd_level) {
            return err(
                "zstd_level",
                format!(
                    "{} is out of range | fix: use 1..=19 (1-3 recommended)",
                    self.zstd_level
                ),
            );
        }
        if self.segment_max_bytes < 64 * 1024 {
            return err(
                "segment_max_bytes",
                format!(
                    "{} is too small | fix: use at least 65536",
                    self.segment_max_bytes
                ),
            );
        }
        if self.segment_max_age.0 < Duration::from_secs(1) {
            return err(
                "segment_max_age",
                "must be at least 1s | fix: e.g. \"1h\"".into(),
            );
        }
        if self.durability == DurabilityChoice::Interval {
            if self.flush_interval.0.is_zero() {
                return err(
                    "flush_interval",
                    "must not be 0 | fix: e.g. \"250ms\"".into(),
                );
            }
            if !(1..=(8 << 20)).contains(&self.flush_bytes) {
                return err(
                    "flush_bytes",
                    "must be 1..=8388608 | fix: e.g. 65536".into(),
                );
            }
        }
        if self.enabled && self.dir.as_os_str().is_empty() {
            return err(
                "dir",
                "is empty | fix: set a directory for segment files".into(),
            );
        }
        let signing_key = match &self.signing_key {
            Some(path) => match load_signing_key(path) {
                Ok(k) => Some(k),
                Err(e) => {
                    return err(
                        "signing_key",
                        format!("{e} | fix: create one with `modelgate recorder keygen FILE`"),
                    )
                }
            },
            None => None,
        };
        let durability = match self.durability {
            DurabilityChoice::Event => Durability::Event,
            DurabilityChoice::Interval => Durability::Interval {
                every: self.flush_interval.0,
                bytes: self.flush_bytes as usize,
            },
        };
        let fsync = match self.fsync {
            FsyncChoice::Never => FsyncPolicy::Never,
            FsyncChoice::Interval => FsyncPolicy::Interval(self.flush_interval.0),
            FsyncChoice::Segment => FsyncPolicy::Segment,
        };
        Ok(RecorderConfig {
            enabled: self.enabled,
            on_disk_error: self.on_disk_error,
            writer: WriterSettings {
                dir: self.dir.clone(),
                durability,
                fsync,
                segment_max_bytes: self.segment_max_bytes,
                segment_max_age: self.segment_max_age.0,
                retention: Retention {
                    max_age: Some(self.retention_max_age.0).filter(|d| !d.is_zero()),
                    max_bytes: Some(self.retention_max_bytes).filter(|&b| b > 0),
                },
                zstd_level: self.zstd_level,
                signing_key,
                dictionary: dict::DEFAULT.to_vec(),
            },
        })
    }
}

// === impl WriterSettings ===

impl WriterSettings {
    /// Defaults for `dir`: event durability, fsync at seal, 64 MiB / 1 h segments, level 3, no
    /// retention limits, no signing.
    pub fn new(dir: impl Into<PathBuf>) -> WriterSettings {
        let d = RecordingSection::default();
        WriterSettings {
            dir: dir.into(),
            durability: Durability::Event,
            fsync: FsyncPolicy::Segment,
            segment_max_bytes: d.segment_max_bytes,
            segment_max_age: d.segment_max_age.0,
            retention: Retention::default(),
            zstd_level: d.zstd_level,
            signing_key: None,
            dictionary: dict::DEFAULT.to_vec(),
        }
    }
}

impl std::fmt::Debug for WriterSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriterSettings")
            .field("dir", &self.dir)
            .field("durability", &self.durability)
            .field("fsync", &self.fsync)
            .field("segment_max_bytes", &self.segment_max_bytes)
            .field("segment_max_age", &self.segment_max_age)
            .field("retention", &self.retention)
            .field("zstd_level", &self.zstd_level)
            .field("signing_key", &self.signing_key.as_ref().map(|_| "<set>"))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<RecordingSection, toml::de::Error> {
        toml::from_str(s)
    }

    #[test]
    fn an_empty_section_takes_the_defaults() {
        let c = parse("").unwrap().validate().unwrap();
        assert!(!c.enabled);
        assert_eq!(c.on_disk_error, OnDiskError::FailClosed);
        assert_eq!(c.writer.durability, Durability::Event);
        assert_eq!(c.writer.fsync, FsyncPolicy::Segment);
        assert_eq!(
            c.writer.retention.max_age,
            Some(Duration::from_secs(30 * 86400))
        );
        assert_eq!(c.writer.retention.max_bytes, None);
    }

    #[test]
    fn durations_and_choices_parse_from_strings() {
        let s = parse(
            "enabled = true\ndir = \"/tmp/x\"\ndurability = \"interval\"\nflush_interval = \"100ms\"\n\
             fsync = \"interval\"\non_disk_error = \"fail_open\"\nretention_max_age = \"0s\"",
        )
        .unwrap();
        let c = s.validate().unwrap();
        assert_eq!(
            c.writer.durability,
            Durability::Interval {
                every: Duration::from_millis(100),
                bytes: 65536
            }
        );
        assert_eq!(
            c.writer.fsync,
            FsyncPolicy::Interval(Duration::from_millis(100))
        );
        assert_eq!(c.writer.retention.max_age, None);
        assert_eq!(c.on_disk_error, OnDiskError::FailOpen);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_rejected_with_the_key() {
        assert!(parse("enable = true").is_err());
        let e = parse("zstd_level = 40").unwrap().validate().unwrap_err();
        assert_eq!(e.key, "zstd_level");
        assert!(e.to_string().contains("fix:"));
    }
}
