//! A throwaway PKI for the benchmark: the demo's CA, localhost server certificate and client
//! certificate, written as PEM files that the upstream, the proxies and the load client read.

use anyhow::Context;

/// Writes ca.crt, server.crt/key and client.crt/key into `out`.
pub fn write(out: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(out)?;
    let pki = attache_sidecar::demo::pki::DemoPki::generate()?;
    for (name, pem) in [
        ("ca.crt", &pki.ca_pem),
        ("server.crt", &pki.server_cert_pem),
        ("server.key", &pki.server_key_pem),
        ("client.crt", &pki.client_cert_pem),
        ("client.key", &pki.client_key_pem),
    ] {
        std::fs::write(out.join(name), pem).with_context(|| format!("writing {name}"))?;
    }
    Ok(())
}
