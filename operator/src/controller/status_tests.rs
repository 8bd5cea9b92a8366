use attache_api::RenderError;

use super::*;

fn observed(now: i64) -> Observed<'static> {
    Observed {
        generation: Some(3),
        pods: 4,
        generated_name: "attache-stripe",
        now: Timestamp::from_second(now).unwrap(),
    }
}

fn missing_secret() -> Error {
    Error::Render(RenderError::SecretNotFound {
        field: "spec.auth.apiKey.secretKeyRef".into(),
        name: "stripe-key".into(),
    })
}

const T0: i64 = 1_800_000_000; // 2027-01-15T08:00:00Z

#[test]
fn first_success_is_ready_with_generation_pods_and_certificate_expiry() {
    let s = next_status(
        None,
        Outcome::Applied {
            client_certificate_not_after: Some(1_803_859_200),
        },
        &observed(T0),
    );
    assert_eq!(s.observed_generation, Some(3));
    assert_eq!(s.pods, Some(4));
    assert_eq!(
        s.client_certificate_not_after.as_deref(),
        Some("2027-03-01T00:00:00Z")
    );
    let ready = ready_condition(&s).unwrap();
    assert_eq!(ready.status, "True");
    assert_eq!(ready.reason.as_deref(), Some("Reconciled"));
    assert_eq!(ready.observed_generation, Some(3));
    assert_eq!(
        ready.last_transition_time.as_deref(),
        Some("2027-01-15T08:00:00Z")
    );
    assert!(ready.message.as_deref().unwrap().contains("attache-stripe"));
}

#[test]
fn failure_names_the_secret_and_keeps_the_certificate_of_the_last_good_config() {
    let ok = next_status(
        None,
        Outcome::Applied {
            client_certificate_not_after: Some(1_803_859_200),
        },
        &observed(T0),
    );
    let e = missing_secret();
    let failed = next_status(Some(&ok), Outcome::Failed(&e), &observed(T0 + 60));
    let ready = ready_condition(&failed).unwrap();
    assert_eq!(ready.status, "False");
    assert_eq!(ready.reason.as_deref(), Some("SecretNotFound"));
    let message = ready.message.as_deref().unwrap();
    assert!(
        message.contains("Secret \"stripe-key\" not found"),
        "{message}"
    );
    assert!(
        message.contains("spec.auth.apiKey.secretKeyRef"),
        "{message}"
    );
    assert!(message.contains("left as they were"), "{message}");
    assert_eq!(
        ready.last_transition_time.as_deref(),
        Some("2027-01-15T08:01:00Z")
    );
    assert_eq!(
        failed.client_certificate_not_after,
        ok.client_certificate_not_after
    );
}

#[test]
fn transition_time_moves_only_when_the_status_does() {
    let e = missing_secret();
    let first = next_status(None, Outcome::Failed(&e), &observed(T0));
    let key = Error::Render(RenderError::KeyNotFound {
        field: "spec.auth.apiKey.secretKeyRef".into(),
        kind: "Secret",
        name: "stripe-key".into(),
        key: "api-key".into(),
    });
    let second = next_status(Some(&first), Outcome::Failed(&key), &observed(T0 + 10));
    assert_eq!(
        ready_condition(&second).unwrap().last_transition_time,
        ready_condition(&first).unwrap().last_transition_time
    );
    assert_eq!(
        ready_condition(&second).unwrap().reason.as_deref(),
        Some("KeyNotFound")
    );
}

#[test]
fn unchanged_inputs_give_an_identical_status() {
    let applied = Outcome::Applied {
        client_certificate_not_after: None,
    };
    let a = next_status(None, applied, &observed(T0));
    let b = next_status(Some(&a), applied, &observed(T0 + 3600));
    assert_eq!(a, b, "a resync must not write the status again");
    assert_eq!(transition(Some(&a), &b), None);
}

#[test]
fn transitions_are_reported_once() {
    let e = missing_secret();
    let ok = Outcome::Applied {
        client_certificate_not_after: None,
    };
    let a = next_status(None, ok, &observed(T0));
    let first = transition(None, &a).unwrap();
    assert!(first.ready);
    assert_eq!(first.reason, "Reconciled");
    let b = next_status(Some(&a), Outcome::Failed(&e), &observed(T0));
    let t = transition(Some(&a), &b).unwrap();
    assert!(!t.ready);
    assert_eq!(t.reason, "SecretNotFound");
    assert!(t.message.contains("stripe-key"));
    let c = next_status(Some(&b), Outcome::Failed(&e), &observed(T0 + 5));
    assert_eq!(transition(Some(&b), &c), None);
}

#[test]
fn other_conditions_are_kept() {
    let mut prev = ExternalIntegrationStatus::default();
    prev.conditions.push(Condition {
        type_: "Degraded".into(),
        status: "False".into(),
        ..Default::default()
    });
    let s = next_status(
        Some(&prev),
        Outcome::Applied {
            client_certificate_not_after: None,
        },
        &observed(T0),
    );
    let types: Vec<_> = s.conditions.iter().map(|c| c.type_.as_str()).collect();
    assert_eq!(types, ["Ready", "Degraded"]);
}

#[test]
fn apply_patch_leaves_out_what_is_gone() {
    let s = next_status(
        None,
        Outcome::Applied {
            client_certificate_not_after: None,
        },
        &observed(T0),
    );
    let patch = apply_patch("payments", "stripe", &s);
    assert_eq!(patch["apiVersion"], "attache.dev/v1alpha1");
    assert_eq!(patch["kind"], "ExternalIntegration");
    assert_eq!(patch["metadata"]["name"], "stripe");
    assert_eq!(patch["metadata"]["namespace"], "payments");
    assert!(patch.get("spec").is_none(), "only the status is applied");
    // Left out, so that the API server removes what the operator applied before.
    assert!(!patch["status"]
        .as_object()
        .unwrap()
        .contains_key("clientCertificateNotAfter"));
    assert_eq!(patch["status"]["observedGeneration"], 3);
    assert_eq!(patch["status"]["pods"], 4);
    assert_eq!(patch["status"]["conditions"][0]["type"], "Ready");
}

#[test]
fn rfc3339_is_utc_seconds() {
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    assert_eq!(rfc3339(1_803_859_200), "2027-03-01T00:00:00Z");
    // Out of range values clamp instead of failing.
    assert!(rfc3339(i64::MAX).starts_with("9999-12-31T23:59:59"));
}
