//! Secret material that cannot leak through formatting.

use std::fmt;

/// Bytes of a credential, key or certificate. `Debug` prints only the length, and there is no
/// `Display` or `Serialize`, so a secret cannot reach a log line or a rendered ConfigMap by
/// accident; reading it takes an explicit call to [`SecretBytes::expose`].
#[derive(Clone, PartialEq, Eq, Default)]
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self(bytes.into())
    }

    /// The secret itself; call sites are where credentials are used, so they are easy to audit.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The secret as UTF-8 with surrounding whitespace (a trailing newline from `echo`) removed.
    pub fn expose_trimmed_str(&self) -> Result<&str, std::str::Utf8Error> {
        std::str::from_utf8(&self.0).map(str::trim)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes(<redacted {} bytes>)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let s = SecretBytes::new("sk_live_123");
        assert!(!format!("{s:?}").contains("sk_live"));
        assert_eq!(s.expose_trimmed_str().unwrap(), "sk_live_123");
    }
}
