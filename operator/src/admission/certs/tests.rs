use std::time::{Duration, SystemTime};

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use rustls_pki_types::pem::PemObject;
use serde_json::json;

use super::*;

const DAY: Duration = Duration::from_secs(24 * 3600);

fn names() -> Vec<String> {
    service_dns_names("attache-webhook", "attache-system")
}

fn policy() -> CertPolicy {
    CertPolicy {
        ca_validity: 300 * DAY,
        cert_validity: 30 * DAY,
        renew_after: (2, 3),
    }
}

fn t0() -> SystemTime {
    // A fixed instant keeps the arithmetic readable; certificates are dated from it.
    UNIX_EPOCH + Duration::from_secs(1_900_000_000)
}

#[test]
fn issues_a_ca_and_a_serving_certificate_for_the_service_names() {
    let m = issue(None, &names(), t0(), &policy()).unwrap();
    let leaf = m.leaf().unwrap();
    assert_eq!(leaf.dns_names, names());
    assert_eq!(leaf.not_after, t0() + 30 * DAY);
    assert_eq!(inspect(m.ca_bundle.as_bytes()).unwrap().len(), 1);
    assert!(check_signed_by_first_ca(&m).is_ok());
    assert!(resolver::certified_key(m.cert.as_bytes(), m.key.as_bytes()).is_ok());
    // The Secret round trip keeps every key.
    let back = TlsMaterial::from_secret_data(&m.to_secret_data()).unwrap();
    assert_eq!(back, m);
    // Keys never reach Debug output.
    assert!(!format!("{m:?}").contains("PRIVATE KEY"));
}

#[test]
fn renewal_falls_due_at_two_thirds_of_the_lifetime() {
    let m = issue(None, &names(), t0(), &policy()).unwrap();
    let Renewal::NotDue { renew_at } = renewal(&m, &names(), t0(), &policy()) else {
        panic!("fresh material is due")
    };
    // Lifetime = 30 days + the 5-minute backdate; 2/3 of it from not_before.
    let lifetime = 30 * DAY + BACKDATE;
    assert_eq!(renew_at, t0() - BACKDATE + lifetime.mul_f64(2.0 / 3.0));
    let just_before = renew_at - Duration::from_secs(1);
    assert!(matches!(
        renewal(&m, &names(), just_before, &policy()),
        Renewal::NotDue { .. }
    ));
    assert_eq!(
        renewal(&m, &names(), renew_at, &policy()),
        Renewal::Due(DueReason::Expiring)
    );
    assert_eq!(
        renewal(&m, &names(), t0() + 31 * DAY, &policy()),
        Renewal::Due(DueReason::Expiring)
    );
}

#[test]
fn renewing_keeps_the_ca_while_it_outlives_the_new_certificate() {
    let first = issue(None, &names(), t0(), &policy()).unwrap();
    let later = t0() + 21 * DAY;
    let second = issue(Some(&first), &names(), later, &policy()).unwrap();
    assert_eq!(
        second.ca_bundle, first.ca_bundle,
        "the caBundle must not change"
    );
    assert_eq!(second.ca_key, first.ca_key);
    assert_ne!(second.cert, first.cert);
    assert_ne!(second.key, first.key);
    assert!(check_signed_by_first_ca(&second).is_ok());
    assert!(matches!(
        renewal(&second, &names(), later, &policy()),
        Renewal::NotDue { .. }
    ));
}

#[test]
fn a_ca_near_its_end_is_replaced_and_the_old_one_stays_trusted_until_it_expires() {
    let first = issue(None, &names(), t0(), &policy()).unwrap();
    let late = t0() + 250 * DAY; // past 2/3 of the CA's 300 days
    assert_eq!(
        renewal(&first, &names(), late, &policy()),
        Renewal::Due(DueReason::CaExpiring)
    );
    let second = issue(Some(&first), &names(), late, &policy()).unwrap();
    let bundle = inspect(second.ca_bundle.as_bytes()).unwrap();
    assert_eq!(bundle.len(), 2, "new CA + the old one");
    assert!(second.ca_bundle.ends_with(&first.ca_bundle));
    assert!(check_signed_by_first_ca(&second).is_ok());
    // Once the old CA has expired, the next rotation drops it.
    let much_later = t0() + 460 * DAY; // the first CA expired at 300, the second is due at 450
    let third = issue(Some(&second), &names(), much_later, &policy()).unwrap();
    assert_eq!(inspect(third.ca_bundle.as_bytes()).unwrap().len(), 2);
    assert!(!third.ca_bundle.contains(first.ca_bundle.trim()));
}

#[test]
fn a_renamed_service_or_broken_material_is_due() {
    let m = issue(None, &names(), t0(), &policy()).unwrap();
    let other = service_dns_names("other", "attache-system");
    assert_eq!(
        renewal(&m, &other, t0(), &policy()),
        Renewal::Due(DueReason::Names)
    );

    let mut swapped = m.clone();
    swapped.key = issue(None, &names(), t0(), &policy()).unwrap().key;
    assert!(matches!(
        renewal(&swapped, &names(), t0(), &policy()),
        Renewal::Due(DueReason::Unreadable(_))
    ));
    let mut foreign_ca = m.clone();
    foreign_ca.ca_bundle = issue(None, &names(), t0(), &policy()).unwrap().ca_bundle;
    assert!(matches!(
        renewal(&foreign_ca, &names(), t0(), &policy()),
        Renewal::Due(DueReason::Unreadable(why)) if why.contains("not signed")
    ));
    let mut garbage = m;
    garbage.cert = "not a certificate".into();
    assert!(matches!(
        renewal(&garbage, &names(), t0(), &policy()),
        Renewal::Due(DueReason::Unreadable(_))
    ));
    assert!(TlsMaterial::from_secret_data(&Default::default()).is_err());
}

fn webhook_config(bundles: &[Option<&str>]) -> MutatingWebhookConfiguration {
    let webhooks: Vec<_> = bundles
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let mut cc =
                json!({"service": {"name": "attache-webhook", "namespace": "attache-system"}});
            if let Some(b) = b {
                cc["caBundle"] = json!(base64::engine::general_purpose::STANDARD.encode(b));
            }
            json!({
                "name": format!("hook{i}.attache.dev"),
                "clientConfig": cc,
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
            })
        })
        .collect();
    serde_json::from_value(
        json!({"metadata": {"name": "attache-sidecar-injector"}, "webhooks": webhooks}),
    )
    .unwrap()
}

#[test]
fn the_ca_bundle_patch_touches_only_webhooks_that_do_not_trust_the_ca() {
    let bundle = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    assert_eq!(
        ca_bundle_patch(&webhook_config(&[Some(bundle)]), bundle),
        None
    );
    let patch =
        ca_bundle_patch(&webhook_config(&[Some(bundle), None, Some("old")]), bundle).unwrap();
    let encoded = base64::engine::general_purpose::STANDARD.encode(bundle);
    assert_eq!(
        patch,
        json!({"webhooks": [
            {"name": "hook1.attache.dev", "clientConfig": {"caBundle": encoded}},
            {"name": "hook2.attache.dev", "clientConfig": {"caBundle": encoded}},
        ]})
    );
}

#[test]
fn the_resolver_swaps_certificates_and_ignores_rereads() {
    let r = CertResolver::default();
    assert!(!r.has_certificate());
    let a = issue(None, &names(), t0(), &policy()).unwrap();
    assert!(r.set_pem(a.cert.as_bytes(), a.key.as_bytes()).unwrap());
    assert!(!r.set_pem(a.cert.as_bytes(), a.key.as_bytes()).unwrap());
    let b = issue(Some(&a), &names(), t0(), &policy()).unwrap();
    // A certificate with someone else's key is refused; the current one stays.
    assert!(r.set_pem(b.cert.as_bytes(), a.key.as_bytes()).is_err());
    let served = r.current().unwrap();
    assert_eq!(
        served.cert[0].as_ref(),
        rustls_pki_types::CertificateDer::from_pem_slice(a.cert.as_bytes())
            .unwrap()
            .as_ref()
    );
    assert!(r.set_pem(b.cert.as_bytes(), b.key.as_bytes()).unwrap());
}
