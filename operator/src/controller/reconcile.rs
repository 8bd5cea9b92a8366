//! One reconciliation: the I/O around the pure parts.
//!
//! 1. Snapshot the referenced Secrets/ConfigMaps from the stores and render (api crate).
//! 2. Server-side apply the generated Secret, then the ConfigMap (so a config never names
//!    secret files that are not there yet), skipping objects already up to date. Nothing is
//!    written when rendering fails: the pods keep their last good configuration.
//! 3. Server-side apply the status subresource (same field manager) when the status changed;
//!    publish an Event when `Ready` changed.

use std::{fmt::Debug, sync::Arc, time::Instant};

use attache_api::{render, ExternalIntegration, RenderOptions};
use k8s_openapi::{jiff::Timestamp, NamespaceResourceScope};
use kube::{
    api::{Patch, PatchParams},
    runtime::{
        controller::Action,
        reflector::{ObjectRef, Store},
    },
    Api, Resource, ResourceExt,
};
use serde::{de::DeserializeOwned, Serialize};

use super::{
    desired::{self, GeneratedKind, Ownership, Seen},
    events::Note,
    owned::OwnedCache,
    secret_source::Snapshot,
    status::{self, Observed, Outcome},
    ApiVerb, Context, Error,
};
use crate::contract::{self, FIELD_MANAGER};

/// The reconciler handed to the kube-runtime `Controller`.
pub async fn reconcile(xint: Arc<ExternalIntegration>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = reconcile_one(&xint, &ctx).await;
    let label = match &result {
        Ok(_) => "success",
        Err(e) => e.metric_label(),
    };
    ctx.metrics.reconciled(label, started.elapsed());
    if result.is_ok() {
        ctx.forget_failures(&ObjectRef::from_obj(&*xint));
    }
    result
}

async fn reconcile_one(xint: &ExternalIntegration, ctx: &Context) -> Result<Action, Error> {
    let namespace = xint
        .metadata
        .namespace
        .as_deref()
        .ok_or(Error::MissingMetadata("metadata.namespace"))?;
    let name = xint
        .metadata
        .name
        .as_deref()
        .ok_or(Error::MissingMetadata("metadata.name"))?;
    // The stores and pod counts fill as the controller runs; reading them before their first
    // list would report Secrets as missing and divide shared limits by too little.
    ctx.wait_ready().await;

    let share = ctx.pods.share(namespace, name);
    let result = match apply_generated(xint, namespace, share.divisor, ctx).await {
        // API failures: the status would most likely fail to write too; retry with backoff.
        Err(e) if e.reason().is_none() => return Err(e),
        r => r,
    };
    let outcome = match &result {
        Ok(not_after) => Outcome::Applied {
            client_certificate_not_after: *not_after,
        },
        Err(e) => Outcome::Failed(e),
    };
    let generated_name = contract::generated_name(name);
    let observed = Observed {
        generation: xint.metadata.generation,
        pods: share.pods,
        generated_name: &generated_name,
        now: Timestamp::now(),
    };
    let previous = xint.status.as_ref();
    let mut next = status::next_status(previous, outcome, &observed);
    crate::global::condition::apply(&mut next, &xint.spec, &ctx.settings.global, &observed);
    if previous != Some(&next) {
        let api: Api<ExternalIntegration> = Api::namespaced(ctx.client.clone(), namespace);
        api.patch_status(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(status::apply_patch(namespace, name, &next)),
        )
        .await
        .map_err(|source| Error::Api {
            verb: ApiVerb::ApplyStatus,
            what: format!("ExternalIntegration {namespace}/{name}"),
            source,
        })?;
    }
    if let Some(t) = status::transition(previous, &next) {
        let event = Note {
            warning: !t.ready,
            reason: t.reason,
            action: "Reconcile".into(),
            message: t.message,
        };
        // Events are a courtesy on top of the status: a failure to publish one is logged,
        // not retried.
        if let Err(e) = ctx.events.publish(&event, &xint.object_ref(&())).await {
            tracing::warn!(namespace, name, error = %e, "could not publish an Event");
        }
    }
    // A global limit's condition follows the operator's Redis check: look again soon.
    let resync = match crate::global::condition::applies(&xint.spec) {
        true => ctx.settings.resync.min(crate::global::CHECK_EVERY * 3),
        false => ctx.settings.resync,
    };
    result.map(|_| Action::requeue(resync))
}

/// Renders and applies; returns the client certificate's `notAfter`.
async fn apply_generated(
    xint: &ExternalIntegration,
    namespace: &str,
    divisor: u32,
    ctx: &Context,
) -> Result<Option<i64>, Error> {
    let uid = xint
        .metadata
        .uid
        .as_deref()
        .ok_or(Error::MissingMetadata("metadata.uid"))?;
    let snapshot = Snapshot::take(
        xint,
        namespace,
        &ctx.stores.referenced_secrets,
        &ctx.stores.referenced_config_maps,
    );
    let mut rendered = render(
        xint,
        &snapshot,
        RenderOptions {
            pods_sharing: divisor,
        },
    )?;
    if let Some(redis) = &ctx.settings.global.redis {
        attache_api::global::with_redis(&mut rendered, redis);
    }
    let desired = desired::desired(xint, &rendered)?;
    let secret = Generated {
        desired: &desired.secret,
        owned: &ctx.stores.owned_secrets,
        others: &ctx.stores.referenced_secrets,
    };
    let config_map = Generated {
        desired: &desired.config_map,
        owned: &ctx.stores.owned_config_maps,
        others: &ctx.stores.referenced_config_maps,
    };
    // Both are checked before either is written: a name taken by someone else's ConfigMap
    // must not leave a half-generated integration behind.
    let write_secret = secret.needs_apply(namespace, uid)?;
    let write_config_map = config_map.needs_apply(namespace, uid)?;
    if write_secret {
        secret.apply(ctx, namespace).await?;
    }
    if write_config_map {
        config_map.apply(ctx, namespace).await?;
    }
    Ok(rendered.client_certificate_not_after)
}

/// One generated object: what it should be, and the caches of what is.
struct Generated<'a, K: Resource<DynamicType = ()> + Clone + 'static> {
    desired: &'a K,
    /// Objects labelled as the operator's.
    owned: &'a OwnedCache<K>,
    /// Every other object of the kind (the referenced-objects cache): an `attache-NAME` here
    /// is someone else's.
    others: &'a Store<K>,
}

impl<K> Generated<'_, K>
where
    K: GeneratedKind<DynamicType = ()>
        + Resource<Scope = NamespaceResourceScope>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned
        + 'static,
{
    /// Whether the object must be applied: not when the cache shows it up to date. Refuses
    /// (`NameTaken`) to write over an object this integration does not control, so that the
    /// owner reference an apply would add can never let the garbage collector delete
    /// someone else's object. Reads only the caches: no API call.
    fn needs_apply(&self, namespace: &str, owner_uid: &str) -> Result<bool, Error> {
        let name = self.desired.name_any();
        let existing = self.owned.get(namespace, &name).or_else(|| {
            let at = ObjectRef::new(&name).within(namespace);
            self.others.get(&at).map(|other| Seen::of(&*other))
        });
        match desired::ownership(existing.as_ref(), owner_uid) {
            Ownership::Ours => Ok(existing.is_none_or(|e| !e.up_to_date(self.desired))),
            Ownership::Absent => Ok(true),
            Ownership::Foreign(owner) => Err(name_taken(&K::kind(&()), name, owner)),
        }
    }

    /// Server-side apply under the operator's field manager, taking over fields others
    /// changed (drift is repaired).
    async fn apply(&self, ctx: &Context, namespace: &str) -> Result<(), Error> {
        let name = self.desired.name_any();
        let kind = K::kind(&());
        let api: Api<K> = Api::namespaced(ctx.client.clone(), namespace);
        api.patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(self.desired),
        )
        .await
        .map_err(|source| Error::Api {
            verb: ApiVerb::Apply,
            what: format!("{kind} {namespace}/{name}"),
            source,
        })?;
        tracing::info!(namespace, name, kind = %kind, "applied");
        Ok(())
    }
}

fn name_taken(kind: &str, name: String, owner: String) -> Error {
    Error::NameTaken {
        kind: if kind == "Secret" {
            "Secret"
        } else {
            "ConfigMap"
        },
        name,
        owner,
    }
}
