//! The status subresource as the controller writes it: server-side apply under the operator's
//! field manager, against the in-process fake API server (tests/support/fake_api.rs).

mod support;

use std::time::Duration;

use http::Method;
use serde_json::json;
use support::*;

const NS: &str = "payments";

/// A field the controller stops applying is removed: the client certificate's expiry goes
/// with the certificate, without a `null` in the body.
#[tokio::test]
async fn status_is_applied_and_a_field_left_out_is_removed() {
    let fake = FakeApi::new();
    let user = User::new(&fake);
    let ca = attache_tests::pki::TestCa::new("bank test CA");
    let not_after = std::time::UNIX_EPOCH + Duration::from_secs(1_803_859_200);
    let client = ca.client_cert_valid_until("attache-client", not_after);
    user.create(
        SECRETS,
        secret(
            NS,
            "bank-mtls",
            &[("tls.crt", &client.cert_pem), ("tls.key", &client.key_pem)],
        ),
    )
    .await;
    user.create(
        XINTS,
        xint(
            NS,
            "bank",
            json!({"upstream": {"url": "https://api.bank.example"},
                   "tls": {"clientCertificate": {"secretName": "bank-mtls"}}}),
        ),
    )
    .await;
    let op = Operator::start(&fake);
    eventually("the certificate's expiry in the status", || {
        let x = fake.get(XINTS, NS, "bank")?;
        (x["status"]["clientCertificateNotAfter"] == "2027-03-01T00:00:00Z").then_some(())
    })
    .await;

    user.merge(XINTS, NS, "bank", json!({"spec": {"tls": null}}))
        .await;
    let x = eventually("observedGeneration 2", || {
        let x = fake.get(XINTS, NS, "bank")?;
        (x["status"]["observedGeneration"] == 2).then_some(x)
    })
    .await;
    assert_eq!(ready(&x).unwrap().0, "True");
    assert!(
        x["status"].get("clientCertificateNotAfter").is_none(),
        "{}",
        x["status"]
    );

    let status_writes: Vec<Recorded> = fake
        .requests(Some("operator"))
        .into_iter()
        .filter(|r| r.res == Some(XINTS) && r.method != Method::GET && !r.watch)
        .collect();
    assert!(status_writes.len() >= 2, "{status_writes:?}");
    for r in &status_writes {
        assert!(r.path.ends_with("/bank/status"), "{}", r.path);
        assert_eq!(r.method, Method::PATCH);
        assert_eq!(
            r.content_type.as_deref(),
            Some("application/apply-patch+yaml")
        );
        assert_eq!(
            r.query.get("fieldManager").map(String::as_str),
            Some(attache_operator::contract::FIELD_MANAGER)
        );
        assert_eq!(r.query.get("force").map(String::as_str), Some("true"));
        assert_eq!(r.status, 200, "{}", r.path);
    }
    assert_within_rbac(&fake, "operator");
    op.stop().await;
}
