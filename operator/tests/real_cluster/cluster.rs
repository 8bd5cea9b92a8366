//! The control plane (started and stopped by `scripts/real-apiserver.sh`), the chart installed
//! into it, and the operator replicas running against it.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use k8s_openapi::{
    api::core::v1::{Namespace, Secret, ServiceAccount},
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    api::{DynamicObject, Patch, PatchParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
    discovery::{Discovery, Scope},
    Api, Client, Config, ResourceExt,
};
use serde_json::{json, Value};

use crate::replica::Replica;

/// Where the chart is installed, as `helm install -n attache-system attache`.
pub const NAMESPACE: &str = "attache-system";
pub const RELEASE: &str = "attache";
/// The webhook Service's DNS name: the API server resolves it to 127.0.0.1 (see the script).
/// The field manager of everything the suite applies as the "user".
pub const MANAGER: &str = "attache-e2e";

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn script() -> PathBuf {
    root().join("scripts/real-apiserver.sh")
}

/// The folder of the cached kube-apiserver build, if there is one.
pub fn built_control_plane() -> Option<PathBuf> {
    let out = Command::new("bash")
        .arg(script())
        .arg("built")
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

pub struct Cluster {
    /// Holds certificates, kubeconfigs, etcd's data, the API server's and audit logs.
    pub dir: tempfile::TempDir,
    pub admin: Client,
    pub admin_kubeconfig: PathBuf,
    /// A kubeconfig with the token of the chart's ServiceAccount: what the operator runs as.
    pub operator_kubeconfig: PathBuf,
    /// The chart's objects (helm template), for the operator's arguments and environment.
    pub chart: Vec<Value>,
    /// The ClusterIP of the chart's webhook Service: a loopback address (see the script),
    /// where the replica that serves the webhook listens on :443.
    pub webhook_ip: std::net::IpAddr,
    /// Replicas of the operator; the first serves the webhook at `webhook_ip`:443 (what the
    /// Service would forward to).
    pub replicas: Vec<Replica>,
    stopped: bool,
}

impl Cluster {
    /// Starts the control plane, installs the CRD and the chart, starts one operator replica.
    pub async fn start() -> anyhow::Result<Cluster> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::Builder::new()
            .prefix("attache-real-cluster-")
            .tempdir()?;
        let t = Instant::now();
        // The CRD goes in before the controller manager starts, as on a cluster where it was
        // installed before the operator: the garbage collector watches its kind from the start.
        let crd_file = dir.path().join("crd.json");
        std::fs::write(
            &crd_file,
            serde_json::to_vec(&attache_operator::crd::crd_without_cel())?,
        )?;
        let status = Command::new("bash")
            .arg(script())
            .arg("start")
            .arg(dir.path())
            .arg(&crd_file)
            .stdout(Stdio::null())
            .status()
            .context("run scripts/real-apiserver.sh start")?;
        if !status.success() {
            dump_logs(dir.path());
            let _ = Command::new("bash")
                .arg(script())
                .arg("stop")
                .arg(dir.path())
                .status();
            bail!("scripts/real-apiserver.sh start failed ({status})");
        }
        let admin = match client_from(&dir.path().join("admin.kubeconfig")).await {
            Ok(a) => a,
            Err(e) => {
                // No Cluster yet to stop it on drop: stop what the script started here.
                let _ = Command::new("bash")
                    .arg(script())
                    .arg("stop")
                    .arg(dir.path())
                    .status();
                return Err(e);
            }
        };
        let mut cluster = Cluster {
            admin_kubeconfig: dir.path().join("admin.kubeconfig"),
            operator_kubeconfig: dir.path().join("operator.kubeconfig"),
            admin,
            dir,
            chart: Vec::new(),
            webhook_ip: std::net::Ipv4Addr::LOCALHOST.into(),
            replicas: Vec::new(),
            stopped: false,
        };
        println!(
            "real_cluster: etcd, kube-apiserver, kube-controller-manager up in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        cluster.install().await?;
        let replica = Replica::spawn(&cluster, "attache-operator-a", true)?;
        cluster.replicas.push(replica);
        Ok(cluster)
    }

    /// What `helm install` and `kubectl apply` of the CRD do: the CRD (without CEL, which
    /// 1.20 refuses), the release namespace, every object the chart renders that this server
    /// serves, then the kubeconfig of the chart's ServiceAccount.
    async fn install(&mut self) -> anyhow::Result<()> {
        let crds: Api<CustomResourceDefinition> = Api::all(self.admin.clone());
        let crd = attache_operator::crd::crd_without_cel();
        let name = crd.name_any();
        crds.patch(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&crd),
        )
        .await
        .context("install the CRD")?;
        eventually(
            "the CRD to be Established",
            Duration::from_secs(30),
            async || {
                let c = crds.get(&name).await.ok()?;
                c.status?
                    .conditions?
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
                    .then_some(())
            },
        )
        .await;
        self.create_namespace(NAMESPACE, &[]).await?;

        self.chart = helm_template(&[])?;
        let skipped = apply_all(&self.admin, &self.chart).await?;
        for s in skipped {
            println!("real_cluster: not installed (this API server does not serve it): {s}");
        }

        let services: Api<k8s_openapi::api::core::v1::Service> =
            Api::namespaced(self.admin.clone(), NAMESPACE);
        let svc = services.get(RELEASE).await.context("the chart's Service")?;
        self.webhook_ip = svc
            .spec
            .and_then(|s| s.cluster_ip)
            .context("the chart's Service has no ClusterIP")?
            .parse()
            .context("the chart's Service ClusterIP")?;

        // The tokens controller gives the ServiceAccount a token Secret (1.20 behaviour).
        let sa_name = RELEASE;
        let sas: Api<ServiceAccount> = Api::namespaced(self.admin.clone(), NAMESPACE);
        let secrets: Api<Secret> = Api::namespaced(self.admin.clone(), NAMESPACE);
        let token = eventually(
            "the ServiceAccount's token Secret",
            Duration::from_secs(30),
            async || {
                let sa = sas.get(sa_name).await.ok()?;
                for r in sa.secrets.iter().flatten() {
                    let s = secrets.get(r.name.as_deref()?).await.ok()?;
                    if let Some(t) = s.data.as_ref().and_then(|d| d.get("token")) {
                        return String::from_utf8(t.0.clone()).ok();
                    }
                }
                None
            },
        )
        .await;
        let admin_cfg = std::fs::read_to_string(&self.admin_kubeconfig)?;
        let server = admin_cfg
            .lines()
            .find_map(|l| l.trim().strip_prefix("server: "))
            .context("server in the admin kubeconfig")?
            .to_string();
        let ca = self.dir.path().join("ca.crt");
        std::fs::write(
            &self.operator_kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: real\n  cluster:\n    server: {server}\n    certificate-authority: {}\nusers:\n- name: operator\n  user:\n    token: {token}\ncontexts:\n- name: real\n  context: {{cluster: real, user: operator, namespace: {NAMESPACE}}}\ncurrent-context: real\n",
                ca.display()
            ),
        )?;
        Ok(())
    }

    pub async fn create_namespace(
        &self,
        name: &str,
        labels: &[(&str, &str)],
    ) -> anyhow::Result<()> {
        let api: Api<Namespace> = Api::all(self.admin.clone());
        let labels: serde_json::Map<String, Value> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        let ns: Namespace = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": labels},
        }))?;
        match api.create(&PostParams::default(), &ns).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
            Err(e) => Err(e).with_context(|| format!("create namespace {name}")),
        }
    }

    /// The replica that currently holds the Lease, by its `attache_operator_leader` gauge.
    pub async fn leaders(&self) -> Vec<usize> {
        let mut out = Vec::new();
        for (i, r) in self.replicas.iter().enumerate() {
            if r.is_leader().await {
                out.push(i);
            }
        }
        out
    }

    /// Prints the tails of the control plane's logs (for a failed run).
    pub fn dump_logs(&self) {
        dump_logs(self.dir.path());
    }

    /// The audit log's events (JSON lines) for requests by `user`.
    pub fn audit_events(&self, user: &str) -> Vec<Value> {
        let text = std::fs::read_to_string(self.dir.path().join("audit.log")).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| e["user"]["username"] == user)
            .collect()
    }

    pub async fn stop(&mut self) {
        // Replicas a scenario already stopped are left alone.
        for r in &mut self.replicas {
            if r.proc.try_status().is_none() {
                r.sigterm();
            }
        }
        for r in &mut self.replicas {
            r.wait_exit(Duration::from_secs(10)).await;
        }
        self.replicas.clear();
        let _ = Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg(self.dir.path())
            .status();
        self.stopped = true;
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !self.stopped {
            self.replicas.clear();
            let _ = Command::new("bash")
                .arg(script())
                .arg("stop")
                .arg(self.dir.path())
                .status();
        }
    }
}

pub async fn client_from(kubeconfig: &Path) -> anyhow::Result<Client> {
    let kc = Kubeconfig::read_from(kubeconfig)?;
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

fn dump_logs(dir: &Path) {
    for f in ["apiserver.log", "controller-manager.log", "etcd.log"] {
        let path = dir.join(f);
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        eprintln!("=== last lines of {}", path.display());
        for l in tail.iter().rev() {
            eprintln!("{l}");
        }
    }
}

/// `helm template attache charts/attache -n attache-system` (no CRDs: installed on their own).
pub fn helm_template(sets: &[&str]) -> anyhow::Result<Vec<Value>> {
    let helm = which_helm();
    let mut cmd = Command::new(&helm);
    cmd.args(["template", RELEASE])
        .arg(root().join("charts/attache"))
        .args(["--namespace", NAMESPACE]);
    for s in sets {
        cmd.args(["--set", s]);
    }
    let out = cmd
        .output()
        .with_context(|| format!("run {}", helm.display()))?;
    if !out.status.success() {
        bail!("helm template: {}", String::from_utf8_lossy(&out.stderr));
    }
    let docs: Vec<Value> = serde_saphyr::from_multiple(&String::from_utf8(out.stdout)?)?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

fn which_helm() -> PathBuf {
    let local = root().join(".tools/bin/helm");
    if local.exists() {
        return local;
    }
    let status = Command::new("bash")
        .arg(root().join("scripts/install-helm.sh"))
        .status();
    if matches!(status, Ok(s) if s.success()) {
        local
    } else {
        PathBuf::from("helm")
    }
}

/// Server-side applies every object this API server serves; returns the ones it does not
/// (e.g. policy/v1 PodDisruptionBudget before 1.21).
pub async fn apply_all(client: &Client, docs: &[Value]) -> anyhow::Result<Vec<String>> {
    let discovery = Discovery::new(client.clone()).run().await?;
    let mut skipped = Vec::new();
    for doc in docs {
        let obj: DynamicObject = serde_json::from_value(doc.clone())?;
        let tm = obj
            .types
            .clone()
            .context("an object without apiVersion/kind")?;
        let name = obj.name_any();
        let Some((ar, caps)) = discovery.resolve_typemeta(&tm) else {
            skipped.push(format!("{} {}/{name}", tm.api_version, tm.kind));
            continue;
        };
        let api: Api<DynamicObject> = match caps.scope {
            Scope::Namespaced => Api::namespaced_with(
                client.clone(),
                obj.namespace().as_deref().unwrap_or("default"),
                &ar,
            ),
            Scope::Cluster => Api::all_with(client.clone(), &ar),
        };
        api.patch(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&obj),
        )
        .await
        .with_context(|| format!("apply {} {name}", tm.kind))?;
    }
    Ok(skipped)
}

/// Polls `f` every 200 ms until it gives a value; panics naming `what` after `timeout`.
pub async fn eventually<T>(
    what: &str,
    timeout: Duration,
    mut f: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
