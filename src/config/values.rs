//! Value types parsed while deserializing, so a bad value is reported with its exact position.
//! Messages use the form `what | fix: how`, which `ConfigError::from_toml` splits.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// A duration written as `"250ms"`, `"10s"`, `"5m"` or `"1h"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl Dur {
    pub const fn secs(s: u64) -> Dur {
        Dur(Duration::from_secs(s))
    }

    pub fn parse(s: &str) -> Option<Duration> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit())?;
        let (num, unit) = s.split_at(split);
        let n: u64 = num.parse().ok()?;
        match unit {
            "ms" => Some(Duration::from_millis(n)),
            "s" => Some(Duration::from_secs(n)),
            "m" => Some(Duration::from_secs(n.checked_mul(60)?)),
            "h" => Some(Duration::from_secs(n.checked_mul(3600)?)),
            _ => None,
        }
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Dur;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string such as \"10s\"")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Dur, E> {
                Dur::parse(s).map(Dur).ok_or_else(|| {
                    E::custom(format!(
                        "invalid duration {s:?} | fix: write a whole number with a unit: \"250ms\", \"10s\", \"5m\" or \"1h\""
                    ))
                })
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Dur, E> {
                Err(E::custom(format!(
                    "duration {n} has no unit | fix: write it as a string with a unit, e.g. \"{n}s\""
                )))
            }
        }
        d.deserialize_any(V)
    }
}

/// Which io_uring / epoll driver the workers use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DriverChoice {
    /// io_uring when the kernel and memlock limit allow it, else epoll (logged).
    #[default]
    Auto,
    IoUring,
    Legacy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// A socket address, with a message that shows the expected form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addr(pub std::net::SocketAddr);

impl<'de> Deserialize<'de> for Addr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map(Addr).map_err(|_| {
            de::Error::custom(format!(
                "invalid address {s:?} | fix: write an IP address and port, e.g. \"127.0.0.1:8000\" or \"[::1]:8000\""
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_durations_with_units() {
        assert_eq!(Dur::parse("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(Dur::parse("5m"), Some(Duration::from_secs(300)));
        assert_eq!(Dur::parse("10"), None);
        assert_eq!(Dur::parse("s"), None);
        assert_eq!(Dur::parse("3d"), None);
    }
}
