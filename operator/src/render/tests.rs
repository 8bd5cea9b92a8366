use std::{fs, path::Path};

use attache_api::{
    config::{files, CONFIG_FILE},
    fs::DirSecretSource,
};

use super::{write::write_integration, *};
use crate::{
    manifests::{parse_documents, Inputs},
    validate::check_inputs,
};

fn report(text: &str) -> Report {
    let inputs = Inputs {
        documents: parse_documents("m.yaml", text).unwrap(),
        errors: vec![],
    };
    let report = check_inputs(&inputs);
    assert!(report.is_valid(), "{:?}", report.problems());
    report
}

fn integration(name: &str, ns: &str, spec: &str) -> String {
    format!(
        "apiVersion: attache.dev/v1alpha1\nkind: ExternalIntegration\n\
         metadata: {{name: {name}, namespace: {ns}}}\nspec:\n{spec}\n---\n"
    )
}

const STRIPE: &str = r#"
  upstream: {url: "https://api.stripe.com"}
  auth: {apiKey: {prefix: "Bearer ", secretKeyRef: {name: stripe-key, key: api-key}}}
  rateLimit: {requests: 100, burst: 20, scope: shared}"#;

fn secret(dir: &Path, name: &str, key: &str, value: &str) {
    fs::create_dir_all(dir.join(name)).unwrap();
    fs::write(dir.join(name).join(key), value).unwrap();
}

#[test]
fn renders_with_the_files_as_secrets() {
    let dir = tempfile::tempdir().unwrap();
    secret(dir.path(), "stripe-key", "api-key", "sk_test_123\n");
    let src = DirSecretSource::new(dir.path());
    let opts = RenderOptions { pods_sharing: 4 };
    let outputs = render_all(
        &report(&integration("stripe", "payments", STRIPE)),
        &src,
        opts,
    )
    .unwrap();
    assert_eq!(outputs.len(), 1);
    let o = &outputs[0];
    assert_eq!(o.name, "stripe");
    assert_eq!(o.subject, "m.yaml: ExternalIntegration payments/stripe");
    assert_eq!(
        o.rendered.files[files::AUTH_CREDENTIAL].expose(),
        b"sk_test_123"
    );
    let rl = o.rendered.config.rate_limit.as_ref().unwrap();
    assert_eq!((rl.pods, rl.burst), (4, 5));
}

#[test]
fn missing_secrets_and_keys_name_the_integration_and_the_expected_path() {
    let dir = tempfile::tempdir().unwrap();
    let src = DirSecretSource::new(dir.path());
    let text = integration("stripe", "payments", STRIPE)
        + &integration(
            "bank",
            "payments",
            r#"
  upstream: {url: "https://bank.example"}
  tls: {caBundleRef: {kind: ConfigMap, name: bank-ca}}"#,
        );
    let failures = render_all(&report(&text), &src, RenderOptions::default()).unwrap_err();
    let root = dir.path().display();
    assert_eq!(
        failures,
        [
            format!(
                "m.yaml (document 1): ExternalIntegration payments/stripe: \
                 spec.auth.apiKey.secretKeyRef: Secret \"stripe-key\" not found \
                 (expected a directory {root}/stripe-key)"
            ),
            format!(
                "m.yaml (document 2): ExternalIntegration payments/bank: spec.tls.caBundleRef: \
                 ConfigMap \"bank-ca\" not found (expected a directory {root}/bank-ca)"
            ),
        ]
    );
    fs::create_dir(dir.path().join("stripe-key")).unwrap();
    let failures = render_all(
        &report(&integration("stripe", "payments", STRIPE)),
        &src,
        RenderOptions::default(),
    )
    .unwrap_err();
    assert!(
        failures[0].ends_with(&format!(
            "Secret \"stripe-key\" has no key \"api-key\" (expected a file {root}/stripe-key/api-key)"
        )),
        "{failures:?}"
    );
}

#[test]
fn two_integrations_cannot_share_a_folder() {
    let dir = tempfile::tempdir().unwrap();
    let spec = r#"
  upstream: {url: "https://api.example.com"}"#;
    let text = integration("api", "a", spec) + &integration("api", "b", spec);
    let failures = render_all(
        &report(&text),
        &DirSecretSource::new(dir.path()),
        RenderOptions::default(),
    )
    .unwrap_err();
    assert_eq!(failures.len(), 1);
    assert!(
        failures[0].starts_with("\"api\" is the name of several integrations"),
        "{failures:?}"
    );
    assert!(failures[0]
        .contains("ExternalIntegration a/api; m.yaml (document 2): ExternalIntegration b/api"));
}

#[test]
fn writes_the_configmap_and_secret_files_and_drops_stale_ones() {
    let secrets = tempfile::tempdir().unwrap();
    secret(secrets.path(), "stripe-key", "api-key", "sk_test_123");
    let out = tempfile::tempdir().unwrap();
    let stale = out.path().join("stripe").join(files::CLIENT_KEY);
    let foreign = out.path().join("stripe").join("notes.txt");
    fs::create_dir_all(stale.parent().unwrap()).unwrap();
    fs::write(&stale, "old key").unwrap();
    fs::write(&foreign, "mine").unwrap();

    let src = DirSecretSource::new(secrets.path());
    let outputs = render_all(
        &report(&integration("stripe", "payments", STRIPE)),
        &src,
        RenderOptions::default(),
    )
    .unwrap();
    let written = write_integration(out.path(), &outputs[0]).unwrap();
    assert_eq!(written, [files::AUTH_CREDENTIAL, CONFIG_FILE]);

    let dir = out.path().join("stripe");
    let config = fs::read_to_string(dir.join(CONFIG_FILE)).unwrap();
    assert_eq!(config, outputs[0].rendered.config_map_data()[CONFIG_FILE]);
    assert_eq!(
        fs::read(dir.join(files::AUTH_CREDENTIAL)).unwrap(),
        b"sk_test_123"
    );
    assert!(!stale.exists(), "stale secret file left behind");
    assert!(foreign.exists(), "a file render did not write was removed");
    let leftovers: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.join(files::AUTH_CREDENTIAL)), 0o600);
        assert_eq!(mode(&dir.join(CONFIG_FILE)) & 0o600, 0o600);
    }
}
