//! The controller against the in-process fake API server (tests/support/fake_api.rs): the
//! real kube client, the real kube-runtime `Controller`, watches and all; only the API server
//! is fake.

mod support;

use std::time::Duration;

use http::Method;
use serde_json::json;
use support::*;

const NS: &str = "payments";

fn stripe() -> serde_json::Value {
    xint(
        NS,
        "stripe",
        api_key_spec("https://api.stripe.com", "stripe-key"),
    )
}

/// Creates Secret `stripe-key` and integration `stripe`, starts the operator and waits for
/// `Ready=True`; returns the integration as stored.
async fn ready_stripe(fake: &FakeApi, user: &User) -> (Operator, serde_json::Value) {
    user.create(
        SECRETS,
        secret(NS, "stripe-key", &[("api-key", "sk_live_1\n")]),
    )
    .await;
    user.create(XINTS, stripe()).await;
    let op = Operator::start(fake);
    let x = eventually("stripe Ready=True", || {
        let x = fake.get(XINTS, NS, "stripe")?;
        (ready(&x)?.0 == "True").then_some(x)
    })
    .await;
    (op, x)
}

fn writes_by_operator(fake: &FakeApi, since: usize) -> Vec<Recorded> {
    fake.requests(Some("operator"))
        .into_iter()
        .skip(since)
        .filter(|r| r.method != Method::GET)
        .collect()
}

#[tokio::test]
async fn create_applies_owned_labelled_config_map_and_secret_and_reports_ready() {
    let fake = FakeApi::new();
    let user = User::new(&fake);
    let (op, x) = ready_stripe(&fake, &user).await;

    // Status.
    let (_, reason, message) = ready(&x).unwrap();
    assert_eq!(reason, "Reconciled");
    assert!(message.contains("attache-stripe"), "{message}");
    assert_eq!(x["status"]["observedGeneration"], 1);
    assert_eq!(x["status"]["pods"], 0);
    assert_eq!(x["status"]["conditions"][0]["observedGeneration"], 1);
    assert!(x["status"].get("clientCertificateNotAfter").is_none());

    // The generated objects: named, labelled, controlled by the integration.
    let cm = fake
        .get(CONFIG_MAPS, NS, "attache-stripe")
        .expect("ConfigMap");
    let s = fake.get(SECRETS, NS, "attache-stripe").expect("Secret");
    for obj in [&cm, &s] {
        assert_eq!(
            obj["metadata"]["labels"],
            json!({"app.kubernetes.io/managed-by": "attache-operator", "attache.dev/integration": "stripe"})
        );
        assert_eq!(
            obj["metadata"]["ownerReferences"],
            json!([{
                "apiVersion": "attache.dev/v1alpha1",
                "kind": "ExternalIntegration",
                "name": "stripe",
                "uid": x["metadata"]["uid"],
                "controller": true,
            }])
        );
    }
    let config = config(&cm);
    assert_eq!(config["upstream"]["host"], "api.stripe.com");
    assert_eq!(
        config["auth"],
        json!({"type": "apiKey", "header": "Authorization", "prefix": "Bearer "})
    );
    assert!(
        !cm.to_string().contains("sk_live_1"),
        "no secret in the ConfigMap"
    );
    assert_eq!(s["type"], "Opaque");
    assert_eq!(
        secret_value(&s, "auth-credential").as_deref(),
        Some("sk_live_1")
    );
    assert_eq!(
        s["data"].as_object().unwrap().len(),
        1,
        "exactly the credential"
    );

    // An Event for the transition.
    eventually("a Reconciled Event", || {
        fake.list(EVENTS).into_iter().find(|e| {
            e["reason"] == "Reconciled"
                && e["type"] == "Normal"
                && e["regarding"]["name"] == "stripe"
                && e["reportingController"] == "attache-operator"
        })
    })
    .await;

    // Writes: server-side apply under one field manager, status through the subresource.
    let writes = writes_by_operator(&fake, 0);
    for r in &writes {
        match r.res {
            Some(CONFIG_MAPS) | Some(SECRETS) => {
                assert_eq!(r.method, Method::PATCH, "{}", r.path);
                assert_eq!(
                    r.content_type.as_deref(),
                    Some("application/apply-patch+yaml")
                );
                assert_eq!(
                    r.query.get("fieldManager").map(String::as_str),
                    Some("attache-operator")
                );
                assert_eq!(r.query.get("force").map(String::as_str), Some("true"));
            }
            Some(XINTS) => {
                assert!(r.path.ends_with("/stripe/status"), "{}", r.path);
                assert_eq!(r.method, Method::PATCH);
            }
            Some(EVENTS) => {}
            other => panic!("unexpected write {} {} ({other:?})", r.method, r.path),
        }
    }
    // Secret first, so a config never names secret files that are not there yet.
    let first_secret = writes.iter().position(|r| r.res == Some(SECRETS)).unwrap();
    let first_cm = writes
        .iter()
        .position(|r| r.res == Some(CONFIG_MAPS))
        .unwrap();
    assert!(first_secret < first_cm);
    assert!(op.reconciliations("success") >= 1);
    assert_within_rbac(&fake, "operator");
    op.stop().await;
}

#[tokio::test]
async fn a_spec_change_re_renders_and_moves_observed_generation() {
    let fake = FakeApi::new();
    let user = User::new(&fake);
    let (op, _) = ready_stripe(&fake, &user).await;
    let before = fake.requests(Some("operator")).len();
    let secret_rv =
        fake.get(SECRETS, NS, "attache-stripe").unwrap()["metadata"]["resourceVersion"].clone();

    user.merge(
        XINTS,
        NS,
        "stripe",
        json!({"spec": {"upstream": {"url": "https://api.eu.stripe.com/v1"}, "timeouts": {"connect": "5s"}}}),
    )
    .await;
    let x = eventually("observedGeneration 2", || {
        let x = fake.get(XINTS, NS, "stripe")?;
        (x["status"]["observedGeneration"] == 2).then_some(x)
    })
    .await;
    assert_eq!(x["metadata"]["generation"], 2);
    assert_eq!(ready(&x).unwrap().0, "True");
    let config = config(&fake.get(CONFIG_MAPS, NS, "attache-stripe").unwrap());
    assert_eq!(config["upstream"]["host"], "api.eu.stripe.com");
    assert_eq!(config["upstream"]["basePath"], "/v1");
    assert_eq!(config["timeouts"]["connect"], "5s");

    // The Secret did not change, so it was not written.
    let writes = writes_by_operator(&fake, before);
    assert!(
        writes.iter().all(|r| r.res != Some(SECRETS)),
        "{:?}",
        writes.iter().map(|r| &r.path).collect::<Vec<_>>()
    );
    assert_eq!(
        fake.get(SECRETS, NS, "attache-stripe").unwrap()["metadata"]["resourceVersion"],
        secret_rv
    );
    op.stop().await;
}

#[tokio::test]
async fn rotating_a_referenced_secret_reaches_the_generated_secret_and_nothing_else() {
    let fake = FakeApi::new();
    let user = User::new(&fake);
    user.create(SECRETS, secret(NS, "twilio-key", &[("api-key", "tw_1")]))
        .await;
    user.create(
        XINTS,
        xint(
            NS,
            "twilio",
            api_key_spec("https://api.twilio.com", "twilio-key"),
        ),
    )
    .await;
    let (op, x) = ready_stripe(&fake, &user).await;
    eventually("twilio ready", || {
        (ready(&fake.get(XINTS, NS, "twilio")?)?.0 == "True").then_some(())
    })
    .await;
    let user_requests = fake.requests(Some("user")).len();
    let before = fake.requests(Some("operator")).len();

    user.merge(
        SECRETS,
        NS,
        "stripe-key",
        json!({"data": {"api-key": "c2tfbGl2ZV8y"}}), // sk_live_2
    )
    .await;
    eventually("the rotated credential in attache-stripe", || {
        let s = fake.get(SECRETS, NS, "attache-stripe")?;
        (secret_value(&s, "auth-credential")? == "sk_live_2").then_some(())
    })
    .await;

    // Nobody touched the integration; the other integration was not written.
    let user_after: Vec<_> = fake
        .requests(Some("user"))
        .into_iter()
        .skip(user_requests)
        .collect();
    assert!(user_after.iter().all(|r| r.res == Some(SECRETS)));
    let now = fake.get(XINTS, NS, "stripe").unwrap();
    assert_eq!(now["metadata"]["generation"], x["metadata"]["generation"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let writes = writes_by_operator(&fake, before);
    assert!(
        writes.iter().all(|r| !r.path.contains("twilio")),
        "{:?}",
        writes.iter().map(|r| &r.path).collect::<Vec<_>>()
    );
    // The ConfigMap holds no secret, so rotation does not rewrite it.
    assert!(writes.iter().all(|r| r.res != Some(CONFIG_MAPS)));
    op.stop().await;
}

#[tokio::test]
async fn a_missing_secret_is_reported_and_the_last_good_config_is_kept() {
    let fake = FakeApi::new();
    let user = User::new(&fake);
    let (op, _) = ready_stripe(&fake, &user).await;
    let cm = fake.get(CONFIG_MAPS, NS, "attache-stripe").unwrap();
    let s = fake.get(SECRETS, NS, "attache-stripe").unwrap();

    user.delete(SECRETS, NS, "stripe-key").await;
    let x = eventually("Ready=False SecretNotFound", || {
        let x = fake.get(XINTS, NS, "stripe")?;
        (ready(&x)?.1 == "SecretNotFound").then_some(x)
    })
    .await;
    let (status, _, message) = ready(&x).unwrap();
    assert_eq!(status, "False");
    assert!(
        message.contains("spec.auth.apiKey.secretKeyRef"),
        "{message}"
    );
    assert!(
        message.contains("Secret \"stripe-key\" not found"),
        "{message}"
    );
    eventually("a Warning Event naming the Secret", || {
        fake.list(EVENTS).into_iter().find(|e| {
            e["type"] == "Warning"
                && e["reason"] == "SecretNotFound"
                && e["note"].as_str().is_some_and(|n| n.contains("stripe-key"))
        })
    })
    .await;
    // Retried with backoff meanwhile, generated objects untouched.
    eventually("a retry", || {
        (op.reconciliations("secret_not_found") >= 2).then_some(())
    })
    .await;
    assert_eq!(fake.get(CONFIG_MAPS, NS, "attache-stripe").unwrap(), cm);
    assert_eq!(fake.get(SECRETS, NS, "attache-stripe").unwrap(), s);

    // The Secret comes back (rotated): Ready again, new credential.
    user.create(
        SECRETS,
        secret(NS, "stripe-key", &[("api-key", "sk_live_3")]),
    )
    .await;
    eventually("Ready=True again with the new credential", || {
        let x = fake.get(XINTS, NS, "stripe")?;
        let s = fake.get(SECRETS, NS, "attache-stripe")?;
        (ready(&x)?.0 == "True" && secret_value(&s, "auth-credential")? == "sk_live_3")
            .then_some(())
    })
    .await;
    op.stop().await;
}

#[tokio::test]
async fn a_missing_key_is_reported_and_nothing_is_generated() {
    let fake = FakeApi::new();
    let user = User::new(&fake);
    user.create(SECRETS, secret(NS, "stripe-key", &[("other", "x")]))
        .await;
    user.create(XINTS, stripe()).await;
    let op = Operator::start(&fake);
    let x = eventually("Ready=False KeyNotFound", || {
        let x = fake.get(XINTS, NS, "stripe")?;
        (ready(&x)?.1 == "KeyNotFound").then_some(x)
    })
    .await;
    let message = ready(&x).unwrap().2;
    assert!(message.contains("has no key \"api-key\""), "{message}");
    assert_eq!(x["status"]["observedGeneration"], 1);
    assert!(fake.get(CONFIG_MAPS, NS, "attache-stripe").is_none());
    assert!(fake.get(SECRETS, NS, "attache-stripe").is_none());
    op.stop().await;
}

#[tokio::test]
async fn deletion_is_left_to_owner_references_and_the_operator_never_deletes() {
    let fake = FakeApi::new();
    let user = User::new(&fake);
    let (op, _) = ready_stripe(&fake, &user).await;

    user.delete(XINTS, NS, "stripe").await;
    // The fake's garbage collector follows the owner references.
    assert!(fake.get(CONFIG_MAPS, NS, "attache-stripe").is_none());
    assert!(fake.get(SECRETS, NS, "attache-stripe").is_none());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        fake.get(CONFIG_MAPS, NS, "attache-stripe").is_none(),
        "not re-created for a deleted integration"
    );
    // The referenced Secret is the user's: untouched.
    assert!(fake.get(SECRETS, NS, "stripe-key").is_some());
    assert!(fake
        .requests(Some("operator"))
        .iter()
        .all(|r| r.method != Method::DELETE));
    op.stop().await;
}

#[tokio::test]
async fn someone_elses_object_with_the_generated_name_is_not_taken_over() {
    let fake = FakeApi::new();
    let user = User::new(&fake);
    let foreign = user
        .create(
            CONFIG_MAPS,
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "attache-legacy", "namespace": NS},
                   "data": {"config.json": "hand-written"}}),
        )
        .await;
    user.create(SECRETS, secret(NS, "stripe-key", &[("api-key", "sk")]))
        .await;
    user.create(
        XINTS,
        xint(
            NS,
            "legacy",
            api_key_spec("https://api.stripe.com", "stripe-key"),
        ),
    )
    .await;
    let op = Operator::start(&fake);
    let x = eventually("Ready=False NameTaken", || {
        let x = fake.get(XINTS, NS, "legacy")?;
        (ready(&x)?.1 == "NameTaken").then_some(x)
    })
    .await;
    let message = ready(&x).unwrap().2;
    assert!(
        message.contains("ConfigMap \"attache-legacy\""),
        "{message}"
    );
    assert!(message.contains("not owned"), "{message}");
    assert_eq!(
        fake.get(CONFIG_MAPS, NS, "attache-legacy").unwrap(),
        foreign
    );
    // Checked before writing anything: no half-generated integration.
    assert!(fake.get(SECRETS, NS, "attache-legacy").is_none());
    op.stop().await;
}

#[tokio::test]
async fn drift_in_a_generated_object_is_repaired() {
    let fake = FakeApi::new();
    let user = User::new(&fake);
    let (op, _) = ready_stripe(&fake, &user).await;
    let good = fake.get(CONFIG_MAPS, NS, "attache-stripe").unwrap()["data"].clone();
    user.merge(
        CONFIG_MAPS,
        NS,
        "attache-stripe",
        json!({"data": {"config.json": "{}"}}),
    )
    .await;
    eventually("the ConfigMap restored", || {
        (fake.get(CONFIG_MAPS, NS, "attache-stripe")?["data"] == good).then_some(())
    })
    .await;
    op.stop().await;
}

#[tokio::test]
async fn api_failures_are_retried_with_backoff() {
    let fake = FakeApi::new();
    let user = User::new(&fake);
    user.create(SECRETS, secret(NS, "stripe-key", &[("api-key", "sk")]))
        .await;
    user.create(XINTS, stripe()).await;
    fake.inject_fault(
        Some("operator"),
        Method::PATCH,
        "/configmaps/attache-stripe",
        500,
        2,
    );
    let op = Operator::start(&fake);
    eventually("Ready=True after the failures", || {
        (ready(&fake.get(XINTS, NS, "stripe")?)?.0 == "True").then_some(())
    })
    .await;
    assert_eq!(op.reconciliations("api_apply"), 2);
    let failed: Vec<_> = fake
        .requests(Some("operator"))
        .into_iter()
        .filter(|r| r.status == 500)
        .collect();
    assert_eq!(failed.len(), 2);
    op.stop().await;
}

#[tokio::test]
async fn status_counts_injected_pods_and_the_shared_limit_follows_damped() {
    let fake = FakeApi::new();
    let user = User::new(&fake);
    user.create(SECRETS, secret(NS, "openai-key", &[("api-key", "sk")]))
        .await;
    let mut spec = api_key_spec("https://api.openai.com", "openai-key");
    spec["rateLimit"] = json!({"requests": 100, "burst": 100, "scope": "shared"});
    user.create(XINTS, xint(NS, "openai", spec)).await;
    user.create(PODS, injected_pod(NS, "shop-1", "openai,stripe"))
        .await;
    user.create(PODS, injected_pod(NS, "shop-2", "openai"))
        .await;
    // Neither counts: another namespace, and a pod the webhook did not inject.
    user.create(PODS, injected_pod("billing", "shop-1", "openai"))
        .await;
    let mut plain = injected_pod(NS, "plain", "openai");
    plain["metadata"]["labels"] = json!({"app": "shop"});
    user.create(PODS, plain).await;

    let op = Operator::start(&fake);
    let share = |fake: &FakeApi| {
        let cm = fake.get(CONFIG_MAPS, NS, "attache-openai")?;
        let c = config(&cm);
        Some((
            c["rateLimit"]["pods"].as_u64()?,
            c["rateLimit"]["burst"].as_u64()?,
        ))
    };
    eventually("pods: 2", || {
        (fake.get(XINTS, NS, "openai")?["status"]["pods"] == 2).then_some(())
    })
    .await;
    assert_eq!(share(&fake), Some((2, 50)));

    // A third pod: counted, and the share shrinks at once.
    user.create(PODS, injected_pod(NS, "shop-3", "openai"))
        .await;
    eventually("pods: 3, divided by 3", || {
        let pods = fake.get(XINTS, NS, "openai")?["status"]["pods"].as_u64()?;
        (pods == 3 && share(&fake)? == (3, 33)).then_some(())
    })
    .await;

    // Two pods go: the status says so at once, the share grows only after the window (1 s).
    user.delete(PODS, NS, "shop-3").await;
    user.delete(PODS, NS, "shop-2").await;
    let dropped = tokio::time::Instant::now();
    eventually("pods: 1", || {
        (fake.get(XINTS, NS, "openai")?["status"]["pods"] == 1).then_some(())
    })
    .await;
    assert_eq!(share(&fake), Some((3, 33)), "decreases wait for the window");
    eventually("divided by 1 after the window", || {
        (share(&fake)? == (1, 100)).then_some(())
    })
    .await;
    assert!(dropped.elapsed() >= Duration::from_millis(900));
    assert_within_rbac(&fake, "operator");
    op.stop().await;
}

#[tokio::test]
async fn an_mtls_integration_reports_its_client_certificate_expiry() {
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
    let x = eventually("bank Ready", || {
        let x = fake.get(XINTS, NS, "bank")?;
        (ready(&x)?.0 == "True").then_some(x)
    })
    .await;
    let not_after = x["status"]["clientCertificateNotAfter"].as_str().unwrap();
    assert_eq!(not_after, "2027-03-01T00:00:00Z");
    let s = fake.get(SECRETS, NS, "attache-bank").unwrap();
    assert!(secret_value(&s, "tls.crt")
        .unwrap()
        .contains("BEGIN CERTIFICATE"));
    assert!(secret_value(&s, "tls.key").is_some());

    // A broken certificate: CertificateInvalid, and the status keeps the expiry of the
    // certificate the pods still use.
    user.merge(
        SECRETS,
        NS,
        "bank-mtls",
        json!({"data": {"tls.crt": "bm90IGEgY2VydA=="}}),
    )
    .await;
    let x = eventually("CertificateInvalid", || {
        let x = fake.get(XINTS, NS, "bank")?;
        (ready(&x)?.1 == "CertificateInvalid").then_some(x)
    })
    .await;
    assert_eq!(x["status"]["clientCertificateNotAfter"], not_after);
    assert!(ready(&x).unwrap().2.contains("bank-mtls"));
    assert_eq!(fake.get(SECRETS, NS, "attache-bank").unwrap(), s);
    op.stop().await;
}

/// Secret `bank-mtls` holding `cert` and `key`, integration `bank` using it, the operator
/// started, and `Ready=True` reached.
async fn ready_bank(fake: &FakeApi, user: &User, cert: &str, key: &str) -> Operator {
    user.create(
        SECRETS,
        secret(NS, "bank-mtls", &[("tls.crt", cert), ("tls.key", key)]),
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
    let op = Operator::start(fake);
    eventually("bank Ready", || {
        (ready(&fake.get(XINTS, NS, "bank")?)?.0 == "True").then_some(())
    })
    .await;
    op
}

/// A key from another certificate, then an expired certificate: each is `Ready=False`
/// `CertificateInvalid` with a Warning Event naming the Secret and the key at fault, and the
/// pods keep the last good pair (the sidecar would refuse to start with the new one).
#[tokio::test]
async fn a_mismatched_or_expired_client_pair_is_certificate_invalid_and_the_last_good_pair_stays() {
    let fake = FakeApi::new();
    let user = User::new(&fake);
    let ca = attache_tests::pki::TestCa::new("bank test CA");
    let good = ca.client_cert("attache-client");
    let op = ready_bank(&fake, &user, &good.cert_pem, &good.key_pem).await;
    let generated = fake.get(SECRETS, NS, "attache-bank").unwrap();
    let not_after =
        fake.get(XINTS, NS, "bank").unwrap()["status"]["clientCertificateNotAfter"].clone();

    let b64 = |s: &str| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, s);
    let other = ca.client_cert("attache-client");
    let expired = ca.client_cert_valid_until(
        "attache-client",
        std::time::SystemTime::now() - Duration::from_secs(86_400),
    );
    for (case, cert, key, at_fault, says) in [
        (
            "mismatched key",
            &good.cert_pem,
            &other.key_pem,
            "tls.key",
            "does not belong to the certificate",
        ),
        (
            "expired",
            &expired.cert_pem,
            &expired.key_pem,
            "tls.crt",
            "the certificate expired at",
        ),
    ] {
        user.merge(
            SECRETS,
            NS,
            "bank-mtls",
            json!({"data": {"tls.crt": b64(cert), "tls.key": b64(key)}}),
        )
        .await;
        let x = eventually(&format!("{case}: CertificateInvalid"), || {
            let x = fake.get(XINTS, NS, "bank")?;
            let (_, reason, message) = ready(&x)?;
            (reason == "CertificateInvalid" && message.contains(says)).then_some(x)
        })
        .await;
        let (status, _, message) = ready(&x).unwrap();
        assert_eq!(status, "False", "{case}");
        assert!(
            message.contains(&format!("Secret \"bank-mtls\" key \"{at_fault}\""))
                && message.contains(says),
            "{case}: {message}"
        );
        // (A repeat of the same reason is counted in the first Event's series by the recorder,
        // so the note is the first case's.)
        eventually(
            &format!("{case}: a Warning Event naming the Secret"),
            || {
                fake.list(EVENTS).into_iter().find(|e| {
                    e["type"] == "Warning"
                        && e["reason"] == "CertificateInvalid"
                        && e["note"].as_str().is_some_and(|n| n.contains("bank-mtls"))
                })
            },
        )
        .await;
        assert_eq!(
            fake.get(SECRETS, NS, "attache-bank").unwrap(),
            generated,
            "{case}: the pods keep the last good pair"
        );
        assert_eq!(
            x["status"]["clientCertificateNotAfter"], not_after,
            "{case}"
        );
        assert!(op.reconciliations("certificate_invalid") >= 1, "{case}");

        // The good pair back: Ready again (so the next case is a transition of its own).
        user.merge(
            SECRETS,
            NS,
            "bank-mtls",
            json!({"data": {"tls.crt": b64(&good.cert_pem), "tls.key": b64(&good.key_pem)}}),
        )
        .await;
        eventually(&format!("{case}: Ready=True again"), || {
            (ready(&fake.get(XINTS, NS, "bank")?)?.0 == "True").then_some(())
        })
        .await;
    }

    // A new matching pair (a rotation) reaches the generated Secret.
    user.merge(
        SECRETS,
        NS,
        "bank-mtls",
        json!({"data": {"tls.crt": b64(&other.cert_pem), "tls.key": b64(&other.key_pem)}}),
    )
    .await;
    eventually("the rotated pair in attache-bank", || {
        let s = fake.get(SECRETS, NS, "attache-bank")?;
        (secret_value(&s, "tls.key")? == other.key_pem).then_some(())
    })
    .await;
    op.stop().await;
}
