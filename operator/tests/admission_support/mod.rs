//! Shared by the admission tests: AdmissionReview fixtures, a running webhook, a TLS client.
#![allow(dead_code)]

use std::{net::SocketAddr, sync::Arc, time::SystemTime};

use attache_operator::admission::{
    certs::{issue, service_dns_names, CertPolicy, CertResolver, TlsMaterial},
    serve_on_own_thread, AdmissionMetrics, ClusterView, InjectorSettings, WebhookServer,
};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::{pki_types::ServerName, ClientConfig, RootCertStore};
use rustls_pki_types::{pem::PemObject, CertificateDer};
use serde_json::{json, Value};
use tokio::{sync::oneshot, task::JoinHandle};
use tokio_rustls::TlsConnector;

/// The name the API server dials: `SERVICE.NAMESPACE.svc`.
pub const SERVER_NAME: &str = "attache.attache-system.svc";

/// A pod a ReplicaSet controller creates for a Deployment: `generateName` and no `name`, no
/// namespace in the object (it is in the request), two app containers, an init container,
/// existing env, volumes and labels.
pub fn deployment_pod() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "checkout-7d9f8b6c5-",
            "labels": {"app": "checkout", "pod-template-hash": "7d9f8b6c5"},
            "annotations": {"attache.dev/inject": "true", "kubectl.kubernetes.io/restartedAt": "2026-11-01T10:00:00Z"},
            "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "checkout-7d9f8b6c5",
                "uid": "0b7e0c3e-5b8d-4a4f-9a61-3f0c9a1e2d11", "controller": true, "blockOwnerDeletion": true
            }]
        },
        "spec": {
            "initContainers": [{
                "name": "migrate", "image": "checkout:1.4", "command": ["/migrate"],
                "resources": {}, "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File", "imagePullPolicy": "IfNotPresent"
            }],
            "containers": [
                {
                    "name": "app", "image": "checkout:1.4",
                    "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                    "env": [
                        {"name": "LOG_LEVEL", "value": "info"},
                        {"name": "ATTACHE_PROXY_URL", "value": "http://127.0.0.1:9999"}
                    ],
                    "volumeMounts": [
                        {"name": "config", "mountPath": "/etc/checkout"},
                        {"name": "kube-api-access-x7k2p", "readOnly": true, "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}
                    ],
                    "resources": {}, "terminationMessagePath": "/dev/termination-log",
                    "terminationMessagePolicy": "File", "imagePullPolicy": "IfNotPresent"
                },
                {
                    "name": "worker", "image": "checkout-worker:1.4",
                    "resources": {}, "terminationMessagePath": "/dev/termination-log",
                    "terminationMessagePolicy": "File", "imagePullPolicy": "IfNotPresent"
                }
            ],
            "volumes": [
                {"name": "config", "configMap": {"name": "checkout-config", "defaultMode": 420}},
                {"name": "kube-api-access-x7k2p", "projected": {"defaultMode": 420, "sources": [
                    {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}}
                ]}}
            ],
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "default",
            "securityContext": {},
            "schedulerName": "default-scheduler",
            "enableServiceLinks": true,
            "preemptionPolicy": "PreemptLowerPriority"
        },
        "status": {}
    })
}

/// An AdmissionReview v1 request as the API server sends it.
pub fn admission_review(pod: Value, namespace: &str, operation: &str) -> Value {
    json!({
        "kind": "AdmissionReview",
        "apiVersion": "admission.k8s.io/v1",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "name": "",
            "namespace": namespace,
            "operation": operation,
            "userInfo": {
                "username": "system:serviceaccount:kube-system:replicaset-controller",
                "uid": "9d4ba3b0-0d7e-4bb7-a3f4-71f5a5a3c0c2",
                "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"]
            },
            "object": pod,
            "oldObject": null,
            "dryRun": false,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"}
        }
    })
}

pub fn dns_names() -> Vec<String> {
    service_dns_names("attache", "attache-system")
}

/// Fresh CA + serving certificate for the webhook Service, issued at `now`.
pub fn material_at(now: SystemTime, policy: &CertPolicy) -> TlsMaterial {
    issue(None, &dns_names(), now, policy).expect("issue")
}

/// A certificate resolver already holding `material`'s serving certificate.
pub fn serving(material: &TlsMaterial) -> Arc<CertResolver> {
    let certs = Arc::new(CertResolver::default());
    certs
        .set_pem(material.cert.as_bytes(), material.key.as_bytes())
        .expect("the fixture's certificate and key load");
    certs
}

/// A webhook serving on 127.0.0.1 (an OS-chosen port) until `stop` is sent.
pub struct Running {
    pub addr: SocketAddr,
    pub metrics: AdmissionMetrics,
    pub stop: Option<oneshot::Sender<()>>,
    pub task: JoinHandle<()>,
}

pub async fn start(
    view: Arc<dyn ClusterView>,
    certs: Arc<CertResolver>,
    settings: InjectorSettings,
) -> Running {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let metrics = AdmissionMetrics::default();
    let server = WebhookServer {
        settings: Arc::new(settings),
        view,
        certs,
        metrics: metrics.clone(),
    };
    let (tx, rx) = oneshot::channel::<()>();
    // As `attache-operator run` serves it: on a thread and runtime of its own.
    let served = serve_on_own_thread(server, listener, async {
        let _ = rx.await;
    })
    .unwrap();
    let task = tokio::spawn(async move { served.await.unwrap() });
    Running {
        addr,
        metrics,
        stop: Some(tx),
        task,
    }
}

fn client_config(ca_bundle_pem: &str, alpn: &[u8]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_bundle_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    Arc::new(config)
}

/// A TLS connection trusting only `ca_bundle_pem`, as the API server does with `caBundle`;
/// returns it with the leaf certificate the server presented.
pub async fn tls_connect(
    addr: SocketAddr,
    ca_bundle_pem: &str,
    alpn: &[u8],
) -> (
    tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    Vec<u8>,
) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let connector = TlsConnector::from(client_config(ca_bundle_pem, alpn));
    let name = ServerName::try_from(SERVER_NAME).unwrap();
    let tls = connector.connect(name, tcp).await.expect("TLS handshake");
    let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    (tls, leaf)
}

/// An HTTP/1.1 client over a fresh TLS connection.
pub async fn connect_h1(
    addr: SocketAddr,
    ca_bundle_pem: &str,
) -> (http1::SendRequest<Full<Bytes>>, Vec<u8>) {
    let (tls, leaf) = tls_connect(addr, ca_bundle_pem, b"http/1.1").await;
    let (sender, conn) = http1::handshake(TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    (sender, leaf)
}

/// An HTTP/2 client over a fresh TLS connection.
pub async fn connect_h2(addr: SocketAddr, ca_bundle_pem: &str) -> http2::SendRequest<Full<Bytes>> {
    let (tls, _) = tls_connect(addr, ca_bundle_pem, b"h2").await;
    let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

pub fn post_mutate(body: Vec<u8>) -> hyper::Request<Full<Bytes>> {
    hyper::Request::builder()
        .method("POST")
        .uri("/mutate?timeout=5s")
        .header("host", SERVER_NAME)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

pub fn get(path: &str) -> hyper::Request<Full<Bytes>> {
    hyper::Request::builder()
        .uri(path)
        .header("host", SERVER_NAME)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// Sends on an HTTP/1.1 connection once it is free, and reads the whole answer.
pub async fn send(
    client: &mut http1::SendRequest<Full<Bytes>>,
    req: hyper::Request<Full<Bytes>>,
) -> (u16, Bytes) {
    client.ready().await.unwrap();
    body_of(client.send_request(req).await.unwrap()).await
}

pub async fn body_of(resp: hyper::Response<hyper::body::Incoming>) -> (u16, Bytes) {
    let status = resp.status().as_u16();
    (status, resp.into_body().collect().await.unwrap().to_bytes())
}

/// The leaf certificate of a PEM chain, DER.
pub fn leaf_der(pem: &str) -> Vec<u8> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}

/// Sanity: the fixture is what the API server would send.
pub fn review_value(namespace: &str) -> Value {
    let v = admission_review(deployment_pod(), namespace, "CREATE");
    assert_eq!(
        v["request"]["kind"],
        json!({"group": "", "version": "v1", "kind": "Pod"})
    );
    v
}
