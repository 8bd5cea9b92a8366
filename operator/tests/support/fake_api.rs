//! An in-process fake Kubernetes API server: it stores objects and serves exactly the verbs
//! the operator uses, with the semantics kube-runtime depends on.
//!
//! - get, list (label and field selectors, `limit`/`continue`), watch (from a
//!   `resourceVersion`, replaying history; metadata-only when asked with
//!   `as=PartialObjectMetadata`);
//! - create (uid, resourceVersion, creationTimestamp, generation), update with
//!   `resourceVersion` preconditions (409 Conflict), delete with owner-reference garbage
//!   collection (as the cluster's garbage collector would);
//! - JSON merge patch, and server-side apply that creates objects, requires a field manager,
//!   apiVersion and kind, and removes the fields a manager stopped applying;
//! - the status subresource: writes to the main resource ignore `status`, writes to
//!   `/status` touch only `status`, and `metadata.generation` moves only with the spec.
//!
//! Every request is recorded (which client sent it, method, path, query, content type, the
//! status answered), so tests can assert what the operator did and did not do, and faults can
//! be injected per client. [`FakeApi::client`] gives a real `kube::Client` over it with no
//! socket; [`FakeApi::serve_tcp`] serves it over HTTP for a separate process.

#![allow(dead_code)]

use std::{
    collections::{BTreeMap, HashMap},
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard},
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use futures::StreamExt;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full, StreamBody};
use hyper::body::Frame;
use serde_json::{json, Map, Value};
use tokio::sync::{broadcast, mpsc};

pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// A kind of object the fake serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Res {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    /// Has a status subresource.
    pub status: bool,
    /// `metadata.generation` counts spec changes.
    pub generation: bool,
}

const fn res(
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    kind: &'static str,
) -> Res {
    Res {
        group,
        version,
        plural,
        kind,
        namespaced: true,
        status: false,
        generation: false,
    }
}

pub const CONFIG_MAPS: Res = res("", "v1", "configmaps", "ConfigMap");
pub const SECRETS: Res = res("", "v1", "secrets", "Secret");
pub const PODS: Res = res("", "v1", "pods", "Pod");
pub const LEASES: Res = res("coordination.k8s.io", "v1", "leases", "Lease");
pub const EVENTS: Res = res("events.k8s.io", "v1", "events", "Event");
pub const XINTS: Res = Res {
    status: true,
    generation: true,
    ..res(
        "attache.dev",
        "v1alpha1",
        "externalintegrations",
        "ExternalIntegration",
    )
};
pub const RESOURCES: &[Res] = &[CONFIG_MAPS, SECRETS, PODS, LEASES, EVENTS, XINTS];

impl Res {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjKey {
    pub res: Res,
    pub namespace: String,
    pub name: String,
}

/// One change, as watches see it.
#[derive(Debug)]
pub struct Change {
    pub rv: u64,
    pub key: ObjKey,
    pub kind: &'static str,
    pub object: Value,
}

/// One request, as answered.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub client: String,
    pub method: Method,
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub content_type: Option<String>,
    pub status: u16,
    pub res: Option<Res>,
    /// The request was a watch.
    pub watch: bool,
    /// A server-side apply created the object.
    pub created: bool,
}

struct Fault {
    client: Option<String>,
    method: Method,
    path_contains: String,
    code: u16,
    remaining: usize,
}

#[derive(Default)]
struct State {
    rv: u64,
    uids: u64,
    objects: BTreeMap<ObjKey, Value>,
    history: Vec<Arc<Change>>,
    /// Last configuration applied per (object, field manager, status subresource).
    applied: HashMap<(ObjKey, String, bool), Value>,
    requests: Vec<Recorded>,
    faults: Vec<Fault>,
    broadcast_rv: u64,
}

struct Inner {
    state: Mutex<State>,
    changes: broadcast::Sender<Arc<Change>>,
}

/// The fake API server; clones share it.
#[derive(Clone)]
pub struct FakeApi {
    inner: Arc<Inner>,
}

/// An answer before it is turned into a response.
enum Answer {
    Json(StatusCode, Value),
    Watch(mpsc::UnboundedReceiver<Bytes>),
}

impl Default for FakeApi {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeApi {
    pub fn new() -> Self {
        let (changes, _) = broadcast::channel(1 << 16);
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                changes,
            }),
        }
    }

    /// A kube client whose requests are recorded under `name`.
    pub fn client(&self, name: &str) -> kube::Client {
        kube::Client::new(
            FakeService {
                api: self.clone(),
                client: name.to_string(),
            },
            "default",
        )
    }

    /// Serves the API over plain HTTP on 127.0.0.1 (requests recorded as `tcp`).
    pub async fn serve_tcp(&self) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let api = self.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let api = api.clone();
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                            let api = api.clone();
                            async move {
                                let (parts, body) = req.into_parts();
                                let bytes = body
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes())
                                    .unwrap_or_default();
                                Ok::<_, Infallible>(
                                    api.handle("tcp", Request::from_parts(parts, bytes)),
                                )
                            }
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        addr
    }

    // === Inspection and direct manipulation (no request recorded) ===

    pub fn get(&self, res: Res, namespace: &str, name: &str) -> Option<Value> {
        self.lock().objects.get(&key(res, namespace, name)).cloned()
    }

    pub fn list(&self, res: Res) -> Vec<Value> {
        self.lock()
            .objects
            .iter()
            .filter(|(k, _)| k.res == res)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Requests from `client` (all when `None`).
    pub fn requests(&self, client: Option<&str>) -> Vec<Recorded> {
        self.lock()
            .requests
            .iter()
            .filter(|r| client.is_none_or(|c| r.client == c))
            .cloned()
            .collect()
    }

    /// The next `times` requests from `client` (any when `None`) with `method` whose path
    /// contains `path_contains` fail with `code`.
    pub fn inject_fault(
        &self,
        client: Option<&str>,
        method: Method,
        path_contains: &str,
        code: u16,
        times: usize,
    ) {
        self.lock().faults.push(Fault {
            client: client.map(String::from),
            method,
            path_contains: path_contains.into(),
            code,
            remaining: times,
        });
    }

    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// Stores objects as if created, without recording requests (fast setup).
    pub fn seed(&self, objects: impl IntoIterator<Item = Value>) {
        let mut s = self.lock();
        for obj in objects {
            let kind = obj["kind"].as_str().unwrap_or_default().to_string();
            let res = *RESOURCES
                .iter()
                .find(|r| r.kind == kind)
                .expect("known kind");
            let ns = obj["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            s.create(res, &ns, obj).expect("seeded object is new");
        }
        s.publish(&self.inner.changes);
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    // === Serving ===

    fn handle(&self, client: &str, req: Request<Bytes>) -> Response<Body> {
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let query: BTreeMap<String, String> = req
            .uri()
            .query()
            .map(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .into_owned()
                    .collect()
            })
            .unwrap_or_default();
        let content_type = req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        let metadata_only = req
            .headers()
            .get(http::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("as=PartialObjectMetadata"));
        let target = parse_path(&path);
        let watch =
            method == Method::GET && query.get("watch").is_some_and(|w| w == "true" || w == "1");

        let mut created = false;
        let answer = {
            let mut s = self.lock();
            if let Some(code) = s.fault(client, &method, &path) {
                Answer::Json(
                    StatusCode::from_u16(code).unwrap(),
                    status(code, "injected fault"),
                )
            } else {
                match &target {
                    None => Answer::Json(
                        StatusCode::NOT_FOUND,
                        status(404, &format!("no route {path}")),
                    ),
                    Some(t) => {
                        let r = s.serve(
                            &self.inner.changes,
                            &method,
                            t,
                            &query,
                            content_type.as_deref(),
                            metadata_only,
                            req.body(),
                            &mut created,
                        );
                        match r {
                            Ok(a) => a,
                            Err((code, msg)) => Answer::Json(
                                StatusCode::from_u16(code).unwrap(),
                                status(code, &msg),
                            ),
                        }
                    }
                }
            }
        };
        let code = match &answer {
            Answer::Json(c, _) => c.as_u16(),
            Answer::Watch(_) => 200,
        };
        self.lock().requests.push(Recorded {
            client: client.into(),
            method,
            path,
            query,
            content_type,
            status: code,
            res: target.as_ref().map(|t| t.res),
            watch,
            created,
        });
        match answer {
            Answer::Json(code, body) => {
                let mut r = Response::new(
                    Full::new(Bytes::from(serde_json::to_vec(&body).unwrap())).boxed_unsync(),
                );
                *r.status_mut() = code;
                r.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/json"),
                );
                r
            }
            Answer::Watch(rx) => {
                let stream = futures::stream::unfold(rx, |mut rx| async move {
                    rx.recv()
                        .await
                        .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
                });
                let mut r = Response::new(StreamBody::new(stream.boxed()).boxed_unsync());
                r.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/json"),
                );
                r
            }
        }
    }
}

// === Paths ===

#[derive(Debug, Clone)]
struct Target {
    res: Res,
    namespace: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

fn parse_path(path: &str) -> Option<Target> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let (group, version, rest) = match parts.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
        _ => (None, rest),
    };
    let (plural, name, sub) = match rest {
        [p] => (*p, None, None),
        [p, n] => (*p, Some(n.to_string()), None),
        [p, n, s] => (*p, Some(n.to_string()), Some(s.to_string())),
        _ => return None,
    };
    let res = *RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)?;
    Some(Target {
        res,
        namespace,
        name,
        sub,
    })
}

fn key(res: Res, namespace: &str, name: &str) -> ObjKey {
    ObjKey {
        res,
        namespace: namespace.into(),
        name: name.into(),
    }
}

fn status(code: u16, message: &str) -> Value {
    let reason = match code {
        400 => "BadRequest",
        404 => "NotFound",
        409 if message.contains("already exists") => "AlreadyExists",
        409 => "Conflict",
        415 => "UnsupportedMediaType",
        422 => "Invalid",
        500 => "InternalError",
        503 => "ServiceUnavailable",
        _ => "Unknown",
    };
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

type Failure = (u16, String);

fn fail<T>(code: u16, msg: impl Into<String>) -> Result<T, Failure> {
    Err((code, msg.into()))
}

// === Selectors ===

enum Req {
    Eq(String, String),
    Ne(String, String),
    Exists(String),
    NotExists(String),
}

fn parse_labels(sel: &str) -> Result<Vec<Req>, Failure> {
    sel.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|r| {
            if let Some((k, v)) = r.split_once("!=") {
                Ok(Req::Ne(k.trim().into(), v.trim().into()))
            } else if let Some((k, v)) = r.split_once("==").or_else(|| r.split_once('=')) {
                Ok(Req::Eq(k.trim().into(), v.trim().into()))
            } else if r.contains(' ') || r.contains('(') {
                fail(400, format!("unsupported label selector {r:?}"))
            } else if let Some(k) = r.strip_prefix('!') {
                Ok(Req::NotExists(k.into()))
            } else {
                Ok(Req::Exists(r.into()))
            }
        })
        .collect()
}

fn labels_match(reqs: &[Req], obj: &Value) -> bool {
    let labels = &obj["metadata"]["labels"];
    reqs.iter().all(|r| match r {
        Req::Eq(k, v) => labels[k].as_str() == Some(v),
        Req::Ne(k, v) => labels[k].as_str() != Some(v),
        Req::Exists(k) => labels.get(k).is_some(),
        Req::NotExists(k) => labels.get(k).is_none(),
    })
}

fn fields_match(sel: &str, obj: &Value) -> bool {
    sel.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .all(|r| {
            let (path, value, equal) = match r.split_once("!=") {
                Some((p, v)) => (p, v, false),
                None => match r.split_once("==").or_else(|| r.split_once('=')) {
                    Some((p, v)) => (p, v, true),
                    None => return false,
                },
            };
            let mut cur = obj;
            for part in path.trim().split('.') {
                cur = &cur[part];
            }
            let actual = cur.as_str().unwrap_or_default();
            (actual == value.trim()) == equal
        })
}

struct Filter {
    namespace: Option<String>,
    labels: Vec<Req>,
    fields: String,
}

impl Filter {
    fn new(t: &Target, q: &BTreeMap<String, String>) -> Result<Self, Failure> {
        Ok(Self {
            namespace: t.namespace.clone(),
            labels: parse_labels(
                q.get("labelSelector")
                    .map(String::as_str)
                    .unwrap_or_default(),
            )?,
            fields: q.get("fieldSelector").cloned().unwrap_or_default(),
        })
    }

    fn matches(&self, k: &ObjKey, obj: &Value) -> bool {
        self.namespace.as_ref().is_none_or(|ns| *ns == k.namespace)
            && labels_match(&self.labels, obj)
            && fields_match(&self.fields, obj)
    }
}

fn metadata_view(obj: &Value) -> Value {
    json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": obj["metadata"]})
}

// === Merging ===

/// RFC 7386 JSON merge patch.
fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let t = target.as_object_mut().unwrap();
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// Removes from `target` what `previous` applied and `applied` no longer does (maps are
/// recursed into; lists and scalars are atomic).
fn remove_dropped(target: &mut Value, previous: &Value, applied: &Value) {
    let (Some(prev), Some(t)) = (previous.as_object(), target.as_object_mut()) else {
        return;
    };
    for (k, pv) in prev {
        match applied.get(k) {
            None => {
                t.remove(k);
            }
            Some(nv) if pv.is_object() && nv.is_object() => {
                if let Some(tv) = t.get_mut(k) {
                    remove_dropped(tv, pv, nv);
                }
            }
            Some(_) => {}
        }
    }
}

fn without_meta_and_status(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
    }
    o
}

fn now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    k8s_openapi::jiff::Timestamp::from_second(secs)
        .unwrap()
        .to_string()
}

// === The server's state machine ===

impl State {
    fn fault(&mut self, client: &str, method: &Method, path: &str) -> Option<u16> {
        let f = self.faults.iter_mut().find(|f| {
            f.remaining > 0
                && f.method == *method
                && path.contains(&f.path_contains)
                && f.client.as_deref().is_none_or(|c| c == client)
        })?;
        f.remaining -= 1;
        Some(f.code)
    }

    #[allow(clippy::too_many_arguments)]
    fn serve(
        &mut self,
        changes: &broadcast::Sender<Arc<Change>>,
        method: &Method,
        t: &Target,
        q: &BTreeMap<String, String>,
        content_type: Option<&str>,
        metadata_only: bool,
        body: &Bytes,
        created: &mut bool,
    ) -> Result<Answer, Failure> {
        if let Some(sub) = &t.sub {
            if sub != "status" || !t.res.status {
                return fail(404, format!("no subresource {sub}"));
            }
        }
        let parse_body = || -> Result<Value, Failure> {
            serde_json::from_slice(body).map_err(|e| (400, format!("body is not JSON: {e}")))
        };
        let on_status = t.sub.is_some();
        match (method.clone(), &t.name) {
            (Method::GET, Some(name)) => {
                let ns = t.namespace.clone().unwrap_or_default();
                match self.objects.get(&key(t.res, &ns, name)) {
                    Some(o) if metadata_only => Ok(Answer::Json(StatusCode::OK, metadata_view(o))),
                    Some(o) => Ok(Answer::Json(StatusCode::OK, o.clone())),
                    None => fail(404, format!("{} {name:?} not found", t.res.plural)),
                }
            }
            (Method::GET, None) if q.get("watch").is_some_and(|w| w == "true" || w == "1") => {
                self.watch(changes, t, q, metadata_only)
            }
            (Method::GET, None) => self.list(t, q, metadata_only),
            (Method::POST, None) => {
                let obj = parse_body()?;
                let ns = t.namespace.clone().unwrap_or_default();
                let stored = self.create(t.res, &ns, obj)?;
                self.publish(changes);
                Ok(Answer::Json(StatusCode::CREATED, stored))
            }
            (Method::PUT, Some(name)) => {
                let obj = parse_body()?;
                let ns = t.namespace.clone().unwrap_or_default();
                let k = key(t.res, &ns, name);
                let Some(existing) = self.objects.get(&k).cloned() else {
                    return fail(404, format!("{} {name:?} not found", t.res.plural));
                };
                if let Some(rv) = obj["metadata"]["resourceVersion"].as_str() {
                    if rv
                        != existing["metadata"]["resourceVersion"]
                            .as_str()
                            .unwrap_or_default()
                    {
                        return fail(409, format!(
                            "Operation cannot be fulfilled on {} {name:?}: the object has been modified; please apply your changes to the latest version and try again",
                            t.res.plural
                        ));
                    }
                }
                let mut next = existing.clone();
                if on_status {
                    next["status"] = obj["status"].clone();
                } else {
                    let keep_status = existing.get("status").cloned();
                    let mut o = obj;
                    if let Some(m) = o.as_object_mut() {
                        m.remove("status");
                    }
                    let meta = existing["metadata"].clone();
                    next = o;
                    for f in ["uid", "creationTimestamp", "resourceVersion", "generation"] {
                        next["metadata"][f] = meta[f].clone();
                    }
                    if t.res.status {
                        if let Some(s) = keep_status {
                            next["status"] = s;
                        }
                    }
                }
                let stored = self.update(t.res, k, existing, next);
                self.publish(changes);
                Ok(Answer::Json(StatusCode::OK, stored))
            }
            (Method::PATCH, Some(name)) => {
                let patch = parse_body()?;
                let ns = t.namespace.clone().unwrap_or_default();
                let k = key(t.res, &ns, name);
                let ct = content_type.unwrap_or_default();
                let existing = self.objects.get(&k).cloned();
                let stored = if ct.starts_with("application/apply-patch") {
                    let Some(manager) = q.get("fieldManager").filter(|m| !m.is_empty()) else {
                        return fail(400, "PATCH with apply requires fieldManager");
                    };
                    if patch["apiVersion"].as_str() != Some(&t.res.api_version())
                        || patch["kind"].as_str() != Some(t.res.kind)
                    {
                        return fail(
                            400,
                            format!(
                                "apply: apiVersion/kind must be {}/{}",
                                t.res.api_version(),
                                t.res.kind
                            ),
                        );
                    }
                    if patch["metadata"]["name"].as_str() != Some(name) {
                        return fail(400, "apply: metadata.name does not match the path");
                    }
                    if let Some(pns) = patch["metadata"]["namespace"].as_str() {
                        if pns != ns {
                            return fail(400, "apply: metadata.namespace does not match the path");
                        }
                    }
                    let mut applied = patch.clone();
                    if t.res.status {
                        if on_status {
                            applied = json!({"status": patch["status"]});
                        } else if let Some(m) = applied.as_object_mut() {
                            m.remove("status");
                        }
                    }
                    let akey = (k.clone(), manager.clone(), on_status);
                    match existing {
                        None if on_status => {
                            return fail(404, format!("{} {name:?} not found", t.res.plural))
                        }
                        None => {
                            let stored = self.create(t.res, &ns, patch)?;
                            self.applied.insert(akey, applied);
                            *created = true;
                            stored
                        }
                        Some(existing) => {
                            let mut next = existing.clone();
                            if let Some(prev) = self.applied.get(&akey) {
                                remove_dropped(&mut next, prev, &applied);
                            }
                            merge(&mut next, &applied);
                            self.applied.insert(akey, applied);
                            self.update(t.res, k, existing, next)
                        }
                    }
                } else if ct.starts_with("application/merge-patch+json")
                    || ct.starts_with("application/strategic-merge-patch+json")
                {
                    let Some(existing) = existing else {
                        return fail(404, format!("{} {name:?} not found", t.res.plural));
                    };
                    let mut next = existing.clone();
                    if on_status {
                        let mut st = existing.get("status").cloned().unwrap_or(json!({}));
                        merge(&mut st, &patch["status"]);
                        next["status"] = st;
                    } else {
                        let mut p = patch;
                        if t.res.status {
                            if let Some(m) = p.as_object_mut() {
                                m.remove("status");
                            }
                        }
                        merge(&mut next, &p);
                    }
                    self.update(t.res, k, existing, next)
                } else {
                    return fail(415, format!("unsupported patch type {ct:?}"));
                };
                self.publish(changes);
                Ok(Answer::Json(StatusCode::OK, stored))
            }
            (Method::DELETE, Some(name)) => {
                let ns = t.namespace.clone().unwrap_or_default();
                let k = key(t.res, &ns, name);
                let Some(obj) = self.delete(k) else {
                    return fail(404, format!("{} {name:?} not found", t.res.plural));
                };
                self.publish(changes);
                Ok(Answer::Json(StatusCode::OK, obj))
            }
            _ => fail(405, format!("{method} not served here")),
        }
    }

    fn list(
        &self,
        t: &Target,
        q: &BTreeMap<String, String>,
        metadata_only: bool,
    ) -> Result<Answer, Failure> {
        let filter = Filter::new(t, q)?;
        let after = q.get("continue").filter(|c| !c.is_empty()).cloned();
        let limit = q
            .get("limit")
            .and_then(|l| l.parse::<usize>().ok())
            .filter(|l| *l > 0);
        let mut items = Vec::new();
        let mut last = None;
        let mut more = false;
        for (k, o) in self.objects.iter().filter(|(k, _)| k.res == t.res) {
            let id = format!("{}/{}", k.namespace, k.name);
            if after.as_ref().is_some_and(|a| id <= *a) || !filter.matches(k, o) {
                continue;
            }
            if limit.is_some_and(|l| items.len() >= l) {
                more = true;
                break;
            }
            items.push(if metadata_only {
                metadata_view(o)
            } else {
                o.clone()
            });
            last = Some(id);
        }
        let mut metadata = json!({"resourceVersion": self.rv.to_string()});
        if more {
            metadata["continue"] = json!(last);
        }
        let (api_version, kind) = if metadata_only {
            (
                "meta.k8s.io/v1".to_string(),
                "PartialObjectMetadataList".to_string(),
            )
        } else {
            (t.res.api_version(), format!("{}List", t.res.kind))
        };
        Ok(Answer::Json(
            StatusCode::OK,
            json!({"apiVersion": api_version, "kind": kind, "metadata": metadata, "items": items}),
        ))
    }

    fn watch(
        &self,
        changes: &broadcast::Sender<Arc<Change>>,
        t: &Target,
        q: &BTreeMap<String, String>,
        metadata_only: bool,
    ) -> Result<Answer, Failure> {
        let filter = Filter::new(t, q)?;
        let since = q.get("resourceVersion").cloned().unwrap_or_default();
        let timeout = q
            .get("timeoutSeconds")
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(290);
        let res = t.res;
        let view = move |o: &Value| {
            if metadata_only {
                metadata_view(o)
            } else {
                o.clone()
            }
        };
        let line = |kind: &str, o: Value| {
            let mut v = serde_json::to_vec(&json!({"type": kind, "object": o})).unwrap();
            v.push(b'\n');
            Bytes::from(v)
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let mut live = changes.subscribe();
        let mut last = match since.as_str() {
            "" | "0" => {
                for (k, o) in self.objects.iter().filter(|(k, _)| k.res == res) {
                    if filter.matches(k, o) {
                        let _ = tx.send(line("ADDED", view(o)));
                    }
                }
                self.rv
            }
            rv => {
                let since: u64 = rv
                    .parse()
                    .map_err(|_| (400, format!("bad resourceVersion {rv:?}")))?;
                let start = self.history.partition_point(|c| c.rv <= since);
                for c in &self.history[start..] {
                    if c.key.res == res && filter.matches(&c.key, &c.object) {
                        let _ = tx.send(line(c.kind, view(&c.object)));
                    }
                }
                self.rv.max(since)
            }
        };
        tokio::spawn(async move {
            let deadline = tokio::time::sleep(Duration::from_secs(timeout));
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    () = &mut deadline => return,
                    () = tx.closed() => return,
                    c = live.recv() => match c {
                        Ok(c) => {
                            if c.rv <= last {
                                continue;
                            }
                            last = c.rv;
                            if c.key.res == res && filter.matches(&c.key, &c.object)
                                && tx.send(line(c.kind, view(&c.object))).is_err() {
                                return;
                            }
                        }
                        // Lagged or closed: end the watch; the client re-watches from its last
                        // resourceVersion and the history replays what it missed.
                        Err(_) => return,
                    },
                }
            }
        });
        Ok(Answer::Watch(rx))
    }

    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn create(&mut self, res: Res, ns: &str, mut obj: Value) -> Result<Value, Failure> {
        if !obj.is_object() {
            return fail(400, "object expected");
        }
        let name = match obj["metadata"]["name"].as_str() {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => match obj["metadata"]["generateName"].as_str() {
                Some(g) => format!("{g}{}", self.uids + 1),
                None => return fail(422, "metadata.name is required"),
            },
        };
        if res.namespaced && ns.is_empty() {
            return fail(400, "namespace required");
        }
        if let Some(ons) = obj["metadata"]["namespace"].as_str() {
            if ons != ns {
                return fail(400, "metadata.namespace does not match the request");
            }
        }
        let k = key(res, ns, &name);
        if self.objects.contains_key(&k) {
            return fail(409, format!("{} {name:?} already exists", res.plural));
        }
        self.uids += 1;
        let rv = self.next_rv();
        obj["apiVersion"] = json!(res.api_version());
        obj["kind"] = json!(res.kind);
        let meta = &mut obj["metadata"];
        meta["name"] = json!(name);
        if res.namespaced {
            meta["namespace"] = json!(ns);
        }
        meta["uid"] = json!(format!("00000000-0000-4000-8000-{:012}", self.uids));
        meta["resourceVersion"] = json!(rv.to_string());
        meta["creationTimestamp"] = json!(now());
        if res.generation {
            meta["generation"] = json!(1);
        }
        if res.status {
            if let Some(m) = obj.as_object_mut() {
                m.remove("status");
            }
        }
        self.objects.insert(k.clone(), obj.clone());
        self.history.push(Arc::new(Change {
            rv,
            key: k,
            kind: "ADDED",
            object: obj.clone(),
        }));
        Ok(obj)
    }

    /// Stores `next` over `existing` unless nothing changed; returns what is stored.
    fn update(&mut self, res: Res, k: ObjKey, existing: Value, mut next: Value) -> Value {
        next["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"].clone();
        if res.generation {
            next["metadata"]["generation"] = existing["metadata"]["generation"].clone();
        }
        if next == existing {
            return existing;
        }
        if res.generation && without_meta_and_status(&next) != without_meta_and_status(&existing) {
            let g = existing["metadata"]["generation"].as_i64().unwrap_or(0);
            next["metadata"]["generation"] = json!(g + 1);
        }
        let rv = self.next_rv();
        next["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.objects.insert(k.clone(), next.clone());
        self.history.push(Arc::new(Change {
            rv,
            key: k,
            kind: "MODIFIED",
            object: next.clone(),
        }));
        next
    }

    /// Deletes an object and, like the garbage collector, its dependents.
    fn delete(&mut self, k: ObjKey) -> Option<Value> {
        let mut obj = self.objects.remove(&k)?;
        let rv = self.next_rv();
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.applied.retain(|(ak, _, _), _| *ak != k);
        self.history.push(Arc::new(Change {
            rv,
            key: k,
            kind: "DELETED",
            object: obj.clone(),
        }));
        let uid = obj["metadata"]["uid"].clone();
        let dependents: Vec<ObjKey> = self
            .objects
            .iter()
            .filter(|(_, o)| {
                o["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid))
            })
            .map(|(k, _)| k.clone())
            .collect();
        for d in dependents {
            self.delete(d);
        }
        Some(obj)
    }

    /// Sends the changes not yet broadcast to the watches (under the lock, so a watch set up
    /// meanwhile sees each change exactly once: replayed or live).
    fn publish(&mut self, changes: &broadcast::Sender<Arc<Change>>) {
        let from = self.history.partition_point(|c| c.rv <= self.broadcast_rv);
        for c in &self.history[from..] {
            let _ = changes.send(c.clone());
        }
        self.broadcast_rv = self.rv;
    }
}

// === The kube Client's transport ===

#[derive(Clone)]
struct FakeService {
    api: FakeApi,
    client: String,
}

impl tower_service::Service<Request<kube::client::Body>> for FakeService {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<kube::client::Body>) -> Self::Future {
        let api = self.api.clone();
        let client = self.client.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let bytes = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            Ok(api.handle(&client, Request::from_parts(parts, bytes)))
        })
    }
}
