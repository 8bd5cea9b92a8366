//! Kubernetes-style duration strings (`250ms`, `10s`, `5m`, `1h30m`).
//!
//! Kubernetes users write durations the way Go's `time.ParseDuration` reads them. The common
//! Rust crates accept a wider, different grammar (spaces, `days`, `years`), so a value that
//! passes here would be rejected by Go tooling or vice versa; this small parser accepts exactly
//! the subset we document: one or more `<integer><unit>` groups with units `ms`, `s`, `m`, `h`.

use std::{borrow::Cow, fmt, str::FromStr, time::Duration};

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The schema pattern, shared with the CRD so `kubectl apply` rejects what the parser would.
pub const DURATION_PATTERN: &str = r"^([0-9]+(ms|s|m|h))+$";

/// A non-negative duration written as a Kubernetes-style string.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct KubeDuration(pub Duration);

/// Why a duration string was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DurationError {
    #[error("empty duration")]
    Empty,
    #[error("invalid duration {0:?}: expected groups like 250ms, 10s, 5m or 1h")]
    Invalid(String),
    #[error("duration {0:?} is too large")]
    Overflow(String),
}

// === impl KubeDuration ===

impl KubeDuration {
    pub const fn from_millis(ms: u64) -> Self {
        Self(Duration::from_millis(ms))
    }

    pub const fn from_secs(s: u64) -> Self {
        Self(Duration::from_secs(s))
    }

    pub fn as_duration(self) -> Duration {
        self.0
    }

    pub fn is_zero(self) -> bool {
        self.0.is_zero()
    }
}

impl From<KubeDuration> for Duration {
    fn from(d: KubeDuration) -> Self {
        d.0
    }
}

impl FromStr for KubeDuration {
    type Err = DurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(DurationError::Empty);
        }
        let invalid = || DurationError::Invalid(s.to_string());
        let overflow = || DurationError::Overflow(s.to_string());
        let bytes = s.as_bytes();
        let mut i = 0;
        let mut total_ms: u64 = 0;
        while i < bytes.len() {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            if start == i {
                return Err(invalid());
            }
            let n: u64 = s[start..i].parse().map_err(|_| overflow())?;
            let unit_start = i;
            while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
                i += 1;
            }
            let factor = match &s[unit_start..i] {
                "ms" => 1,
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                _ => return Err(invalid()),
            };
            let ms = n.checked_mul(factor).ok_or_else(overflow)?;
            total_ms = total_ms.checked_add(ms).ok_or_else(overflow)?;
        }
        Ok(Self(Duration::from_millis(total_ms)))
    }
}

impl fmt::Display for KubeDuration {
    /// Prints the shortest exact form (`1500ms`, `30s`, `5m`, `1h30m`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms == 0 {
            return f.write_str("0s");
        }
        if !ms.is_multiple_of(1000) {
            return write!(f, "{ms}ms");
        }
        let mut secs = ms / 1000;
        let h = secs / 3600;
        secs %= 3600;
        let m = secs / 60;
        secs %= 60;
        if h > 0 {
            write!(f, "{h}h")?;
        }
        if m > 0 {
            write!(f, "{m}m")?;
        }
        if secs > 0 {
            write!(f, "{secs}s")?;
        }
        Ok(())
    }
}

impl Serialize for KubeDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for KubeDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for KubeDuration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": DURATION_PATTERN,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kubernetes_forms() {
        let ms = |s: &str| s.parse::<KubeDuration>().map(|d| d.0.as_millis());
        assert_eq!(ms("250ms"), Ok(250));
        assert_eq!(ms("10s"), Ok(10_000));
        assert_eq!(ms("5m"), Ok(300_000));
        assert_eq!(ms("1h30m"), Ok(5_400_000));
        assert_eq!(ms("0s"), Ok(0));
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "10", "s", "1.5s", "10 s", "-1s", "1d", "10sec", "ms10"] {
            assert!(bad.parse::<KubeDuration>().is_err(), "{bad:?} accepted");
        }
        assert!(matches!(
            "99999999999999999999h".parse::<KubeDuration>(),
            Err(DurationError::Overflow(_))
        ));
    }

    #[test]
    fn display_round_trips() {
        for s in ["250ms", "10s", "5m", "1h30m", "1h0m5s", "1500ms"] {
            let d: KubeDuration = s.parse().unwrap();
            let again: KubeDuration = d.to_string().parse().unwrap();
            assert_eq!(d, again);
        }
        assert_eq!(KubeDuration::from_secs(90).to_string(), "1m30s");
    }
}
