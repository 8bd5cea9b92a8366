//! Local mode with `--manifest DIR`: every `*.yaml` and `*.yml` file of the directory is
//! served (other and hidden files are not read), and the sidecar prints the environment the
//! app would get in a pod (`ATTACHE_<NAME>_URL`, `ATTACHE_PROXY_URL`).

use std::time::Duration;

use attache_tests::sidecar::{manifest_text, Sidecar};
use attache_tests::{ca_bundle_ref, xint, LocalSetup, TestCa, Upstream};
use serde_json::json;

#[tokio::test]
async fn a_manifest_directory_serves_its_yaml_files_and_prints_the_apps_urls() {
    let ca = TestCa::new("manifest dir ca");
    let up = Upstream::echo(&ca).await;
    let setup = LocalSetup::trusting(&ca);
    let dir = setup.dir().join("manifests");
    std::fs::create_dir_all(&dir).unwrap();
    let spec = |base: &str| {
        json!({
            "upstream": {"url": format!("{}{base}", up.url())},
            "tls": {"caBundleRef": ca_bundle_ref()},
        })
    };
    std::fs::write(
        dir.join("payments.yaml"),
        manifest_text(&[xint("pay-ments", spec("/a"))]),
    )
    .unwrap();
    std::fs::write(
        dir.join("sms.yml"),
        manifest_text(&[xint("sms", spec("/b"))]),
    )
    .unwrap();
    // Neither is a manifest to serve: reading them would fail the start.
    std::fs::write(dir.join("README.txt"), "not: [yaml").unwrap();
    std::fs::write(dir.join(".draft.yaml"), "not: [yaml").unwrap();

    let sidecar = Sidecar::start(
        vec![
            "--manifest".into(),
            dir.clone().into(),
            "--secrets-dir".into(),
            setup.secrets_dir().into(),
        ],
        2,
        &[],
    )
    .await;
    let resp = sidecar.get(0, "/x").await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json()["path_and_query"], "/a/x");
    let resp = sidecar.get(1, "/x").await;
    assert_eq!(resp.json()["path_and_query"], "/b/x");

    for line in [
        format!("ATTACHE_PAY_MENTS_URL=http://{}", sidecar.addr(0)),
        format!("ATTACHE_SMS_URL=http://{}", sidecar.addr(1)),
        format!("ATTACHE_PROXY_URL=http://{}", sidecar.proxy_addr),
    ] {
        if let Err(e) = sidecar.wait_for_output(&line, Duration::from_secs(5)).await {
            panic!("{e:#}");
        }
    }
}
