//! rustls client configuration for one integration.
//!
//! Server verification is always on: the only way to skip TLS is a plain `http://` upstream,
//! which validation allows only with `allowInsecure: true`.

use std::sync::Arc;

use attache_api::{
    config::{TlsConfig, TlsVersion},
    render::parse_certs,
    SecretBytes,
};
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::{pem::PemObject, PrivateKeyDer};

/// Why a TLS configuration could not be built from the integration's material.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("CA bundle: {0}")]
    CaBundle(String),
    #[error("client certificate: {0}")]
    ClientCertificate(String),
    #[error("client key: {0}")]
    ClientKey(String),
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The PEM material a TLS config is built from.
pub struct TlsMaterial<'a> {
    pub ca_bundle: Option<&'a SecretBytes>,
    pub client_chain: Option<&'a SecretBytes>,
    pub client_key: Option<&'a SecretBytes>,
}

/// Builds the client config: roots, optional client certificate, minimum version, ALPN.
pub fn client_config(
    tls: &TlsConfig,
    material: TlsMaterial<'_>,
) -> Result<Arc<ClientConfig>, TlsSetupError> {
    let mut roots = RootCertStore::empty();
    match material.ca_bundle {
        Some(pem) => {
            let certs = parse_certs(pem.expose()).map_err(TlsSetupError::CaBundle)?;
            let (added, _ignored) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(TlsSetupError::CaBundle(
                    "no usable CA certificate in the bundle".into(),
                ));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let versions: &[&'static rustls::SupportedProtocolVersion] = match tls.min_version {
        TlsVersion::V1_2 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::V1_3 => &[&rustls::version::TLS13],
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)?
        .with_root_certificates(roots);
    let mut config = match (material.client_chain, material.client_key) {
        (Some(chain), Some(key)) => {
            let certs = parse_certs(chain.expose()).map_err(TlsSetupError::ClientCertificate)?;
            let key = PrivateKeyDer::from_pem_slice(key.expose())
                .map_err(|e| TlsSetupError::ClientKey(format!("no PEM private key ({e})")))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| TlsSetupError::ClientKey(e.to_string()))?
        }
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
