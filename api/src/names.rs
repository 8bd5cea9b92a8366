//! Kubernetes' rules for object names, namespaces and Secret/ConfigMap keys, kept in one place
//! so the operator's manifest checks and the file-backed secret source (`fs`) agree on them.
//!
//! Each check returns why a string breaks the rule, for a message that says how to fix it.

/// A DNS-1123 subdomain, which Kubernetes requires of most object names (Secrets, ConfigMaps).
pub fn dns_subdomain(s: &str) -> Result<(), &'static str> {
    if s.is_empty() {
        return Err("must not be empty");
    }
    if s.len() > 253 {
        return Err("must be at most 253 characters");
    }
    if !s.split('.').all(label_chars) {
        return Err(
            "use lower case letters, digits, '-' and '.', starting and ending with a letter or digit",
        );
    }
    Ok(())
}

/// A DNS-1123 label, which Kubernetes requires of namespace names.
pub fn dns_label(s: &str) -> Result<(), &'static str> {
    if s.len() > 63 {
        return Err("must be at most 63 characters");
    }
    if !label_chars(s) {
        return Err(
            "use lower case letters, digits and '-', starting and ending with a letter or digit",
        );
    }
    Ok(())
}

/// A key of a Secret's or ConfigMap's data. Besides the character set, Kubernetes refuses
/// `.`, `..` and a leading `..`, so a key is always a plain file name inside its volume (and
/// never the volume's own `..data` internals).
pub fn data_key(s: &str) -> Result<(), &'static str> {
    if s.is_empty() {
        return Err("must not be empty");
    }
    if s.len() > 253 {
        return Err("must be at most 253 characters");
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err("use letters, digits, '-', '_' and '.'");
    }
    if s == "." || s.starts_with("..") {
        return Err("must not be '.' or start with '..'");
    }
    Ok(())
}

fn label_chars(l: &str) -> bool {
    let ok = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = l.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(&f), Some(&e)) => ok(f) && ok(e) && bytes.iter().all(|&b| ok(b) || b == b'-'),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_kubernetes_rules() {
        for good in ["stripe", "a", "bank-api.v2", "0x"] {
            assert!(dns_subdomain(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Stripe",
            "-a",
            "a-",
            "a..b",
            "a_b",
            "../x",
            "a/b",
            &"a".repeat(254),
        ] {
            assert!(dns_subdomain(bad).is_err(), "{bad}");
        }
        assert!(dns_label("a.b").is_err());
    }

    #[test]
    fn keys_follow_kubernetes_rules() {
        for good in ["api-key", "tls.crt", "ca.crt", "KEY_1", ".hidden", "a..b"] {
            assert!(data_key(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            "..data",
            "a/b",
            "../x",
            "key with space",
            &"a".repeat(254),
        ] {
            assert!(data_key(bad).is_err(), "{bad}");
        }
    }
}
