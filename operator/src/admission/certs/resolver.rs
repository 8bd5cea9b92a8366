//! The certificate the server presents, swapped in place when it is renewed.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use rustls::{
    crypto::ring,
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};

use super::CertError;

/// Hands every TLS handshake the current certificate. Readers never block: a renewal swaps
/// an `Arc`, connections already open keep theirs.
#[derive(Default)]
pub struct CertResolver {
    current: ArcSwapOption<Served>,
}

struct Served {
    key: Arc<CertifiedKey>,
    /// The PEM behind `key`, to tell a real change from a re-read of the same files.
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
}

// === impl CertResolver ===

impl CertResolver {
    /// Serves `cert_pem` (chain, leaf first) with `key_pem` from now on. Returns whether the
    /// certificate changed. Material that cannot be served is refused and the current
    /// certificate stays.
    pub fn set_pem(&self, cert_pem: &[u8], key_pem: &[u8]) -> Result<bool, CertError> {
        if let Some(served) = self.current.load().as_deref() {
            if served.cert_pem == cert_pem && served.key_pem == key_pem {
                return Ok(false);
            }
        }
        let key = certified_key(cert_pem, key_pem)?;
        self.current.store(Some(Arc::new(Served {
            key: Arc::new(key),
            cert_pem: cert_pem.to_vec(),
            key_pem: key_pem.to_vec(),
        })));
        Ok(true)
    }

    /// The certificate served now, if any.
    pub fn current(&self) -> Option<Arc<CertifiedKey>> {
        self.current.load().as_ref().map(|s| s.key.clone())
    }

    pub fn has_certificate(&self) -> bool {
        self.current.load().is_some()
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current()
    }
}

impl std::fmt::Debug for CertResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertResolver")
            .field("has_certificate", &self.has_certificate())
            .finish()
    }
}

/// A servable certificate: the chain parses, the key parses, and they belong together.
pub(crate) fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, CertError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertError::Parse(format!("certificate PEM: {e}")))?;
    if chain.is_empty() {
        return Err(CertError::Parse("no certificate in the PEM".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| CertError::Parse(format!("private key PEM: {e}")))?;
    Ok(CertifiedKey::from_der(
        chain,
        key,
        &ring::default_provider(),
    )?)
}
