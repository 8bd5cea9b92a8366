//! Self-managed serving certificate: the Kubernetes side (a thin shell around the pure
//! functions of [`super`]).
//!
//! Each replica runs [`SelfManaged::run`]: read the Secret; if it is missing, unreadable or
//! due for renewal, issue new material, trust it (write the `caBundle`) and then publish it
//! (write the Secret, guarded by its resourceVersion so that concurrent replicas agree on one
//! winner); make sure the MutatingWebhookConfiguration trusts the Secret's CA; serve the
//! Secret's certificate. It runs again when the Secret or the webhook configuration changes
//! (a `helm upgrade` that resets `caBundle` is repaired at once) and when renewal falls due.
//!
//! RBAC: `secrets` get/create/update/list/watch in the operator's namespace;
//! `mutatingwebhookconfigurations` get/list/watch/patch.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use futures::{stream, FutureExt, StreamExt};
use k8s_openapi::{
    api::{admissionregistration::v1::MutatingWebhookConfiguration, core::v1::Secret},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{
    api::{Api, Patch, PatchParams, PostParams},
    runtime::{watcher, WatchStreamExt},
    Client,
};

use super::{
    ca_bundle_patch, issue, renewal, service_dns_names, CertError, CertPolicy, CertResolver,
    DueReason, Renewal, TlsMaterial,
};
use crate::contract;

const FIELD_MANAGER: &str = "attache-operator-webhook-certs";
/// Re-check at least this often, whatever the watches say.
const RESYNC: Duration = Duration::from_secs(5 * 60);
const RETRY_AFTER_ERROR: Duration = Duration::from_secs(10);

/// Where the self-managed certificate lives and what it is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelfManaged {
    /// The operator's namespace (the Secret's and the Service's).
    pub namespace: String,
    pub secret_name: String,
    /// The webhook Service: the certificate's DNS names.
    pub service_name: String,
    /// The MutatingWebhookConfiguration whose `caBundle` is kept.
    pub webhook_configuration: String,
    pub policy: CertPolicy,
}

/// What one reconciliation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reconciled {
    /// Why new material was issued, if it was.
    pub issued: Option<DueReason>,
    /// Whether the webhook configuration's `caBundle` was written.
    pub ca_bundle_patched: bool,
    /// Whether the served certificate changed.
    pub served_changed: bool,
    /// When renewal falls due.
    pub renew_at: SystemTime,
}

// === impl SelfManaged ===

impl SelfManaged {
    pub fn dns_names(&self) -> Vec<String> {
        service_dns_names(&self.service_name, &self.namespace)
    }

    /// One pass: make sure the Secret holds servable, current material, the webhook trusts
    /// it, and the resolver serves it.
    pub async fn reconcile(
        &self,
        client: &Client,
        resolver: &CertResolver,
        now: SystemTime,
    ) -> Result<Reconciled, CertError> {
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &self.namespace);
        let dns_names = self.dns_names();
        let existing = secrets.get_opt(&self.secret_name).await?;
        let current = existing.as_ref().map(|s| {
            let empty = Default::default();
            TlsMaterial::from_secret_data(s.data.as_ref().unwrap_or(&empty))
        });
        let (previous, due) = match current {
            None => (None, Some(DueReason::Missing)),
            Some(Err(e)) => (None, Some(DueReason::Unreadable(e.to_string()))),
            Some(Ok(m)) => match renewal(&m, &dns_names, now, &self.policy) {
                Renewal::NotDue { .. } => (Some(m), None),
                Renewal::Due(reason) => (Some(m), Some(reason)),
            },
        };

        let (material, ca_bundle_patched) = match (&due, previous) {
            (None, Some(m)) => {
                let patched = self.ensure_ca_bundle(client, &m.ca_bundle).await?;
                (m, patched)
            }
            (_, previous) => {
                let fresh = issue(previous.as_ref(), &dns_names, now, &self.policy)?;
                // Trust before serving: the API server must accept the new CA before any
                // replica presents a certificate it signed.
                let patched = self.ensure_ca_bundle(client, &fresh.ca_bundle).await?;
                self.publish(&secrets, existing, &fresh).await?;
                (fresh, patched)
            }
        };
        let served_changed = resolver.set_pem(material.cert.as_bytes(), material.key.as_bytes())?;
        let renew_at = match renewal(&material, &dns_names, now, &self.policy) {
            Renewal::NotDue { renew_at } => renew_at,
            Renewal::Due(_) => now + RETRY_AFTER_ERROR,
        };
        Ok(Reconciled {
            issued: due,
            ca_bundle_patched,
            served_changed,
            renew_at,
        })
    }

    /// Reconciles until dropped: when the Secret or the webhook configuration changes, when
    /// renewal falls due, and every few minutes. Errors are logged and retried; the
    /// certificate served so far stays.
    pub async fn run(self, client: Client, resolver: Arc<CertResolver>) {
        let by_name =
            |name: &str| watcher::Config::default().fields(&format!("metadata.name={name}"));
        let secret_events = watcher(
            Api::<Secret>::namespaced(client.clone(), &self.namespace),
            by_name(&self.secret_name),
        )
        .default_backoff()
        .map(|_| ());
        let config_events = watcher(
            Api::<MutatingWebhookConfiguration>::all(client.clone()),
            by_name(&self.webhook_configuration),
        )
        .default_backoff()
        .map(|_| ());
        let mut triggers = stream::select(secret_events, config_events).boxed();
        loop {
            let now = SystemTime::now();
            let wait = match self.reconcile(&client, &resolver, now).await {
                Ok(r) => {
                    if let Some(reason) = &r.issued {
                        tracing::info!(secret = %self.secret_name, ?reason, "webhook serving certificate issued");
                    }
                    if r.ca_bundle_patched {
                        tracing::info!(configuration = %self.webhook_configuration, "caBundle updated");
                    }
                    if r.served_changed {
                        tracing::info!("serving the webhook certificate from the Secret");
                    }
                    r.renew_at
                        .duration_since(now)
                        .unwrap_or_default()
                        .min(RESYNC)
                }
                Err(CertError::Conflict(what)) => {
                    tracing::debug!(%what, "lost a race to another replica");
                    Duration::from_secs(1)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "webhook certificate not reconciled");
                    RETRY_AFTER_ERROR
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                event = triggers.next() => {
                    if event.is_none() {
                        tokio::time::sleep(wait).await;
                    }
                    // A watch delivers bursts (a relist, our own write): take them as one.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    while triggers.next().now_or_never().flatten().is_some() {}
                }
            }
        }
    }

    /// Writes `material` to the Secret; a concurrent writer makes this fail with
    /// [`CertError::Conflict`].
    async fn publish(
        &self,
        secrets: &Api<Secret>,
        existing: Option<Secret>,
        material: &TlsMaterial,
    ) -> Result<(), CertError> {
        let pp = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PostParams::default()
        };
        let result = match existing {
            None => {
                let secret = Secret {
                    metadata: ObjectMeta {
                        name: Some(self.secret_name.clone()),
                        namespace: Some(self.namespace.clone()),
                        labels: Some(
                            [
                                (contract::MANAGED_BY_LABEL, contract::MANAGED_BY),
                                ("app.kubernetes.io/component", "webhook"),
                            ]
                            .into_iter()
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .collect(),
                        ),
                        ..ObjectMeta::default()
                    },
                    type_: Some("kubernetes.io/tls".into()),
                    data: Some(material.to_secret_data()),
                    ..Secret::default()
                };
                secrets.create(&pp, &secret).await
            }
            Some(mut secret) => {
                // resourceVersion stays: the write fails if another replica wrote first.
                secret.data = Some(material.to_secret_data());
                secret.string_data = None;
                secrets.replace(&self.secret_name, &pp, &secret).await
            }
        };
        match result {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.is_conflict() || s.is_already_exists() => Err(
                CertError::Conflict(format!("Secret {}/{}", self.namespace, self.secret_name)),
            ),
            Err(e) => Err(e.into()),
        }
    }

    /// Makes every webhook of the configuration trust `bundle`; returns whether it patched.
    /// A missing configuration is not an error (it may be installed after the operator).
    async fn ensure_ca_bundle(&self, client: &Client, bundle: &str) -> Result<bool, CertError> {
        let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
        let Some(config) = api.get_opt(&self.webhook_configuration).await? else {
            tracing::warn!(
                configuration = %self.webhook_configuration,
                "MutatingWebhookConfiguration not found: the API server cannot call the injector until it exists"
            );
            return Ok(false);
        };
        let Some(patch) = ca_bundle_patch(&config, bundle) else {
            return Ok(false);
        };
        let pp = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        api.patch(&self.webhook_configuration, &pp, &Patch::Strategic(patch))
            .await?;
        Ok(true)
    }
}
