//! Manifest parsing and validation: whatever YAML a user (or an attacker with write access to
//! a manifest) gives, `parse_integrations` and `validate_spec` return, never panic.
#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(integrations) = attache_api::manifest::parse_integrations("fuzz.yaml", text) {
        for x in &integrations {
            let _ = attache_api::validate::validate_spec(&x.spec);
        }
    }
});
