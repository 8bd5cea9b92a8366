//! Throwaway PKI for tests: a CA that issues server and client certificates on demand, so
//! every test can exercise real TLS and mTLS without checked-in key material.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Installs ring as the process-wide rustls provider; idempotent because every test calls it.
pub fn init_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The ring provider, passed explicitly so configs never depend on the process default.
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A leaf certificate and its private key, both PEM, as the sidecar reads them from files.
#[derive(Clone, Debug)]
pub struct CertPair {
    pub cert_pem: String,
    pub key_pem: String,
}

impl CertPair {
    /// DER chain for building rustls configs directly.
    pub fn cert_chain(&self) -> Vec<CertificateDer<'static>> {
        certs_from_pem(&self.cert_pem)
    }

    /// DER private key for building rustls configs directly.
    pub fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).expect("CertPair key is valid PEM")
    }

    /// Writes `tls.crt` and `tls.key` into `dir`, the layout of a `kubernetes.io/tls` Secret.
    pub fn write_tls_secret(&self, dir: &Path) -> (PathBuf, PathBuf) {
        (
            write_file(dir, "tls.crt", &self.cert_pem),
            write_file(dir, "tls.key", &self.key_pem),
        )
    }
}

/// A self-signed test CA; cloning it keeps the same key, so clones issue compatible certs.
#[derive(Clone, Debug)]
pub struct TestCa {
    pub cert_pem: String,
    pub key_pem: String,
    params: CertificateParams,
}

impl TestCa {
    /// Creates a fresh CA (valid from yesterday for ten years) named `common_name`.
    pub fn new(common_name: &str) -> TestCa {
        let key = KeyPair::generate().expect("generate CA key");
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = SystemTime::now();
        set_validity(
            &mut params,
            now - Duration::from_secs(86_400),
            now + Duration::from_secs(10 * 365 * 86_400),
        );
        let cert = params.self_signed(&key).expect("self-sign CA");
        TestCa {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            params,
        }
    }

    /// DER form of the CA certificate, for trust stores.
    pub fn cert_der(&self) -> CertificateDer<'static> {
        certs_from_pem(&self.cert_pem)
            .pop()
            .expect("CA PEM holds a certificate")
    }

    /// A server certificate for `sans` (DNS names or IP literals), valid for a year.
    pub fn server_cert(&self, sans: &[&str]) -> CertPair {
        let now = SystemTime::now();
        self.server_cert_with_validity(
            sans,
            now - Duration::from_secs(3600),
            now + Duration::from_secs(365 * 86_400),
        )
    }

    /// The usual upstream certificate: `localhost` and `127.0.0.1`.
    pub fn localhost_cert(&self) -> CertPair {
        self.server_cert(&["localhost", "127.0.0.1"])
    }

    /// A server certificate with explicit validity, to test expired or not-yet-valid upstreams.
    pub fn server_cert_with_validity(
        &self,
        sans: &[&str],
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> CertPair {
        let mut params = leaf_params(sans.first().copied().unwrap_or("server"));
        params.subject_alt_names = sans.iter().map(|s| san(s)).collect();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        set_validity(&mut params, not_before, not_after);
        self.issue(params)
    }

    /// A client certificate whose subject CN is `common_name`, valid for a year.
    pub fn client_cert(&self, common_name: &str) -> CertPair {
        self.client_cert_valid_until(
            common_name,
            SystemTime::now() + Duration::from_secs(365 * 86_400),
        )
    }

    /// A client certificate expiring at `not_after` (whole seconds), for expiry metrics/tests.
    pub fn client_cert_valid_until(&self, common_name: &str, not_after: SystemTime) -> CertPair {
        let mut params = leaf_params(common_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        // Start before `not_after` even for already-expired certificates.
        let not_before = (SystemTime::now() - Duration::from_secs(3600))
            .min(not_after - Duration::from_secs(3600));
        set_validity(&mut params, not_before, not_after);
        self.issue(params)
    }

    fn issue(&self, params: CertificateParams) -> CertPair {
        let ca_key = KeyPair::from_pem(&self.key_pem).expect("CA key PEM");
        let issuer = Issuer::from_params(&self.params, ca_key);
        let key = KeyPair::generate().expect("generate leaf key");
        let cert = params.signed_by(&key, &issuer).expect("sign leaf");
        CertPair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

fn leaf_params(common_name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.use_authority_key_identifier_extension = true;
    params
}

fn san(name: &str) -> SanType {
    match name.parse::<IpAddr>() {
        Ok(ip) => SanType::IpAddress(ip),
        Err(_) => SanType::DnsName(name.to_string().try_into().expect("valid DNS SAN")),
    }
}

/// Sets validity from `SystemTime`s; adding a std `Duration` to rcgen's epoch helper avoids
/// a direct dependency on the `time` crate.
fn set_validity(params: &mut CertificateParams, not_before: SystemTime, not_after: SystemTime) {
    let since_epoch = |t: SystemTime| {
        t.duration_since(UNIX_EPOCH)
            .expect("test times are after 1970")
    };
    params.not_before = rcgen::date_time_ymd(1970, 1, 1) + since_epoch(not_before);
    params.not_after = rcgen::date_time_ymd(1970, 1, 1) + since_epoch(not_after);
}

/// Parses every certificate in a PEM bundle.
pub fn certs_from_pem(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("valid certificate PEM")
}

/// Writes a fixture file, creating parent directories; panics because fixtures must exist.
pub fn write_file(dir: &Path, rel: &str, contents: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.join(rel);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .unwrap_or_else(|e| panic!("create {}: {e}", parent.display()));
    }
    std::fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::extensions::GeneralName;

    fn parse(pem: &str) -> Vec<u8> {
        certs_from_pem(pem).remove(0).to_vec()
    }

    #[test]
    fn server_cert_detects_ip_sans() {
        let ca = TestCa::new("test ca");
        let pair = ca.server_cert(&["localhost", "127.0.0.1"]);
        let der = parse(&pair.cert_pem);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let sans = cert.subject_alternative_name().unwrap().unwrap();
        let names: Vec<String> = sans
            .value
            .general_names
            .iter()
            .map(|n| match n {
                GeneralName::DNSName(d) => format!("dns:{d}"),
                GeneralName::IPAddress(ip) => format!("ip:{ip:?}"),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(names, ["dns:localhost", "ip:[127, 0, 0, 1]"]);
        assert!(pair.key_pem.contains("PRIVATE KEY"));
    }

    #[test]
    fn client_cert_has_cn_issuer_and_expiry() {
        let ca = TestCa::new("issuing ca");
        let not_after = UNIX_EPOCH + Duration::from_secs(4_102_444_800); // 2100-01-01
        let pair = ca.client_cert_valid_until("billing-client", not_after);
        let der = parse(&pair.cert_pem);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let cn = cert.subject().iter_common_name().next().unwrap();
        assert_eq!(cn.as_str().unwrap(), "billing-client");
        let issuer = cert.issuer().iter_common_name().next().unwrap();
        assert_eq!(issuer.as_str().unwrap(), "issuing ca");
        assert_eq!(cert.validity().not_after.timestamp(), 4_102_444_800);

        let ca_der = parse(&ca.cert_pem);
        let (_, ca_cert) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
        assert!(ca_cert.is_ca());
    }

    #[test]
    fn expired_client_cert_is_still_well_formed() {
        let ca = TestCa::new("ca");
        let past = SystemTime::now() - Duration::from_secs(86_400);
        let pair = ca.client_cert_valid_until("old", past);
        let der = parse(&pair.cert_pem);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert!(cert.validity().not_before < cert.validity().not_after);
        assert!(!cert.validity().is_valid());
    }

    #[test]
    fn write_file_creates_parents() {
        let dir = std::env::temp_dir().join(format!("attache-pki-{}", std::process::id()));
        let path = write_file(&dir, "secret/nested/tls.crt", "data");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "data");
        let (crt, key) = TestCa::new("ca")
            .localhost_cert()
            .write_tls_secret(&dir.join("bank-mtls"));
        assert!(crt.ends_with("bank-mtls/tls.crt") && key.is_file());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
