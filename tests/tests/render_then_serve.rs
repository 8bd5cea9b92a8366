//! The operator's offline `render` and the sidecar's `--config-dir` agree by construction:
//! every example renders, the sidecar serves the rendered folders, and a rendered integration
//! carries credentials and idempotency keys to a real HTTPS upstream.

use std::{path::Path, process::Command};

use attache_tests::{bin_path, init_crypto, Action, Sidecar, TempDir, TestCa, Upstream};

fn examples_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

/// Stand-ins for every Secret and ConfigMap the examples reference.
fn write_example_secrets(dir: &Path, ca: &TestCa) {
    let client = ca.client_cert("treasury.example.com");
    let files: Vec<(&str, String)> = vec![
        ("stripe-key/api-key", "sk_test_render_then_serve".into()),
        ("twilio-creds/username", "AC0123".into()),
        ("twilio-creds/password", "twilio-token".into()),
        ("openai-key/api-key", "sk-openai-test".into()),
        ("anthropic-key/api-key", "sk-ant-test".into()),
        ("bank-oauth/client-secret", "bank-client-secret".into()),
        ("bank-ca/ca.crt", ca.cert_pem.clone()),
        ("bank-mtls/tls.crt", client.cert_pem.clone()),
        ("bank-mtls/tls.key", client.key_pem.clone()),
        ("demo-api-key/api-key", "sk_demo".into()),
        ("demo-ca/ca.crt", ca.cert_pem.clone()),
        ("demo-client-cert/tls.crt", client.cert_pem.clone()),
        ("demo-client-cert/tls.key", client.key_pem.clone()),
        (
            "demo-webhook/signing-secret",
            "whsec_render_then_serve".into(),
        ),
    ];
    for (rel, content) in files {
        attache_tests::write_file(dir, rel, content);
    }
}

fn render(inputs: &[&Path], secrets: &Path, out: &Path) {
    let mut cmd = Command::new(bin_path("attache-operator"));
    cmd.arg("render");
    for i in inputs {
        cmd.arg("-f").arg(i);
    }
    let output = cmd
        .arg("--secrets-dir")
        .arg(secrets)
        .arg("--out")
        .arg(out)
        .output()
        .expect("run attache-operator render");
    assert!(
        output.status.success(),
        "render failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn every_example_renders_and_the_sidecar_serves_it() {
    init_crypto();
    let ca = TestCa::new("render-then-serve CA");
    let tmp = TempDir::new("render-examples");
    let secrets = tmp.path().join("secrets");
    let out = tmp.path().join("out");
    write_example_secrets(&secrets, &ca);
    render(&[&examples_dir()], &secrets, &out);

    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "anthropic",
            "bank",
            "demo-payments",
            "openai",
            "stripe",
            "twilio"
        ]
    );

    let sidecar = Sidecar::start(
        vec!["--config-dir".into(), out.clone().into_os_string()],
        names.len(),
        // The demo example has webhooks: their listener on a free port, not :15100.
        &["--webhook-addr", "127.0.0.1:0"],
    )
    .await;
    // One listener line per integration, in name order from --first-port.
    for (i, name) in names.iter().enumerate() {
        let line = format!(
            "listening for integration {name} on http://{}",
            sidecar.addr(i)
        );
        assert!(
            sidecar.output().contains(&line),
            "{line:?} missing:\n{}",
            sidecar.output()
        );
    }
    // Rendered material never reaches logs.
    for secret in [
        "sk_test_render_then_serve",
        "twilio-token",
        "bank-client-secret",
        "whsec_render_then_serve",
    ] {
        assert!(!sidecar.output().contains(secret));
    }
}

#[tokio::test]
async fn a_rendered_integration_carries_credentials_to_a_real_upstream() {
    init_crypto();
    let ca = TestCa::new("render-then-serve CA");
    let upstream = Upstream::builder()
        .tls(ca.localhost_cert())
        .default_action(Action::echo())
        .start()
        .await;
    let tmp = TempDir::new("render-stripe");
    let secrets = tmp.path().join("secrets");
    write_example_secrets(&secrets, &ca);
    attache_tests::write_file(&secrets, "local-ca/ca.crt", &ca.cert_pem);
    // The Stripe example, pointed at the local upstream and told to trust its CA.
    let stripe = std::fs::read_to_string(examples_dir().join("stripe.yaml")).unwrap();
    let local = stripe.replace(
        "    url: https://api.stripe.com\n",
        &format!(
            "    url: {}\n  tls:\n    caBundleRef: {{kind: Secret, name: local-ca, key: ca.crt}}\n",
            upstream.url()
        ),
    );
    assert_ne!(
        local, stripe,
        "the example's URL line moved: update this test"
    );
    let manifest = tmp.path().join("stripe-local.yaml");
    std::fs::write(&manifest, local).unwrap();
    let out = tmp.path().join("out");
    render(&[&manifest], &secrets, &out);

    let sidecar = Sidecar::start(vec!["--config-dir".into(), out.into_os_string()], 1, &[]).await;
    let req = http::Request::post(format!("{}/v1/charges", sidecar.url(0)))
        .header("authorization", "Bearer app-must-not-leak")
        .body("amount=100")
        .unwrap();
    let resp = attache_tests::send(req).await.unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.header("x-attache-attempts"), Some("1"));
    let seen = upstream.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].header("authorization"),
        Some("Bearer sk_test_render_then_serve")
    );
    let key = seen[0].header("idempotency-key").expect("generated key");
    assert_eq!(key.len(), 36, "a UUID: {key}");
    assert_eq!(seen[0].path_and_query, "/v1/charges");
}
