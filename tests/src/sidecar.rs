//! Runs the real `attache-sidecar` binary the way users do: in local mode (manifests plus a
//! folder of secret files) or in config-dir mode (the operator's rendered layout, updated with
//! the kubelet's `..data` symlink swap), on free ports, and waits until `/readyz` answers.
//! Also: files written the way real updates write them (temp file + rename), a Prometheus text
//! parser for metric assertions, continuous background traffic for reload tests, and the
//! process's memory from `/proc`.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use attache_api::{RenderOptions, SecretBytes, SecretSource, SourceError};
use serde_json::{json, Value};

use crate::client::{HttpClient, Response};
use crate::pki::{CertPair, TestCa};
use crate::process::{bin_path, free_port_range, free_ports, Proc};

/// The binary under test.
pub const SIDECAR_BIN: &str = "attache-sidecar";

/// How long a sidecar may take from exec to `/readyz` 200 before a test gives up; generous,
/// because a loaded 2-core CI machine can be slow, and the time is measured and reported
/// separately ([`Sidecar::ready_in`]).
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The Secret holding the upstream's CA in local-mode setups made by [`LocalSetup::trusting`].
pub const CA_SECRET: &str = "upstream-ca";

static UNIQUE: AtomicU64 = AtomicU64::new(0);

fn unique() -> u64 {
    UNIQUE.fetch_add(1, Ordering::SeqCst)
}

// === TempDir ===

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "attache-{label}-{}-{}-{nanos}",
            std::process::id(),
            unique()
        ));
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Replaces `path`'s content atomically, the way editors, `kubectl cp` and secret managers do:
/// write a hidden temp file next to it, then rename it over the target. A reader never sees a
/// half-written file.
pub fn write_atomic(path: &Path, contents: impl AsRef<[u8]>) {
    let dir = path.parent().expect("file has a parent directory");
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    let name = path
        .file_name()
        .expect("file has a name")
        .to_string_lossy()
        .into_owned();
    let tmp = dir.join(format!(".{name}.tmp-{}", unique()));
    std::fs::write(&tmp, contents).unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
    std::fs::rename(&tmp, path)
        .unwrap_or_else(|e| panic!("rename {} over {}: {e}", tmp.display(), path.display()));
}

// === Manifests ===

/// An `ExternalIntegration` document named `name` with `spec` (JSON is valid YAML, so the
/// sidecar reads these documents as it reads hand-written manifests).
pub fn xint(name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "attache.dev/v1alpha1",
        "kind": "ExternalIntegration",
        "metadata": {"name": name},
        "spec": spec,
    })
}

/// `spec.tls.caBundleRef` pointing at [`CA_SECRET`].
pub fn ca_bundle_ref() -> Value {
    json!({"kind": "Secret", "name": CA_SECRET, "key": "ca.crt"})
}

/// A multi-document manifest file's text.
pub fn manifest_text(docs: &[Value]) -> String {
    docs.iter()
        .map(|d| serde_json::to_string_pretty(d).expect("JSON serializes"))
        .collect::<Vec<_>>()
        .join("\n---\n")
        + "\n"
}

// === Local mode ===

/// A local-mode setup: `DIR/manifest.yaml` plus `DIR/secrets/<secret-name>/<key>` files.
pub struct LocalSetup {
    dir: TempDir,
    integrations: usize,
}

impl Default for LocalSetup {
    fn default() -> Self {
        Self::new()
    }
}

impl LocalSetup {
    pub fn new() -> LocalSetup {
        let dir = TempDir::new("local");
        std::fs::create_dir_all(dir.path().join("secrets")).expect("create secrets dir");
        LocalSetup {
            dir,
            integrations: 0,
        }
    }

    /// A setup whose secrets hold `ca`'s certificate as [`CA_SECRET`] (see [`ca_bundle_ref`]).
    pub fn trusting(ca: &TestCa) -> LocalSetup {
        let setup = LocalSetup::new();
        setup.secret(CA_SECRET, "ca.crt", &ca.cert_pem);
        setup
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn secrets_dir(&self) -> PathBuf {
        self.dir.path().join("secrets")
    }

    pub fn manifest_path(&self) -> PathBuf {
        self.dir.path().join("manifest.yaml")
    }

    /// Writes (or atomically replaces) Secret `name`'s `key`.
    pub fn secret(&self, name: &str, key: &str, value: impl AsRef<[u8]>) {
        write_atomic(&self.secrets_dir().join(name).join(key), value);
    }

    /// Writes a `kubernetes.io/tls` Secret (`tls.crt` + `tls.key`).
    pub fn tls_secret(&self, name: &str, pair: &CertPair) {
        self.secret(name, "tls.crt", &pair.cert_pem);
        self.secret(name, "tls.key", &pair.key_pem);
    }

    /// Writes (or atomically replaces) the manifest; its documents are the integrations.
    pub fn manifest(&mut self, docs: &[Value]) {
        self.integrations = docs.len();
        write_atomic(&self.manifest_path(), manifest_text(docs));
    }

    /// The `run` arguments naming this setup's files.
    pub fn source_args(&self) -> Vec<OsString> {
        vec![
            "--manifest".into(),
            self.manifest_path().into(),
            "--secrets-dir".into(),
            self.secrets_dir().into(),
        ]
    }

    /// Starts the sidecar on free ports and waits for `/readyz` 200.
    pub async fn start(&self) -> Sidecar {
        self.start_with(&[]).await
    }

    /// Like [`LocalSetup::start`], with extra flags such as `--log-level debug`.
    pub async fn start_with(&self, extra: &[&str]) -> Sidecar {
        assert!(self.integrations > 0, "write a manifest before starting");
        Sidecar::start(self.source_args(), self.integrations, extra).await
    }

    /// Like [`LocalSetup::start_with`], run through `wrapper` (see [`Sidecar::start_under`]).
    pub async fn start_under(&self, wrapper: &[&str], extra: &[&str]) -> Sidecar {
        assert!(self.integrations > 0, "write a manifest before starting");
        Sidecar::start_under(wrapper, self.source_args(), self.integrations, extra).await
    }

    /// Runs the sidecar on free ports without waiting for it to be ready: for tests of a
    /// start that must fail.
    pub fn spawn(&self) -> Proc {
        let (first_port, proxy_port, admin_port) = pick_ports(self.integrations);
        let args = run_args(
            &self.source_args(),
            first_port,
            SocketAddr::from((Ipv4Addr::LOCALHOST, proxy_port)),
            SocketAddr::from((Ipv4Addr::LOCALHOST, admin_port)),
            &[],
        );
        Proc::spawn(&bin_path(SIDECAR_BIN), &args)
    }
}

// === Config-dir mode ===

/// Secrets and ConfigMaps held in memory, for rendering a config dir in a test exactly as the
/// operator would from Kubernetes objects.
#[derive(Clone, Default)]
pub struct SecretFiles {
    objects: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
}

impl SecretFiles {
    pub fn new() -> SecretFiles {
        SecretFiles::default()
    }

    /// Sets `name`'s `key` (Secret or ConfigMap alike).
    pub fn with(mut self, name: &str, key: &str, value: impl AsRef<[u8]>) -> SecretFiles {
        self.objects
            .entry(name.to_string())
            .or_default()
            .insert(key.to_string(), value.as_ref().to_vec());
        self
    }

    fn lookup(&self, name: &str, key: &str) -> Result<SecretBytes, SourceError> {
        let object = self.objects.get(name).ok_or(SourceError::ObjectNotFound)?;
        let value = object.get(key).ok_or(SourceError::KeyNotFound)?;
        Ok(SecretBytes::new(value.clone()))
    }
}

impl SecretSource for SecretFiles {
    fn secret_key(&self, name: &str, key: &str) -> Result<SecretBytes, SourceError> {
        self.lookup(name, key)
    }

    fn config_map_key(&self, name: &str, key: &str) -> Result<SecretBytes, SourceError> {
        self.lookup(name, key)
    }
}

/// What the operator puts in integration `xint`'s ConfigMap and Secret (file name → bytes):
/// `config.json` plus exactly the secret files it names, rendered by `attache_api::render`.
pub fn render_volume(xint: &Value, secrets: &SecretFiles) -> BTreeMap<String, Vec<u8>> {
    let text = manifest_text(std::slice::from_ref(xint));
    let mut parsed = attache_api::manifest::parse_integrations("test manifest", &text)
        .unwrap_or_else(|e| panic!("test manifest does not parse: {e}"));
    assert_eq!(parsed.len(), 1, "one integration per volume");
    let rendered = attache_api::render(&parsed.remove(0), secrets, RenderOptions::default())
        .unwrap_or_else(|e| panic!("test manifest does not render: {e}"));
    let mut files: BTreeMap<String, Vec<u8>> = rendered
        .config_map_data()
        .into_iter()
        .map(|(k, v)| (k, v.into_bytes()))
        .collect();
    for (name, value) in &rendered.files {
        files.insert(name.clone(), value.expose().to_vec());
    }
    files
}

/// A config dir as a pod sees it: `DIR/NAME/` per integration, each a projected volume that
/// the kubelet updates atomically: new files go into a fresh `..<generation>` folder, a
/// `..data_tmp` symlink to it is renamed over `..data`, and the visible names are symlinks
/// through `..data`.
pub struct ConfigDir {
    dir: TempDir,
    generation: u64,
}

impl Default for ConfigDir {
    fn default() -> Self {
        Self::new()
    }
}

impl ConfigDir {
    pub fn new() -> ConfigDir {
        ConfigDir {
            dir: TempDir::new("config-dir"),
            generation: 0,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Publishes `files` as integration `name`'s volume: the first call creates it, later
    /// calls perform the kubelet's atomic update (and remove the previous generation).
    pub fn publish(&mut self, name: &str, files: &BTreeMap<String, Vec<u8>>) {
        use std::os::unix::fs::symlink;
        self.generation += 1;
        let volume = self.dir.path().join(name);
        std::fs::create_dir_all(&volume).expect("create volume dir");
        let generation = format!("..2026_01_01_00_00_00.{:06}", self.generation);
        let gen_dir = volume.join(&generation);
        std::fs::create_dir_all(&gen_dir).expect("create generation dir");
        for (file, contents) in files {
            std::fs::write(gen_dir.join(file), contents).expect("write volume file");
        }
        let tmp = volume.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        symlink(&generation, &tmp).expect("symlink ..data_tmp");
        std::fs::rename(&tmp, volume.join("..data")).expect("swap ..data");
        for file in files.keys() {
            let link = volume.join(file);
            if std::fs::symlink_metadata(&link).is_err() {
                symlink(format!("..data/{file}"), &link).expect("symlink visible file");
            }
        }
        for entry in std::fs::read_dir(&volume).expect("list volume") {
            let entry = entry.expect("volume entry");
            let entry_name = entry.file_name().to_string_lossy().into_owned();
            if entry_name.starts_with("..") && entry_name != "..data" && entry_name != generation {
                let _ = std::fs::remove_dir_all(entry.path());
            } else if !entry_name.starts_with('.') && !files.contains_key(&entry_name) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    /// The `run` arguments naming this config dir.
    pub fn source_args(&self) -> Vec<OsString> {
        vec!["--config-dir".into(), self.dir.path().into()]
    }

    /// Starts the sidecar on this config dir (holding `integrations` integrations).
    pub async fn start(&self, integrations: usize, extra: &[&str]) -> Sidecar {
        Sidecar::start(self.source_args(), integrations, extra).await
    }
}

// === Sidecar ===

/// A running `attache-sidecar run`; killed on drop.
pub struct Sidecar {
    proc: Proc,
    /// Integration `i` (sorted by name) listens on `first_port + i`.
    pub first_port: u16,
    pub proxy_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// From exec to the first `/readyz` 200 (polled every few milliseconds).
    pub ready_in: Duration,
}

/// Memory of a process from `/proc/<pid>/status`, in KiB.
#[derive(Clone, Copy, Debug)]
pub struct Memory {
    /// Resident set size now (`VmRSS`).
    pub rss_kib: u64,
    /// Peak resident set size so far (`VmHWM`).
    pub hwm_kib: u64,
}

impl Sidecar {
    /// Runs `attache-sidecar run SOURCE... --first-port P --proxy-addr 127.0.0.1:Q
    /// --admin-addr 127.0.0.1:R EXTRA...` and waits until `/readyz` is 200. Ports are free
    /// ones; if another test grabbed one in between, it starts again on new ports.
    pub async fn start(source: Vec<OsString>, integrations: usize, extra: &[&str]) -> Sidecar {
        Sidecar::start_under(&[], source, integrations, extra).await
    }

    /// Like [`Sidecar::start`], run through `wrapper` (a program and its arguments that exec
    /// the rest of the command line, e.g. `prlimit --nofile=256 --`).
    pub async fn start_under(
        wrapper: &[&str],
        source: Vec<OsString>,
        integrations: usize,
        extra: &[&str],
    ) -> Sidecar {
        let bin = bin_path(SIDECAR_BIN);
        let spawn = |args: &[OsString]| match wrapper.split_first() {
            None => Proc::spawn(&bin, args),
            Some((program, rest)) => {
                let mut all: Vec<OsString> = rest.iter().map(OsString::from).collect();
                all.push(bin.clone().into());
                all.extend(args.iter().cloned());
                Proc::spawn(Path::new(program), &all)
            }
        };
        let mut last_output = String::new();
        for _ in 0..5 {
            let (first_port, proxy_port, admin_port) = pick_ports(integrations);
            let proxy_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, proxy_port));
            let admin_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, admin_port));
            let args = run_args(&source, first_port, proxy_addr, admin_addr, extra);
            let started = Instant::now();
            let mut proc = spawn(&args);
            match wait_ready(&mut proc, admin_addr, READY_TIMEOUT).await {
                Ok(()) => {
                    return Sidecar {
                        proc,
                        first_port,
                        proxy_addr,
                        admin_addr,
                        ready_in: started.elapsed(),
                    }
                }
                Err(Some(status)) if proc.output().contains("cannot listen on") => {
                    // A port was taken between choosing and binding; try other ports.
                    last_output = format!("{status}: {}", proc.output());
                }
                Err(Some(status)) => panic!(
                    "attache-sidecar exited ({status}) before it was ready; output:\n{}",
                    proc.output()
                ),
                Err(None) => panic!(
                    "attache-sidecar not ready (/readyz 200) within {READY_TIMEOUT:?}; output:\n{}",
                    proc.output()
                ),
            }
        }
        panic!("attache-sidecar could not bind free ports in 5 tries; last:\n{last_output}")
    }

    /// `http://127.0.0.1:PORT` of integration `index` (integrations sorted by name).
    pub fn url(&self, index: usize) -> String {
        format!("http://{}", self.addr(index))
    }

    pub fn addr(&self, index: usize) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.first_port + index as u16))
    }

    /// GET `path` on integration `index`'s listener, as the app would; panics if no response
    /// came (the sidecar always answers, with its own error if need be).
    pub async fn get(&self, index: usize, path: &str) -> Response {
        let url = format!("{}{path}", self.url(index));
        crate::client::get(&url)
            .await
            .unwrap_or_else(|e| panic!("no response for {url}: {e:#}"))
    }

    /// `http://ADMIN` + `path`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin_addr)
    }

    /// The `/metrics` text; panics unless it answers 200.
    pub async fn metrics(&self) -> String {
        let resp = HttpClient::new()
            .with_timeout(Duration::from_secs(10))
            .get(&self.admin_url("/metrics"))
            .await
            .expect("GET /metrics");
        assert_eq!(resp.status, 200, "/metrics: {}", resp.text());
        resp.text()
    }

    /// The value of the series `name{labels}` (exact label set), if exported.
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        metric_value(&self.metrics().await, name, labels)
    }

    /// Polls `/metrics` until `name{labels}` reaches `at_least`; returns when it did, or the
    /// last value seen after `timeout`.
    pub async fn wait_metric(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        at_least: f64,
        timeout: Duration,
    ) -> Result<Instant, Option<f64>> {
        let deadline = Instant::now() + timeout;
        loop {
            let value = self.metric(name, labels).await;
            if value.is_some_and(|v| v >= at_least) {
                return Ok(Instant::now());
            }
            if Instant::now() >= deadline {
                return Err(value);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Everything the sidecar wrote to stdout and stderr so far.
    pub fn output(&self) -> String {
        self.proc.output()
    }

    /// Waits until the output contains `needle`: output is read from a pipe by another
    /// thread, so a line the sidecar wrote a moment ago may not have been captured yet.
    pub async fn wait_for_output(&self, needle: &str, timeout: Duration) -> anyhow::Result<()> {
        self.proc.wait_for_output(needle, timeout).await
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// The sidecar's current and peak resident memory.
    pub fn memory(&self) -> Memory {
        proc_memory(self.pid()).expect("sidecar has a /proc status")
    }

    pub fn sigterm(&self) {
        self.proc.sigterm();
    }

    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.proc.wait_exit(timeout).await
    }

    pub fn try_status(&mut self) -> Option<ExitStatus> {
        self.proc.try_status()
    }
}

/// `run SOURCE... --first-port P --proxy-addr PROXY --admin-addr ADMIN EXTRA...`
fn run_args(
    source: &[OsString],
    first_port: u16,
    proxy_addr: SocketAddr,
    admin_addr: SocketAddr,
    extra: &[&str],
) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["run".into()];
    args.extend(source.iter().cloned());
    args.extend(
        [
            "--first-port".to_string(),
            first_port.to_string(),
            "--proxy-addr".to_string(),
            proxy_addr.to_string(),
            "--admin-addr".to_string(),
            admin_addr.to_string(),
        ]
        .map(OsString::from),
    );
    args.extend(extra.iter().map(OsString::from));
    args
}

/// `(first integration port, proxy port, admin port)`, all distinct and free a moment ago.
fn pick_ports(integrations: usize) -> (u16, u16, u16) {
    let n = u16::try_from(integrations.max(1)).expect("few integrations");
    loop {
        let first = free_port_range(n);
        let others = free_ports(2);
        if others.iter().all(|p| !(first..first + n).contains(p)) {
            return (first, others[0], others[1]);
        }
    }
}

/// Polls `/readyz` until 200 (Ok), the process exits (Err(Some)), or `timeout` (Err(None)).
async fn wait_ready(
    proc: &mut Proc,
    admin: SocketAddr,
    timeout: Duration,
) -> Result<(), Option<ExitStatus>> {
    let url = format!("http://{admin}/readyz");
    let client = HttpClient::new().with_timeout(Duration::from_secs(2));
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = proc.try_status() {
            proc.wait_exit(Duration::from_secs(1)).await;
            return Err(Some(status));
        }
        if let Ok(r) = client.get(&url).await {
            if r.status == 200 {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            return Err(None);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `VmRSS` and `VmHWM` of `pid`, from `/proc/<pid>/status`.
pub fn proc_memory(pid: u32) -> Option<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status.lines().find_map(|line| {
            let rest = line.strip_prefix(name)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse::<u64>().ok()
        })
    };
    Some(Memory {
        rss_kib: field("VmRSS")?,
        hwm_kib: field("VmHWM")?,
    })
}

// === Assertions ===

/// Asserts that `resp` is an error the sidecar made itself (README, "Errors the sidecar makes itself"): `status`,
/// `x-attache-error: code`, and the JSON body naming the code and `integration`.
pub fn assert_sidecar_error_for(resp: &Response, status: u16, code: &str, integration: &str) {
    assert_eq!(
        (resp.status, resp.header("x-attache-error")),
        (status, Some(code)),
        "expected the sidecar's {status} {code}; got {} with headers {:?}: {}",
        resp.status,
        resp.headers,
        resp.text()
    );
    let body = resp.json();
    assert_eq!(body["error"], code, "{body}");
    assert_eq!(body["integration"], integration, "{body}");
    assert!(body["message"].is_string(), "{body}");
}

// === Metrics text ===

/// The value of series `name` with exactly `labels` in Prometheus/OpenMetrics text.
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut want: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    want.sort();
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .find_map(|line| {
            let (series, value) = split_series(line)?;
            let (series_name, mut series_labels) = parse_series(series)?;
            series_labels.sort();
            (series_name == name && series_labels == want)
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
}

/// `name{labels} value` → (`name{labels}`, `value`), ignoring a trailing timestamp.
fn split_series(line: &str) -> Option<(&str, &str)> {
    let end_of_series = match line.find('{') {
        Some(open) => open + line[open..].rfind('}')? + 1,
        None => line.find(' ')?,
    };
    let (series, rest) = line.split_at(end_of_series);
    Some((series, rest.split_whitespace().next()?))
}

/// `name{k="v",...}` → (name, [(k, v)]); label values may contain escaped quotes.
fn parse_series(series: &str) -> Option<(&str, Vec<(String, String)>)> {
    let Some(open) = series.find('{') else {
        return Some((series, Vec::new()));
    };
    let name = &series[..open];
    let body = series[open + 1..].strip_suffix('}')?;
    let mut labels = Vec::new();
    let mut chars = body.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if chars.next() != Some('"') {
            return None;
        }
        let mut value = String::new();
        loop {
            match chars.next()? {
                '\\' => value.push(chars.next()?),
                '"' => break,
                c => value.push(c),
            }
        }
        labels.push((key.trim().to_string(), value));
    }
    Some((name, labels))
}

// === Background traffic ===

/// Requests sent in a loop by background workers until stopped, each result recorded: the
/// "continuous traffic" of reload tests.
pub struct Traffic {
    stop: Arc<AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<Vec<Sent>>>,
}

/// One request of a [`Traffic`] loop.
#[derive(Clone, Debug)]
pub struct Sent {
    pub started: Instant,
    pub finished: Instant,
    /// The status, or why no response came.
    pub outcome: Result<u16, String>,
    /// The response body, for failures (first 500 bytes).
    pub body: String,
}

impl Sent {
    pub fn ok(&self) -> bool {
        self.outcome == Ok(200)
    }
}

impl Traffic {
    /// `workers` loops, each sending GET `url` on its own keep-alive connection with `pause`
    /// between requests (so the machine stays responsive and the upstream's log stays small).
    pub fn start(url: &str, workers: usize, pause: Duration) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let workers = (0..workers)
            .map(|_| {
                let stop = stop.clone();
                let url = url.to_string();
                tokio::spawn(async move {
                    let client = HttpClient::new().with_timeout(Duration::from_secs(20));
                    let mut sent = Vec::new();
                    while !stop.load(Ordering::SeqCst) {
                        let started = Instant::now();
                        let result = client.get(&url).await;
                        let finished = Instant::now();
                        let (outcome, body) = match result {
                            Ok(r) => {
                                let body = if r.status == 200 {
                                    String::new()
                                } else {
                                    r.text().chars().take(500).collect()
                                };
                                (Ok(r.status), body)
                            }
                            Err(e) => (Err(format!("{e:#}")), String::new()),
                        };
                        sent.push(Sent {
                            started,
                            finished,
                            outcome,
                            body,
                        });
                        tokio::time::sleep(pause).await;
                    }
                    sent
                })
            })
            .collect();
        Traffic { stop, workers }
    }

    /// Stops the workers and returns every request they sent.
    pub async fn stop(self) -> Vec<Sent> {
        self.stop.store(true, Ordering::SeqCst);
        let mut all = Vec::new();
        for w in self.workers {
            all.extend(w.await.expect("traffic worker panicked"));
        }
        all.sort_by_key(|s| s.started);
        all
    }
}

/// Panics listing the failed requests, if any; returns how many were sent.
pub fn assert_no_failures(sent: &[Sent]) -> usize {
    let failed: Vec<&Sent> = sent.iter().filter(|s| !s.ok()).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed; first ones: {:#?}",
        failed.len(),
        sent.len(),
        &failed[..failed.len().min(5)]
    );
    sent.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP attache_config_reloads Configuration reloads, by result\n\
        # TYPE attache_config_reloads counter\n\
        attache_config_reloads_total{result=\"success\"} 3\n\
        attache_config_reloads_total{result=\"failure\"} 1\n\
        attache_requests_total{integration=\"a\",code=\"200\"} 12\n\
        attache_inflight_requests{integration=\"a\"} 0\n\
        attache_odd{v=\"x\\\"}y\"} 2.5\n\
        plain 7\n\
        # EOF\n";

    #[test]
    fn metric_value_matches_exact_label_sets() {
        let v = |name, labels: &[(&str, &str)]| metric_value(TEXT, name, labels);
        assert_eq!(
            v("attache_config_reloads_total", &[("result", "failure")]),
            Some(1.0)
        );
        assert_eq!(
            v(
                "attache_requests_total",
                &[("code", "200"), ("integration", "a")]
            ),
            Some(12.0)
        );
        assert_eq!(v("attache_requests_total", &[("integration", "a")]), None);
        assert_eq!(v("attache_odd", &[("v", "x\"}y")]), Some(2.5));
        assert_eq!(v("plain", &[]), Some(7.0));
        assert_eq!(v("missing", &[]), None);
    }

    #[test]
    fn config_dir_publish_swaps_data_atomically() {
        let mut dir = ConfigDir::new();
        let files = |v: &str| {
            BTreeMap::from([
                ("config.json".to_string(), b"{}".to_vec()),
                ("auth-credential".to_string(), v.as_bytes().to_vec()),
            ])
        };
        dir.publish("svc", &files("one"));
        let cred = dir.path().join("svc/auth-credential");
        assert_eq!(std::fs::read_to_string(&cred).unwrap(), "one");
        dir.publish("svc", &files("two"));
        assert_eq!(std::fs::read_to_string(&cred).unwrap(), "two");
        assert!(std::fs::symlink_metadata(&cred)
            .unwrap()
            .file_type()
            .is_symlink());
        let generations = std::fs::read_dir(dir.path().join("svc"))
            .unwrap()
            .filter(|e| {
                let n = e.as_ref().unwrap().file_name();
                let n = n.to_string_lossy();
                n.starts_with("..") && n != "..data"
            })
            .count();
        assert_eq!(generations, 1, "the previous generation is removed");
    }

    #[test]
    fn write_atomic_replaces_content() {
        let dir = TempDir::new("atomic");
        let p = dir.path().join("a/b");
        write_atomic(&p, "1");
        write_atomic(&p, "2");
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "2");
        assert_eq!(std::fs::read_dir(dir.path().join("a")).unwrap().count(), 1);
    }

    #[test]
    fn render_volume_holds_config_and_secret_files() {
        let doc = xint(
            "svc",
            json!({
                "upstream": {"url": "https://localhost:8443/v1"},
                "auth": {"bearer": {"secretKeyRef": {"name": "tok", "key": "token"}}},
            }),
        );
        let files = render_volume(&doc, &SecretFiles::new().with("tok", "token", "abc\n"));
        let config: Value = serde_json::from_slice(&files["config.json"]).unwrap();
        assert_eq!(config["name"], "svc");
        assert_eq!(files["auth-credential"], b"abc");
    }
}
