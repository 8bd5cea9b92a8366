//! Sizes in bytes written the Kubernetes way: a plain integer (`1048576`) or a quantity string
//! with a binary (`512Ki`, `1Mi`, `1Gi`) or decimal (`500k`, `1M`, `1G`) suffix.
//!
//! Only the forms a size needs are accepted (no fractions, exponents or milli-units), and the
//! schema's pattern accepts exactly what the parser does, so `kubectl apply` and the offline
//! tools agree.

use std::{borrow::Cow, fmt, str::FromStr};

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The schema pattern of the string form (at most 9 digits, so every value fits in a `u64`).
pub const BYTE_SIZE_PATTERN: &str = r"^[1-9][0-9]{0,8}(Ki|Mi|Gi|k|M|G)?$";

/// A positive number of bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

/// Why a size was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "invalid size {0:?}: expected a positive integer of bytes or a quantity like 512Ki, 1Mi or 1M"
)]
pub struct ByteSizeError(pub String);

// === impl ByteSize ===

impl ByteSize {
    pub const fn mebibytes(n: u64) -> Self {
        Self(n * 1024 * 1024)
    }

    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl FromStr for ByteSize {
    type Err = ByteSizeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ByteSizeError(s.to_string());
        let digits_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (digits, suffix) = s.split_at(digits_end);
        if digits.is_empty() || digits.starts_with('0') || digits.len() > 9 {
            return Err(bad());
        }
        let n: u64 = digits.parse().map_err(|_| bad())?;
        let factor: u64 = match suffix {
            "" => 1,
            "Ki" => 1 << 10,
            "Mi" => 1 << 20,
            "Gi" => 1 << 30,
            "k" => 1_000,
            "M" => 1_000_000,
            "G" => 1_000_000_000,
            _ => return Err(bad()),
        };
        n.checked_mul(factor).map(Self).ok_or_else(bad)
    }
}

impl fmt::Display for ByteSize {
    /// The exact binary form when there is one (`1Mi`), else the integer.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (suffix, factor) in [("Gi", 1u64 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)] {
            if self.0 >= factor && self.0.is_multiple_of(factor) {
                return write!(f, "{}{suffix}", self.0 / factor);
            }
        }
        write!(f, "{}", self.0)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Str(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(0) => Err(serde::de::Error::custom(ByteSizeError("0".into()))),
            Raw::Int(n) => Ok(Self(n)),
            Raw::Str(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

impl JsonSchema for ByteSize {
    fn schema_name() -> Cow<'static, str> {
        "ByteSize".into()
    }

    fn inline_schema() -> bool {
        true
    }

    /// Kubernetes' int-or-string form (as `resource.Quantity`); `pattern` applies to strings
    /// only and `minimum` to integers only.
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "x-kubernetes-int-or-string": true,
            "pattern": BYTE_SIZE_PATTERN,
            "minimum": 1,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_integers_and_quantities() {
        let b = |s: &str| s.parse::<ByteSize>().map(ByteSize::bytes);
        assert_eq!(b("1Mi"), Ok(1 << 20));
        assert_eq!(b("512Ki"), Ok(512 * 1024));
        assert_eq!(b("2M"), Ok(2_000_000));
        assert_eq!(b("1048576"), Ok(1 << 20));
        for bad in [
            "",
            "0",
            "01Mi",
            "1.5Mi",
            "1mi",
            "1MB",
            "-1",
            "1 Mi",
            "9999999999",
        ] {
            assert!(bad.parse::<ByteSize>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn yaml_integers_and_strings_both_read() {
        let v: ByteSize = serde_json::from_value(serde_json::json!(4096)).unwrap();
        assert_eq!(v.bytes(), 4096);
        let v: ByteSize = serde_json::from_value(serde_json::json!("1Mi")).unwrap();
        assert_eq!(v.to_string(), "1Mi");
        assert!(serde_json::from_value::<ByteSize>(serde_json::json!(0)).is_err());
        assert_eq!(ByteSize(1000).to_string(), "1000");
    }
}
