//! The serving certificate: renewal swaps what the running server presents, without a restart,
//! in both modes. The self-managed mode talks to a scripted API server (tower-test) that
//! checks each call the operator makes; cert-manager mode reads a directory.

use std::{
    path::Path,
    sync::Arc,
    time::{Duration, SystemTime},
};

use attache_operator::admission::{
    certs::{
        dir, renewal, self_managed::SelfManaged, CertError, CertPolicy, CertResolver, DueReason,
        Renewal, TlsMaterial,
    },
    InjectorSettings, StaticView,
};
use base64::Engine as _;
use http::{Request, Response};
use k8s_openapi::api::core::v1::Secret;
use kube::{client::Body, Client};
use serde_json::{json, Value};
use tower_test::mock;

mod admission_support;
use admission_support::*;

const DAY: Duration = Duration::from_secs(24 * 3600);

fn policy() -> CertPolicy {
    CertPolicy {
        ca_validity: 3650 * DAY,
        cert_validity: 30 * DAY,
        renew_after: (2, 3),
    }
}

fn view() -> Arc<StaticView> {
    Arc::new(StaticView::default().with_integrations("shop", ["stripe"]))
}

#[tokio::test]
async fn a_renewed_certificate_is_presented_without_a_restart() {
    // Issued 25 days ago with 30 days of life: past 2/3, due.
    let now = SystemTime::now();
    let old = material_at(now - 25 * DAY, &policy());
    assert_eq!(
        renewal(&old, &dns_names(), now, &policy()),
        Renewal::Due(DueReason::Expiring)
    );
    let certs = serving(&old);
    let server = start(view(), certs.clone(), InjectorSettings::default()).await;
    let (mut kept, presented) = connect_h1(server.addr, &old.ca_bundle).await;
    assert_eq!(presented, leaf_der(&old.cert));

    let new = attache_operator::admission::certs::issue(Some(&old), &dns_names(), now, &policy())
        .unwrap();
    assert_eq!(
        new.ca_bundle, old.ca_bundle,
        "same CA: the caBundle stays valid"
    );
    assert!(certs
        .set_pem(new.cert.as_bytes(), new.key.as_bytes())
        .unwrap());

    // New connections get the new certificate, verified against the unchanged bundle...
    let (_, presented) = connect_h1(server.addr, &old.ca_bundle).await;
    assert_eq!(presented, leaf_der(&new.cert));
    // ... and the connection opened before the renewal still works.
    let (status, _) = send(&mut kept, get("/healthz")).await;
    assert_eq!(status, 200);
}

type Handle = mock::Handle<Request<Body>, Response<Body>>;

/// The next call the operator makes; it must be `method path`.
async fn expect(
    handle: &mut Handle,
    method: &str,
    path: &str,
) -> (Request<Value>, mock::SendResponse<Response<Body>>) {
    let (req, send) = tokio::time::timeout(Duration::from_secs(5), handle.next_request())
        .await
        .unwrap_or_else(|_| panic!("the operator never called {method} {path}"))
        .expect("the client went away");
    assert_eq!(
        (req.method().as_str(), req.uri().path()),
        (method, path),
        "unexpected call"
    );
    let (parts, body) = req.into_parts();
    let bytes = body.collect_bytes().await.unwrap();
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (Request::from_parts(parts, value), send)
}

fn reply(send: mock::SendResponse<Response<Body>>, status: u16, body: &Value) {
    send.send_response(
        Response::builder()
            .status(status)
            .body(Body::from(serde_json::to_vec(body).unwrap()))
            .unwrap(),
    );
}

fn not_found(what: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": format!("{what} not found"), "reason": "NotFound", "code": 404})
}

const SECRET_PATH: &str = "/api/v1/namespaces/attache-system/secrets/attache-webhook-tls";
const SECRETS_PATH: &str = "/api/v1/namespaces/attache-system/secrets";
const CONFIG_PATH: &str =
    "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/attache";

fn self_managed() -> SelfManaged {
    SelfManaged {
        namespace: "attache-system".into(),
        secret_name: "attache-webhook-tls".into(),
        service_name: "attache".into(),
        webhook_configuration: "attache".into(),
        policy: policy(),
    }
}

fn webhook_configuration(ca_bundle: Option<&str>) -> Value {
    let mut client_config = json!({"service": {"name": "attache", "namespace": "attache-system", "path": "/mutate", "port": 443}});
    if let Some(b) = ca_bundle {
        client_config["caBundle"] = json!(base64::engine::general_purpose::STANDARD.encode(b));
    }
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "attache", "resourceVersion": "7"},
        "webhooks": [{
            "name": "inject.attache.dev",
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "clientConfig": client_config,
        }]
    })
}

fn secret_json(material: &TlsMaterial, resource_version: &str) -> Value {
    let secret = Secret {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some("attache-webhook-tls".into()),
            namespace: Some("attache-system".into()),
            resource_version: Some(resource_version.into()),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(material.to_secret_data()),
        ..Default::default()
    };
    serde_json::to_value(secret).unwrap()
}

fn material_of(secret: &Value) -> TlsMaterial {
    let secret: Secret = serde_json::from_value(secret.clone()).unwrap();
    TlsMaterial::from_secret_data(&secret.data.unwrap()).unwrap()
}

#[tokio::test]
async fn first_start_creates_the_secret_and_trusts_its_ca_then_settles() {
    let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let certs = CertResolver::default();
    let sm = self_managed();
    let now = SystemTime::now();

    let api = async {
        let (_, send) = expect(&mut handle, "GET", SECRET_PATH).await;
        reply(send, 404, &not_found("secrets \"attache-webhook-tls\""));
        let (_, send) = expect(&mut handle, "GET", CONFIG_PATH).await;
        reply(send, 200, &webhook_configuration(None));
        // Trust first: the caBundle is written before the Secret.
        let (req, send) = expect(&mut handle, "PATCH", CONFIG_PATH).await;
        assert_eq!(
            req.headers()["content-type"],
            "application/strategic-merge-patch+json"
        );
        assert_eq!(req.body()["webhooks"][0]["name"], "inject.attache.dev");
        let pem = String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(
                    req.body()["webhooks"][0]["clientConfig"]["caBundle"]
                        .as_str()
                        .unwrap(),
                )
                .unwrap(),
        )
        .unwrap();
        reply(send, 200, &webhook_configuration(Some(&pem)));
        let (req, send) = expect(&mut handle, "POST", SECRETS_PATH).await;
        let created = req.body().clone();
        assert_eq!(created["type"], "kubernetes.io/tls");
        assert_eq!(
            created["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "attache-operator"
        );
        let material = material_of(&created);
        assert_eq!(
            material.ca_bundle, pem,
            "the Secret's CA is the one trusted"
        );
        let mut stored = created.clone();
        stored["metadata"]["resourceVersion"] = json!("1");
        reply(send, 201, &stored);

        // Second pass: everything in place, nothing written.
        let (_, send) = expect(&mut handle, "GET", SECRET_PATH).await;
        reply(send, 200, &stored);
        let (_, send) = expect(&mut handle, "GET", CONFIG_PATH).await;
        reply(send, 200, &webhook_configuration(Some(&pem)));
        material
    };
    let operator = async {
        let first = sm.reconcile(&client, &certs, now).await.unwrap();
        let second = sm.reconcile(&client, &certs, now).await.unwrap();
        (first, second)
    };
    let (material, (first, second)) = tokio::join!(api, operator);
    assert_eq!(first.issued, Some(DueReason::Missing));
    assert!(first.ca_bundle_patched && first.served_changed);
    assert_eq!(second.issued, None);
    assert!(!second.ca_bundle_patched && !second.served_changed);
    assert_eq!(
        certs.current().unwrap().cert[0].as_ref(),
        leaf_der(&material.cert).as_slice()
    );
    // Renewal is scheduled at 2/3 of the 30 days.
    let in_days = second.renew_at.duration_since(now).unwrap().as_secs_f64() / DAY.as_secs_f64();
    assert!((19.9..20.1).contains(&in_days), "{in_days}");
}

#[tokio::test]
async fn a_secret_near_expiry_is_renewed_and_the_running_server_presents_the_new_certificate() {
    let now = SystemTime::now();
    let old = material_at(now - 25 * DAY, &policy());
    let certs = serving(&old);
    let server = start(view(), certs.clone(), InjectorSettings::default()).await;
    let (_, presented) = connect_h1(server.addr, &old.ca_bundle).await;
    assert_eq!(presented, leaf_der(&old.cert));

    let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let sm = self_managed();
    let old_secret = secret_json(&old, "41");
    let api = async {
        let (_, send) = expect(&mut handle, "GET", SECRET_PATH).await;
        reply(send, 200, &old_secret);
        // The CA is kept, so the configuration already trusts it: no PATCH.
        let (_, send) = expect(&mut handle, "GET", CONFIG_PATH).await;
        reply(send, 200, &webhook_configuration(Some(&old.ca_bundle)));
        let (req, send) = expect(&mut handle, "PUT", SECRET_PATH).await;
        // Guarded by the resourceVersion read: a concurrent replica's write wins, not ours.
        assert_eq!(req.body()["metadata"]["resourceVersion"], "41");
        let renewed = material_of(req.body());
        reply(send, 200, req.body());
        renewed
    };
    let (renewed, outcome) = tokio::join!(api, sm.reconcile(&client, &certs, now));
    let outcome = outcome.unwrap();
    assert_eq!(outcome.issued, Some(DueReason::Expiring));
    assert!(!outcome.ca_bundle_patched);
    assert_eq!(renewed.ca_bundle, old.ca_bundle);
    assert_ne!(renewed.cert, old.cert);

    // Same process, same listener: the next handshake presents the renewed certificate.
    let (_, presented) = connect_h1(server.addr, &old.ca_bundle).await;
    assert_eq!(presented, leaf_der(&renewed.cert));
}

#[tokio::test]
async fn losing_the_race_to_another_replica_is_a_conflict_not_a_failure() {
    let now = SystemTime::now();
    let old = material_at(now - 25 * DAY, &policy());
    let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let certs = CertResolver::default();
    let api = async {
        let (_, send) = expect(&mut handle, "GET", SECRET_PATH).await;
        reply(send, 200, &secret_json(&old, "41"));
        let (_, send) = expect(&mut handle, "GET", CONFIG_PATH).await;
        reply(send, 200, &webhook_configuration(Some(&old.ca_bundle)));
        let (_, send) = expect(&mut handle, "PUT", SECRET_PATH).await;
        reply(
            send,
            409,
            &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict",
                    "code": 409, "message": "the object has been modified"}),
        );
    };
    let sm = self_managed();
    let (_, outcome) = tokio::join!(api, sm.reconcile(&client, &certs, now));
    assert!(
        matches!(outcome, Err(CertError::Conflict(_))),
        "{outcome:?}"
    );
    assert!(!certs.has_certificate(), "nothing unpublished is served");
}

fn write_pair(dir: &Path, m: &TlsMaterial) {
    // Like the kubelet: write aside, then rename into place.
    for (name, content) in [("tls.crt", &m.cert), ("tls.key", &m.key)] {
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, content).unwrap();
        std::fs::rename(&tmp, dir.join(name)).unwrap();
    }
}

#[tokio::test]
async fn cert_manager_mode_reloads_the_mounted_certificate_when_it_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let first = material_at(now, &policy());
    write_pair(tmp.path(), &first);
    let certs = Arc::new(CertResolver::default());
    assert!(dir::load(tmp.path(), &certs).unwrap());
    tokio::spawn(dir::watch(
        tmp.path().to_path_buf(),
        certs.clone(),
        Duration::from_millis(20),
    ));
    let server = start(view(), certs.clone(), InjectorSettings::default()).await;
    let (_, presented) = connect_h1(server.addr, &first.ca_bundle).await;
    assert_eq!(presented, leaf_der(&first.cert));

    // cert-manager renews: same issuer, new certificate.
    let second =
        attache_operator::admission::certs::issue(Some(&first), &dns_names(), now, &policy())
            .unwrap();
    write_pair(tmp.path(), &second);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (_, presented) = connect_h1(server.addr, &first.ca_bundle).await;
        if presented == leaf_der(&second.cert) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not reloaded within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A broken pair (key from elsewhere) is refused; the good certificate stays.
    std::fs::write(tmp.path().join("tls.key"), material_at(now, &policy()).key).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (_, presented) = connect_h1(server.addr, &first.ca_bundle).await;
    assert_eq!(presented, leaf_der(&second.cert));
}
