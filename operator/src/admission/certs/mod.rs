//! The webhook's serving certificate.
//!
//! Two modes:
//! - self-managed (default, [`self_managed`]): the operator makes a CA and a serving
//!   certificate for the webhook Service's DNS names, keeps them in a Secret, writes the CA into
//!   the MutatingWebhookConfiguration's `caBundle`, and renews the certificate at 2/3 of its
//!   lifetime. Every replica watches the Secret and serves what it holds.
//! - a mounted directory ([`dir`]), e.g. a cert-manager Certificate's Secret: `tls.crt` and
//!   `tls.key`, reloaded when they change (cert-manager's CA injector fills the `caBundle`).
//!
//! Either way the server reads the certificate from a [`CertResolver`] at each handshake, so
//! a renewed certificate is served without a restart.
//!
//! This module holds the pure parts: reading the Secret's material, deciding whether renewal
//! is due, issuing, and the `caBundle` patch.

pub mod dir;
mod resolver;
pub mod self_managed;

use std::{
    collections::BTreeMap,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::Engine as _;
use k8s_openapi::{api::admissionregistration::v1::MutatingWebhookConfiguration, ByteString};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use serde_json::{json, Value};
use x509_parser::{
    extensions::GeneralName,
    pem::Pem,
    prelude::{FromDer, X509Certificate},
};

pub use resolver::CertResolver;

/// Secret keys.
pub const CA_CERT_KEY: &str = "ca.crt";
pub const CA_KEY_KEY: &str = "ca.key";
pub const TLS_CERT_KEY: &str = "tls.crt";
pub const TLS_KEY_KEY: &str = "tls.key";

/// Certificates start this long before they are made, for clocks that run behind.
const BACKDATE: Duration = Duration::from_secs(5 * 60);
const CA_COMMON_NAME: &str = "attache-webhook-ca";

/// Lifetimes and when to renew.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CertPolicy {
    pub ca_validity: Duration,
    pub cert_validity: Duration,
    /// Renew once this share of a certificate's lifetime has passed, as (numerator,
    /// denominator): 2/3 by default.
    pub renew_after: (u32, u32),
}

/// What the Secret holds (all PEM).
#[derive(Clone, PartialEq, Eq)]
pub struct TlsMaterial {
    /// The CA that signed `cert` first, then older CAs that are still trusted during a CA
    /// rotation; this is the `caBundle`.
    pub ca_bundle: String,
    pub ca_key: String,
    pub cert: String,
    pub key: String,
}

/// What a certificate says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    pub dns_names: Vec<String>,
}

/// Whether the material can go on being served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Renewal {
    /// Good until `renew_at`.
    NotDue {
        renew_at: SystemTime,
    },
    Due(DueReason),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DueReason {
    Missing,
    Unreadable(String),
    /// 2/3 of the serving certificate's lifetime has passed (or it expired).
    Expiring,
    /// The CA itself is near its end: a new CA is made, the old one stays in the bundle.
    CaExpiring,
    /// The certificate does not cover the Service's DNS names (the Service was renamed).
    Names,
}

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cannot read the certificate material: {0}")]
    Parse(String),
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("the certificate and key cannot be served: {0}")]
    Tls(#[from] rustls::Error),
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("another replica changed {0} first; retrying")]
    Conflict(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

// === impl CertPolicy ===

impl Default for CertPolicy {
    /// A ten-year CA and one-year serving certificates, renewed after eight months.
    fn default() -> Self {
        Self {
            ca_validity: Duration::from_secs(10 * 365 * 24 * 3600),
            cert_validity: Duration::from_secs(365 * 24 * 3600),
            renew_after: (2, 3),
        }
    }
}

impl CertPolicy {
    /// When a certificate valid over `[not_before, not_after]` is due for renewal.
    pub fn renew_at(&self, not_before: SystemTime, not_after: SystemTime) -> SystemTime {
        let lifetime = not_after.duration_since(not_before).unwrap_or_default();
        let (num, den) = self.renew_after;
        not_before + lifetime.mul_f64(f64::from(num) / f64::from(den.max(1)))
    }
}

// === impl TlsMaterial ===

impl TlsMaterial {
    /// Reads the material from a Secret's `data`.
    pub fn from_secret_data(data: &BTreeMap<String, ByteString>) -> Result<Self, CertError> {
        let get = |key: &str| -> Result<String, CertError> {
            let bytes = data
                .get(key)
                .ok_or_else(|| CertError::Parse(format!("no key {key}")))?;
            String::from_utf8(bytes.0.clone())
                .map_err(|_| CertError::Parse(format!("{key} is not PEM text")))
        };
        Ok(Self {
            ca_bundle: get(CA_CERT_KEY)?,
            ca_key: get(CA_KEY_KEY)?,
            cert: get(TLS_CERT_KEY)?,
            key: get(TLS_KEY_KEY)?,
        })
    }

    pub fn to_secret_data(&self) -> BTreeMap<String, ByteString> {
        [
            (CA_CERT_KEY, &self.ca_bundle),
            (CA_KEY_KEY, &self.ca_key),
            (TLS_CERT_KEY, &self.cert),
            (TLS_KEY_KEY, &self.key),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), ByteString(v.clone().into_bytes())))
        .collect()
    }

    /// The serving certificate's validity and names.
    pub fn leaf(&self) -> Result<CertInfo, CertError> {
        inspect(self.cert.as_bytes())?
            .into_iter()
            .next()
            .ok_or_else(|| CertError::Parse("tls.crt holds no certificate".into()))
    }
}

impl std::fmt::Debug for TlsMaterial {
    /// Keys stay out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("cert", &self.leaf().ok())
            .finish_non_exhaustive()
    }
}

/// The webhook Service's DNS names, as the API server may dial it.
pub fn service_dns_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        service.to_string(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ]
}

/// Every certificate in a PEM text, in order.
pub fn inspect(pem: &[u8]) -> Result<Vec<CertInfo>, CertError> {
    let mut out = Vec::new();
    for block in Pem::iter_from_buffer(pem) {
        let block = block.map_err(|e| CertError::Parse(format!("PEM: {e}")))?;
        if block.label != "CERTIFICATE" {
            continue;
        }
        let cert = block
            .parse_x509()
            .map_err(|e| CertError::Parse(format!("X.509: {e}")))?;
        out.push(cert_info(&cert)?);
    }
    Ok(out)
}

fn cert_info(cert: &X509Certificate<'_>) -> Result<CertInfo, CertError> {
    let time = |t: i64| -> Result<SystemTime, CertError> {
        u64::try_from(t)
            .map(|s| UNIX_EPOCH + Duration::from_secs(s))
            .map_err(|_| CertError::Parse("certificate dated before 1970".into()))
    };
    let validity = cert.validity();
    let mut dns_names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(n) = name {
                dns_names.push(n.to_string());
            }
        }
    }
    Ok(CertInfo {
        not_before: time(validity.not_before.timestamp())?,
        not_after: time(validity.not_after.timestamp())?,
        dns_names,
    })
}

/// Whether `material` may go on being served at `now` for `dns_names`.
pub fn renewal(
    material: &TlsMaterial,
    dns_names: &[String],
    now: SystemTime,
    policy: &CertPolicy,
) -> Renewal {
    let unreadable = |e: CertError| Renewal::Due(DueReason::Unreadable(e.to_string()));
    let leaf = match material.leaf() {
        Ok(l) => l,
        Err(e) => return unreadable(e),
    };
    let ca = match inspect(material.ca_bundle.as_bytes()).map(|c| c.into_iter().next()) {
        Ok(Some(ca)) => ca,
        Ok(None) => return unreadable(CertError::Parse("ca.crt holds no certificate".into())),
        Err(e) => return unreadable(e),
    };
    if let Err(e) = check_signed_by_first_ca(material) {
        return unreadable(e);
    }
    if let Err(e) = resolver::certified_key(material.cert.as_bytes(), material.key.as_bytes()) {
        return unreadable(e);
    }
    if !dns_names.iter().all(|n| leaf.dns_names.contains(n)) {
        return Renewal::Due(DueReason::Names);
    }
    let ca_renew_at = policy.renew_at(ca.not_before, ca.not_after);
    if now >= ca_renew_at {
        return Renewal::Due(DueReason::CaExpiring);
    }
    let renew_at = policy.renew_at(leaf.not_before, leaf.not_after);
    if now >= renew_at {
        return Renewal::Due(DueReason::Expiring);
    }
    Renewal::NotDue {
        renew_at: renew_at.min(ca_renew_at),
    }
}

fn check_signed_by_first_ca(material: &TlsMaterial) -> Result<(), CertError> {
    let der = |pem: &str| -> Result<Vec<u8>, CertError> {
        Pem::iter_from_buffer(pem.as_bytes())
            .filter_map(Result::ok)
            .find(|p| p.label == "CERTIFICATE")
            .map(|p| p.contents)
            .ok_or_else(|| CertError::Parse("no certificate".into()))
    };
    let (leaf_der, ca_der) = (der(&material.cert)?, der(&material.ca_bundle)?);
    let (_, leaf) = X509Certificate::from_der(&leaf_der)
        .map_err(|e| CertError::Parse(format!("tls.crt: {e}")))?;
    let (_, ca) =
        X509Certificate::from_der(&ca_der).map_err(|e| CertError::Parse(format!("ca.crt: {e}")))?;
    leaf.verify_signature(Some(ca.public_key()))
        .map_err(|_| CertError::Parse("tls.crt is not signed by the first CA of ca.crt".into()))
}

/// New material for `dns_names`: a new serving certificate, signed by the previous CA while
/// that CA outlives it, else by a new CA (the previous CAs stay in the bundle until they
/// expire, so replicas still serving the old certificate remain trusted).
pub fn issue(
    previous: Option<&TlsMaterial>,
    dns_names: &[String],
    now: SystemTime,
    policy: &CertPolicy,
) -> Result<TlsMaterial, CertError> {
    let reusable_ca = previous.and_then(|p| {
        let ca = inspect(p.ca_bundle.as_bytes()).ok()?.into_iter().next()?;
        let outlives = ca.not_after >= now + policy.cert_validity;
        let fresh = now < policy.renew_at(ca.not_before, ca.not_after);
        let key = KeyPair::from_pem(&p.ca_key).ok()?;
        let pem = first_cert_pem(&p.ca_bundle)?;
        (outlives && fresh).then_some((pem, key))
    });
    let (ca_pem, ca_key, ca_bundle) = match reusable_ca {
        Some((pem, key)) => {
            let bundle = previous.map_or_else(String::new, |p| still_valid(&p.ca_bundle, now));
            (pem, key, bundle)
        }
        None => {
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::default();
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, CA_COMMON_NAME);
            dn.push(DnType::OrganizationName, "Attaché");
            params.distinguished_name = dn;
            params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            params.not_before = (now - BACKDATE).into();
            params.not_after = (now + policy.ca_validity).into();
            let pem = params.self_signed(&key)?.pem();
            let mut bundle = pem.clone();
            if let Some(p) = previous {
                bundle.push_str(&still_valid(&p.ca_bundle, now));
            }
            (pem, key, bundle)
        }
    };

    let issuer = Issuer::from_ca_cert_pem(&ca_pem, &ca_key)?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(dns_names.to_vec())?;
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        dns_names.first().map_or("attache-webhook", String::as_str),
    );
    params.distinguished_name = dn;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = (now - BACKDATE).into();
    params.not_after = (now + policy.cert_validity).into();
    let cert = params.signed_by(&key, &issuer)?;
    Ok(TlsMaterial {
        ca_bundle,
        ca_key: ca_key.serialize_pem(),
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

fn first_cert_pem(bundle: &str) -> Option<String> {
    split_pem(bundle).into_iter().next()
}

/// The certificates of a bundle that have not expired at `now`, as PEM.
fn still_valid(bundle: &str, now: SystemTime) -> String {
    split_pem(bundle)
        .into_iter()
        .filter(|pem| {
            inspect(pem.as_bytes())
                .ok()
                .and_then(|c| c.into_iter().next())
                .is_some_and(|c| c.not_after > now)
        })
        .collect()
}

/// The PEM blocks of a text, each with its BEGIN/END lines and a final newline.
fn split_pem(text: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if line.starts_with("-----BEGIN ") {
            current = Some(String::new());
        }
        if let Some(block) = current.as_mut() {
            block.push_str(line);
            block.push('\n');
        }
        if line.starts_with("-----END ") {
            blocks.extend(current.take());
        }
    }
    blocks
}

/// A strategic merge patch setting `caBundle` on every webhook of the configuration that does
/// not hold `bundle` already (webhooks merge by name); `None` when all do.
pub fn ca_bundle_patch(config: &MutatingWebhookConfiguration, bundle: &str) -> Option<Value> {
    let encoded = base64::engine::general_purpose::STANDARD.encode(bundle.as_bytes());
    let stale: Vec<Value> = config
        .webhooks
        .iter()
        .flatten()
        .filter(|w| {
            w.client_config.ca_bundle.as_ref().map(|b| b.0.as_slice()) != Some(bundle.as_bytes())
        })
        .map(|w| json!({"name": w.name, "clientConfig": {"caBundle": encoded}}))
        .collect();
    (!stale.is_empty()).then(|| json!({"webhooks": stale}))
}

#[cfg(test)]
mod tests;
