//! `attache-operator check`: is this cluster's installation healthy? One screen, one line per
//! question, exit status 1 when any answer is a failure (like `linkerd check`).
//!
//! Everything is read from the cluster of the current kubeconfig (or the in-cluster service
//! account): the operator's Deployment gives the names the chart chose (Lease, webhook
//! configuration, Service, Secret, ServiceAccount), so a release installed under another name
//! or values is checked as it is.

mod install;
mod report;
mod webhook;

use std::time::Duration;

use clap::Args;
use k8s_openapi::api::apps::v1::Deployment;
use kube::{Api, Client};

pub use report::{Line, Report, Verdict};

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The namespace the chart was installed in.
    #[arg(
        short = 'n',
        long,
        value_name = "NAMESPACE",
        default_value = "attache-system"
    )]
    pub namespace: String,
    /// The operator's Deployment (the chart names it after the release).
    #[arg(long, value_name = "NAME", default_value = "attache")]
    pub deployment: String,
    /// Longest wait for any one API call.
    #[arg(long, value_name = "SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub timeout: u64,
}

/// What the chart's Deployment says about the installation: the names the checks look for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installation {
    pub namespace: String,
    pub deployment: String,
    pub service_account: String,
    pub lease: String,
    pub webhook_service: String,
    pub webhook_configuration: String,
    pub webhook_secret: String,
}

/// Runs every check against the current kubeconfig's cluster.
pub async fn run(args: &CheckArgs) -> Report {
    let timeout = Duration::from_secs(args.timeout);
    let mut report = Report::default();
    let client = match Client::try_default().await {
        Ok(c) => c,
        Err(e) => {
            report.push(Line::fail(
                "Kubernetes API",
                format!("no usable kubeconfig or in-cluster service account: {e}"),
            ));
            return report;
        }
    };
    let version = match tokio::time::timeout(timeout, client.apiserver_version()).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            report.push(Line::fail("Kubernetes API", format!("unreachable: {e}")));
            return report;
        }
        Err(_) => {
            report.push(Line::fail(
                "Kubernetes API",
                format!("no answer within {timeout:?}"),
            ));
            return report;
        }
    };
    report.header = format!(
        "attache-operator {} check, Kubernetes {}",
        env!("CARGO_PKG_VERSION"),
        version.git_version,
    );

    let ctx = install::Ctx {
        client: client.clone(),
        timeout,
    };
    let crd = install::crd(&ctx).await;
    let crd_installed = !crd.detail.starts_with(install::CRD_MISSING);
    report.push(crd);
    let installation = match install::installation(&ctx, args).await {
        Ok(i) => i,
        Err(line) => {
            report.push(line);
            return report;
        }
    };
    report.push(install::rbac(&ctx, &installation).await);
    report.push(install::leader(&ctx, &installation).await);
    let config = webhook::configuration(&ctx, &installation).await;
    let bundle = config.ca_bundle.clone();
    report.push(config.line);
    report.push(webhook::certificate(&ctx, &installation, bundle.as_deref()).await);
    report.push(webhook::answers(&ctx, &installation).await);
    report.push(install::native_sidecars(&version));
    if crd_installed {
        report.extend(install::integrations(&ctx).await);
    }
    report
}

/// `--key=value` arguments of the operator container, as the chart writes them.
fn container_args(deployment: &Deployment) -> Vec<(String, String)> {
    let spec = deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref());
    let Some(container) = spec.and_then(|s| {
        s.containers.iter().find(|c| {
            c.args
                .as_ref()
                .is_some_and(|a| a.first().map(String::as_str) == Some("run"))
        })
    }) else {
        return Vec::new();
    };
    container
        .args
        .iter()
        .flatten()
        .filter_map(|a| {
            let (k, v) = a.strip_prefix("--")?.split_once('=')?;
            Some((k.to_string(), v.to_string()))
        })
        .collect()
}

impl Installation {
    /// The names from the Deployment's arguments; the operator's own defaults where an
    /// argument is absent.
    fn from_deployment(namespace: &str, deployment: &Deployment) -> Installation {
        let args = container_args(deployment);
        let arg = |key: &str, default: &str| -> String {
            args.iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| default.to_string())
        };
        let name = deployment.metadata.name.clone().unwrap_or_default();
        let service_account = deployment
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into());
        Installation {
            namespace: namespace.to_string(),
            deployment: name,
            service_account,
            lease: arg("lease-name", "attache-operator"),
            webhook_service: arg("webhook-service", "attache"),
            webhook_configuration: arg("webhook-configuration", "attache"),
            webhook_secret: arg("webhook-secret", "attache-webhook-tls"),
        }
    }
}

/// `api.get_opt(name)` within the check's timeout, errors as text.
async fn get_opt<K>(api: &Api<K>, name: &str, timeout: Duration) -> Result<Option<K>, String>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match tokio::time::timeout(timeout, api.get_opt(name)).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

#[cfg(test)]
mod tests;
