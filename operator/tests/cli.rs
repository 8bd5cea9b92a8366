//! The offline subcommands end to end: the real binary, real files in temporary directories.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use attache_api::{
    config::{files, AuthConfig, SidecarConfig, CONFIG_FILE},
    fs::DirSecretSource,
    manifest::parse_integrations,
    render, RenderOptions,
};
use attache_tests::TestCa;

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn operator<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Run {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(env!("CARGO_BIN_EXE_attache-operator"))
        .args(args)
        .output()
        .expect("run attache-operator");
    Run {
        code: status.code(),
        stdout: String::from_utf8(stdout).unwrap(),
        stderr: String::from_utf8(stderr).unwrap(),
    }
}

/// `attache-operator validate -f FILE...`
fn validate(files: &[&Path]) -> Run {
    let mut args = vec![Path::new("validate"), Path::new("-f")];
    args.extend_from_slice(files);
    operator(&args)
}

/// `attache-operator render -f MANIFEST --secrets-dir SECRETS --out OUT EXTRA...`
fn render_cmd(manifest: &Path, secrets: &Path, out: &Path, extra: &[&str]) -> Run {
    let mut args = vec![
        Path::new("render"),
        Path::new("-f"),
        manifest,
        Path::new("--secrets-dir"),
        secrets,
        Path::new("--out"),
        out,
    ];
    args.extend(extra.iter().map(Path::new));
    operator(&args)
}

fn write(dir: &Path, rel: &str, text: &str) -> PathBuf {
    attache_tests::write_file(dir, rel, text)
}

const STRIPE: &str = r#"
apiVersion: attache.dev/v1alpha1
kind: ExternalIntegration
metadata: {name: stripe, namespace: payments}
spec:
  upstream: {url: "https://api.stripe.com"}
  auth: {apiKey: {prefix: "Bearer ", secretKeyRef: {name: stripe-key, key: api-key}}}
  retry: {idempotencyKey: {generate: true}}
  rateLimit: {requests: 100, per: 1s, burst: 20, scope: shared}
"#;

const BANK: &str = r#"
apiVersion: attache.dev/v1alpha1
kind: ExternalIntegration
metadata: {name: bank, namespace: payments}
spec:
  upstream: {url: "https://api.bank.example"}
  tls:
    caBundleRef: {kind: ConfigMap, name: bank-ca}
    clientCertificate: {secretName: bank-mtls}
    minVersion: "1.3"
"#;

const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: checkout}
spec: {template: {metadata: {annotations: {attache.dev/inject: "true"}}}}
"#;

#[test]
fn validate_prints_one_ok_line_per_integration() {
    let dir = tempfile::tempdir().unwrap();
    let all = write(
        dir.path(),
        "all.yaml",
        &format!("{STRIPE}---{DEPLOYMENT}---{BANK}"),
    );
    let run = validate(&[&all]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let all = all.display();
    assert_eq!(
        run.stdout,
        format!(
            "{all} (document 1): ExternalIntegration payments/stripe: OK\n\
             {all} (document 3): ExternalIntegration payments/bank: OK\n"
        )
    );
    assert_eq!(run.stderr, "");
}

#[test]
fn validate_names_file_resource_and_field_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let good = write(dir.path(), "good.yaml", STRIPE);
    let bad = write(
        dir.path(),
        "bad.yaml",
        r#"
apiVersion: attache.dev/v1alpha1
kind: ExternalIntegration
metadata: {name: twilio, namespace: messaging}
spec:
  upstream: {url: "http://api.twilio.com"}
  auth:
    basic: {secretRef: {name: twilio}}
    bearer: {secretKeyRef: {name: twilio, key: token}}
"#,
    );
    let run = validate(&[&good, &bad]);
    assert_eq!(run.code, Some(1));
    assert_eq!(
        run.stdout,
        format!(
            "{}: ExternalIntegration payments/stripe: OK\n",
            good.display()
        )
    );
    let lines: Vec<_> = run.stderr.lines().collect();
    let prefix = format!("{}: ExternalIntegration messaging/twilio: ", bad.display());
    assert_eq!(lines.len(), 2, "{}", run.stderr);
    assert!(
        lines[0].starts_with(&format!("{prefix}spec.upstream.url: ")),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].starts_with(&format!("{prefix}spec.auth: set at most one of")),
        "{}",
        lines[1]
    );
}

#[test]
fn validate_reports_schema_errors_like_the_api_server() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "typo.yaml",
        &STRIPE.replace("rateLimit: {requests: 100", "rateLimit: {request: 100"),
    );
    let run = validate(&[&file]);
    assert_eq!(run.code, Some(1));
    let prefix = format!("{}: ExternalIntegration payments/stripe: ", file.display());
    assert_eq!(
        run.stderr.lines().collect::<Vec<_>>(),
        [
            format!("{prefix}spec.rateLimit.request: unknown field (known fields: burst, maxQueueWait, onLimit, per, quota, requests, scope)"),
            format!("{prefix}spec.rateLimit.requests: required field is missing"),
        ]
    );
}

#[test]
fn validate_reports_unreadable_and_malformed_files_and_checks_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let broken = write(dir.path(), "broken.yaml", "spec: [unclosed\n");
    let missing = dir.path().join("missing.yaml");
    let good = write(dir.path(), "manifests/stripe.yaml", STRIPE);
    let run = validate(&[&missing, &broken, good.parent().unwrap()]);
    assert_eq!(run.code, Some(1));
    assert!(run
        .stdout
        .ends_with("stripe.yaml: ExternalIntegration payments/stripe: OK\n"));
    let lines: Vec<_> = run.stderr.lines().collect();
    assert!(
        lines[0].starts_with(&format!("{}: cannot read: ", missing.display())),
        "{lines:?}"
    );
    assert!(
        lines[1].starts_with(&format!("{}: not valid YAML", broken.display())),
        "{lines:?}"
    );
}

#[test]
fn render_writes_exactly_the_configmap_and_secret_files() {
    let ca = TestCa::new("bank root");
    let client = ca.client_cert("checkout");
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets");
    write(&secrets, "stripe-key/api-key", "sk_test_42\n");
    write(&secrets, "bank-ca/ca.crt", &ca.cert_pem);
    write(&secrets, "bank-mtls/tls.crt", &client.cert_pem);
    write(&secrets, "bank-mtls/tls.key", &client.key_pem);
    let manifest = write(
        dir.path(),
        "m.yaml",
        &format!("{STRIPE}---{DEPLOYMENT}---{BANK}"),
    );
    let out = dir.path().join("out");

    let run = render_cmd(&manifest, &secrets, &out, &[]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.stdout.lines().count(), 2, "{}", run.stdout);
    assert!(run.stdout.contains(&format!(
        "ExternalIntegration payments/stripe: wrote {} (auth-credential, config.json)",
        out.join("stripe").display()
    )));

    // Exactly what the api crate's renderer, which the controller uses, says.
    let text = fs::read_to_string(&manifest).unwrap();
    let source = DirSecretSource::new(&secrets);
    for xint in parse_integrations("m.yaml", &text).unwrap() {
        let name = xint.metadata.name.clone().unwrap();
        let expected = render(&xint, &source, RenderOptions::default()).unwrap();
        let mut want: Vec<(String, Vec<u8>)> = expected
            .files
            .iter()
            .map(|(k, v)| (k.clone(), v.expose().to_vec()))
            .chain(
                expected
                    .config_map_data()
                    .into_iter()
                    .map(|(k, v)| (k, v.into_bytes())),
            )
            .collect();
        want.sort();
        assert_eq!(dir_contents(&out.join(&name)), want, "{name}");
    }

    let stripe = out.join("stripe");
    let config: SidecarConfig =
        serde_json::from_str(&fs::read_to_string(stripe.join(CONFIG_FILE)).unwrap()).unwrap();
    assert_eq!(config.name, "stripe");
    assert!(matches!(config.auth, AuthConfig::ApiKey { ref prefix, .. } if prefix == "Bearer "));
    assert_eq!(
        fs::read(stripe.join(files::AUTH_CREDENTIAL)).unwrap(),
        b"sk_test_42"
    );
    let bank = out.join("bank");
    assert_eq!(
        fs::read_to_string(bank.join(files::CA_BUNDLE)).unwrap(),
        ca.cert_pem
    );
    assert_eq!(
        fs::read_to_string(bank.join(files::CLIENT_KEY)).unwrap(),
        client.key_pem
    );

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for f in [
            stripe.join(files::AUTH_CREDENTIAL),
            bank.join(files::CA_BUNDLE),
            bank.join(files::CLIENT_CERT),
            bank.join(files::CLIENT_KEY),
        ] {
            let mode = fs::metadata(&f).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", f.display());
        }
    }

    // Rendering again changes nothing.
    let before = dir_contents(&stripe);
    let again = render_cmd(&manifest, &secrets, &out, &[]);
    assert_eq!(again.code, Some(0), "{}", again.stderr);
    assert_eq!(dir_contents(&stripe), before);
}

#[test]
fn render_divides_a_shared_rate_limit_among_pods() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets");
    write(&secrets, "stripe-key/api-key", "sk_test_42");
    let manifest = write(dir.path(), "stripe.yaml", STRIPE);
    let out = dir.path().join("out");
    let run = render_cmd(&manifest, &secrets, &out, &["--pods", "4"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let config: SidecarConfig =
        serde_json::from_str(&fs::read_to_string(out.join("stripe").join(CONFIG_FILE)).unwrap())
            .unwrap();
    let rl = config.rate_limit.unwrap();
    assert_eq!((rl.pods, rl.burst), (4, 5));
}

#[test]
fn render_names_the_integration_and_the_missing_secret_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets");
    write(&secrets, "stripe-key/api-key", "sk_test_42");
    write(&secrets, "bank-mtls/tls.crt", "not a certificate");
    let manifest = write(dir.path(), "m.yaml", &format!("{STRIPE}---{BANK}"));
    let out = dir.path().join("out");
    let run = render_cmd(&manifest, &secrets, &out, &[]);
    assert_eq!(run.code, Some(1));
    // Every problem of the run, one line each.
    assert_eq!(
        run.stderr,
        format!(
            "{m} (document 2): ExternalIntegration payments/bank: spec.tls.caBundleRef: \
             ConfigMap \"bank-ca\" not found (expected a directory {})\n\
             {m} (document 2): ExternalIntegration payments/bank: spec.tls.clientCertificate: \
             Secret \"bank-mtls\" has no key \"tls.key\" (expected a file {})\n\
             nothing written\n",
            secrets.join("bank-ca").display(),
            secrets.join("bank-mtls").join("tls.key").display(),
            m = manifest.display(),
        )
    );
    assert!(!out.exists(), "render wrote output despite a failure");

    write(&secrets, "bank-ca/ca.crt", &TestCa::new("x").cert_pem);
    let run = render_cmd(&manifest, &secrets, &out, &[]);
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr.starts_with(&format!(
            "{} (document 2): ExternalIntegration payments/bank: spec.tls.clientCertificate: \
             Secret \"bank-mtls\" has no key \"tls.key\" (expected a file {})",
            manifest.display(),
            secrets.join("bank-mtls").join("tls.key").display()
        )),
        "{}",
        run.stderr
    );
}

#[test]
fn render_refuses_a_client_pair_the_sidecar_could_not_use_naming_the_secret() {
    let ca = TestCa::new("bank root");
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets");
    write(&secrets, "bank-ca/ca.crt", &ca.cert_pem);
    let manifest = write(dir.path(), "m.yaml", BANK);
    let out = dir.path().join("out");
    let good = ca.client_cert("checkout");
    let other = ca.client_cert("checkout");
    let expired = ca.client_cert_valid_until(
        "checkout",
        std::time::SystemTime::now() - std::time::Duration::from_secs(3600),
    );
    for (cert, key, expected) in [
        (
            &good.cert_pem,
            &other.key_pem,
            "key \"tls.key\" is not usable: the private key does not belong to the certificate \
             in tls.crt",
        ),
        (
            &expired.cert_pem,
            &expired.key_pem,
            "key \"tls.crt\" is not usable: the certificate expired at ",
        ),
    ] {
        write(&secrets, "bank-mtls/tls.crt", cert);
        write(&secrets, "bank-mtls/tls.key", key);
        let run = render_cmd(&manifest, &secrets, &out, &[]);
        assert_eq!(run.code, Some(1), "{}{}", run.stdout, run.stderr);
        assert!(
            run.stderr.starts_with(&format!(
                "{}: ExternalIntegration payments/bank: spec.tls.clientCertificate: \
                 Secret \"bank-mtls\" {expected}",
                manifest.display()
            )),
            "{}",
            run.stderr
        );
        assert!(!out.exists(), "render wrote output despite a failure");
    }
    write(&secrets, "bank-mtls/tls.crt", &good.cert_pem);
    write(&secrets, "bank-mtls/tls.key", &good.key_pem);
    let run = render_cmd(&manifest, &secrets, &out, &[]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
}

#[test]
fn render_refuses_invalid_manifests() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = write(dir.path(), "m.yaml", &STRIPE.replace("https://", "http://"));
    let out = dir.path().join("out");
    let run = render_cmd(&manifest, dir.path(), &out, &[]);
    assert_eq!(run.code, Some(1));
    assert!(run
        .stderr
        .contains("ExternalIntegration payments/stripe: spec.upstream.url: "));
    assert!(!out.exists());
}

/// One run names every problem of every input, each once: an unreadable file, a manifest's
/// schema and semantic problems, and the missing Secrets of the valid integrations beside it.
#[test]
fn render_names_every_problem_of_the_run_at_once_each_once() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets");
    fs::create_dir_all(&secrets).unwrap();
    let bad = write(
        dir.path(),
        "bad.yaml",
        "apiVersion: attache.dev/v1alpha1\nkind: ExternalIntegration\n\
         metadata: {name: bad, namespace: payments}\n\
         spec:\n  upstream: {url: \"http://plain.example\"}\n  retry: {maxAtempts: 3}\n",
    );
    let good = write(dir.path(), "m.yaml", &format!("{STRIPE}---{BANK}"));
    let missing = dir.path().join("missing.yaml");
    let out = dir.path().join("out");
    let run = operator(&[
        Path::new("render"),
        Path::new("-f"),
        &bad,
        &good,
        &missing,
        Path::new("--secrets-dir"),
        &secrets,
        Path::new("--out"),
        &out,
    ]);
    assert_eq!(run.code, Some(1));
    let lines: Vec<&str> = run.stderr.lines().collect();
    for needle in [
        "missing.yaml: cannot read",
        "ExternalIntegration payments/bad: spec.retry.maxAtempts: unknown field",
        "ExternalIntegration payments/bad: spec.upstream.url: plain http://",
        "ExternalIntegration payments/stripe: spec.auth.apiKey.secretKeyRef: Secret \"stripe-key\" not found",
        "ExternalIntegration payments/bank: spec.tls.caBundleRef: ConfigMap \"bank-ca\" not found",
        "ExternalIntegration payments/bank: spec.tls.clientCertificate: Secret \"bank-mtls\" not found",
    ] {
        let n = lines.iter().filter(|l| l.contains(needle)).count();
        assert_eq!(n, 1, "{needle:?} said {n} times:\n{}", run.stderr);
    }
    assert_eq!(lines.len(), 7, "{}", run.stderr);
    assert_eq!(lines.last(), Some(&"nothing written"));
    assert!(!out.exists());
}

/// The README's mTLS example with a secrets folder that has the objects but not their keys:
/// every missing file in one run.
#[test]
fn render_of_the_bank_example_names_every_missing_file_in_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets");
    for object in ["bank-oauth", "bank-ca", "bank-mtls"] {
        fs::create_dir_all(secrets.join(object)).unwrap();
    }
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/bank-mtls.yaml");
    let out = dir.path().join("out");
    let run = render_cmd(&example, &secrets, &out, &[]);
    assert_eq!(run.code, Some(1));
    for file in [
        "bank-oauth/client-secret",
        "bank-ca/ca.crt",
        "bank-mtls/tls.crt",
        "bank-mtls/tls.key",
    ] {
        let expected = format!("(expected a file {})", secrets.join(file).display());
        assert_eq!(
            run.stderr.matches(&expected).count(),
            1,
            "{file}:\n{}",
            run.stderr
        );
    }
    assert_eq!(run.stderr.lines().count(), 5, "{}", run.stderr);
    assert!(!out.exists());
}

/// A document's schema problems (an unknown field) and its semantic ones (CEL rules) are
/// named in the same run, each once.
#[test]
fn validate_names_schema_and_semantic_problems_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let bad = write(
        dir.path(),
        "bad.yaml",
        "apiVersion: attache.dev/v1alpha1\nkind: ExternalIntegration\nmetadata: {name: bad}\n\
         spec:\n  upstream: {url: \"http://plain.example\"}\n\
         \x20 retry: {maxAtempts: 3, retryOn: [teapot], maxAttempts: 11}\n",
    );
    let run = validate(&[&bad]);
    assert_eq!(run.code, Some(1));
    let lines: Vec<&str> = run.stderr.lines().collect();
    for field in [
        "spec.retry.maxAtempts: unknown field",
        "spec.upstream.url: plain http://",
        "spec.retry.retryOn[0]: unknown value \"teapot\"",
        "spec.retry.maxAttempts: ",
    ] {
        let n = lines.iter().filter(|l| l.contains(field)).count();
        assert_eq!(n, 1, "{field:?} said {n} times:\n{}", run.stderr);
    }
    assert_eq!(lines.len(), 4, "{}", run.stderr);
}

#[test]
fn run_without_a_cluster_fails_and_says_how_it_looked_for_one() {
    let out = Command::new(env!("CARGO_BIN_EXE_attache-operator"))
        .args(["run", "--metrics-addr", "127.0.0.1:0"])
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .expect("run attache-operator");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot reach the Kubernetes API"),
        "{stderr}"
    );
}

#[test]
fn usage_errors_exit_2_with_help() {
    let run = operator(&["render", "-f", "x.yaml"]);
    assert_eq!(run.code, Some(2));
    assert!(run.stderr.contains("--secrets-dir"), "{}", run.stderr);
    let help = operator(&["--help"]);
    assert_eq!(help.code, Some(0));
    for cmd in ["run", "crd", "validate", "render"] {
        assert!(help.stdout.contains(cmd), "{}", help.stdout);
    }
}

/// Every file of `dir` (not hidden), sorted: (name, contents).
fn dir_contents(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| {
            (
                e.file_name().into_string().unwrap(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}
