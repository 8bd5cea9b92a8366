//! Leader election through a `coordination.k8s.io/v1` Lease, so that of several replicas
//! exactly one runs the controller.
//!
//! The algorithm is client-go's `leaderelection` with a `LeaseLock`:
//!
//! - A replica acquires the Lease when it does not exist, has no holder, or its record (holder,
//!   renew time, ...) has not changed for `leaseDurationSeconds` as measured by this replica's
//!   own monotonic clock since it first saw that record, so clock skew between nodes does not
//!   matter. Writes are `create` or `update` with the `resourceVersion` read just before:
//!   of two replicas racing for the Lease, the API server lets exactly one win (409 Conflict
//!   for the other).
//! - The leader renews every `retry_period`. If it cannot renew for `renew_deadline`
//!   (shorter than the lease duration), or sees another holder, it steps down: the controller
//!   is stopped before any other replica may consider the Lease expired.
//! - On shutdown the leader releases the Lease (empty holder) so a successor takes over at
//!   once instead of waiting for expiry.
//!
//! (`kube-lease-manager` 0.13 supports kube 5, but it makes its lock exclusive through
//! server-side-apply field ownership conflicts and counts time in whole seconds; the
//! optimistic-concurrency update here is the well-trodden protocol and needs only
//! `get`/`create`/`update` on one Lease.)

use std::{future::Future, time::Duration};

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{api::PostParams, Api, Client};
use prometheus_client::metrics::gauge::Gauge;
use tokio::{sync::watch, time::Instant};

/// Where the Lease is and how the election is timed.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    pub name: String,
    pub namespace: String,
    /// This replica's holder identity: unique among replicas.
    pub identity: String,
    /// How long a Lease stays valid after its last renewal.
    pub lease_duration: Duration,
    /// The leader steps down when it could not renew for this long.
    pub renew_deadline: Duration,
    /// Time between attempts to acquire or renew.
    pub retry_period: Duration,
}

/// The outcome of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// This replica holds the Lease.
    Leading,
    /// Another replica does (when known).
    Following { holder: Option<String> },
}

/// One replica's side of the election.
pub struct Elector {
    api: Api<Lease>,
    settings: LeaseSettings,
    /// The last record seen and when this replica first saw it.
    observed: Option<(Record, Instant)>,
}

/// The fields of a Lease that change when its holder is alive.
#[derive(Debug, Clone, PartialEq)]
struct Record {
    holder: Option<String>,
    renew_time: Option<MicroTime>,
    acquire_time: Option<MicroTime>,
    duration_seconds: Option<i32>,
    transitions: Option<i32>,
}

// === impl LeaseSettings ===

impl LeaseSettings {
    /// client-go's defaults, shortened: 15 s lease, 10 s renew deadline, 2 s retry period.
    pub fn new(
        name: impl Into<String>,
        namespace: impl Into<String>,
        identity: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            namespace: namespace.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    /// `leaseDurationSeconds` as written to the Lease (whole seconds, at least 1).
    fn duration_seconds(&self) -> i32 {
        let secs = self.lease_duration.as_secs_f64().ceil();
        (secs as i32).max(1)
    }
}

/// This replica's identity: `POD_NAME` when set (the Deployment passes it through the
/// downward API), else the host name with a random suffix, so two processes on one machine
/// never share an identity.
pub fn default_identity() -> String {
    if let Ok(pod) = std::env::var("POD_NAME") {
        if !pod.trim().is_empty() {
            return pod.trim().to_string();
        }
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "attache-operator".into());
    format!("{host}_{}", uuid::Uuid::new_v4().simple())
}

// === impl Record ===

impl Record {
    fn of(lease: &Lease) -> Self {
        let spec = lease.spec.clone().unwrap_or_default();
        Self {
            holder: spec.holder_identity.filter(|h| !h.is_empty()),
            renew_time: spec.renew_time,
            acquire_time: spec.acquire_time,
            duration_seconds: spec.lease_duration_seconds,
            transitions: spec.lease_transitions,
        }
    }
}

// === impl Elector ===

impl Elector {
    pub fn new(client: Client, settings: LeaseSettings) -> Self {
        Self {
            api: Api::namespaced(client, &settings.namespace),
            settings,
            observed: None,
        }
    }

    pub fn identity(&self) -> &str {
        &self.settings.identity
    }

    /// Acquires the Lease if it is free or expired, renews it if held; one round trip or two.
    pub async fn try_acquire_or_renew(&mut self) -> Result<Attempt, kube::Error> {
        let s = self.settings.clone();
        let now_wall = MicroTime(Timestamp::now());
        let Some(lease) = self.api.get_opt(&s.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(s.name.clone()),
                    namespace: Some(s.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(s.identity.clone()),
                    lease_duration_seconds: Some(s.duration_seconds()),
                    acquire_time: Some(now_wall.clone()),
                    renew_time: Some(now_wall),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(created) => {
                    self.observe(&created, Instant::now());
                    Ok(Attempt::Leading)
                }
                Err(kube::Error::Api(e)) if e.is_already_exists() || e.is_conflict() => {
                    Ok(Attempt::Following { holder: None })
                }
                Err(e) => Err(e),
            };
        };

        let now = Instant::now();
        let record = Record::of(&lease);
        let seen_at = self.observe(&lease, now);
        let mine = record.holder.as_deref() == Some(s.identity.as_str());
        if let Some(holder) = record.holder.as_ref().filter(|_| !mine) {
            let valid_for = record
                .duration_seconds
                .filter(|d| *d > 0)
                .map(|d| Duration::from_secs(d.unsigned_abs().into()))
                .unwrap_or(s.lease_duration);
            if now < seen_at + valid_for {
                return Ok(Attempt::Following {
                    holder: Some(holder.clone()),
                });
            }
        }

        let mut spec = lease.spec.clone().unwrap_or_default();
        if !mine {
            spec.holder_identity = Some(s.identity.clone());
            spec.acquire_time = Some(now_wall.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
        }
        spec.renew_time = Some(now_wall);
        spec.lease_duration_seconds = Some(s.duration_seconds());
        let update = Lease {
            metadata: lease.metadata.clone(),
            spec: Some(spec),
        };
        match self
            .api
            .replace(&s.name, &PostParams::default(), &update)
            .await
        {
            Ok(updated) => {
                self.observe(&updated, Instant::now());
                Ok(Attempt::Leading)
            }
            Err(kube::Error::Api(e)) if e.is_conflict() => Ok(Attempt::Following {
                holder: record.holder,
            }),
            Err(e) => Err(e),
        }
    }

    /// Gives the Lease up if this replica holds it, so a successor need not wait for expiry.
    pub async fn release(&mut self) -> Result<(), kube::Error> {
        let s = &self.settings;
        let Some(lease) = self.api.get_opt(&s.name).await? else {
            return Ok(());
        };
        if Record::of(&lease).holder.as_deref() != Some(s.identity.as_str()) {
            return Ok(());
        }
        let mut spec = lease.spec.clone().unwrap_or_default();
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        let update = Lease {
            metadata: lease.metadata.clone(),
            spec: Some(spec),
        };
        self.api
            .replace(&s.name, &PostParams::default(), &update)
            .await?;
        self.observed = None;
        Ok(())
    }

    /// Runs the election until `shutdown` turns true, publishing on `leading` whether this
    /// replica leads; releases the Lease on the way out.
    pub async fn run(mut self, leading: watch::Sender<bool>, mut shutdown: watch::Receiver<bool>) {
        let s = self.settings.clone();
        // Some(time of the last successful renewal) while leading.
        let mut renewed: Option<Instant> = None;
        loop {
            let limit = match renewed {
                Some(t) => (t + s.renew_deadline).saturating_duration_since(Instant::now()),
                None => s.lease_duration,
            };
            let attempt = tokio::time::timeout(limit, self.try_acquire_or_renew()).await;
            let now = Instant::now();
            match attempt {
                Ok(Ok(Attempt::Leading)) => {
                    if renewed.is_none() {
                        tracing::info!(identity = %s.identity, lease = %s.name, "became the leader");
                        leading.send_replace(true);
                    }
                    renewed = Some(now);
                }
                Ok(Ok(Attempt::Following { holder })) => {
                    if renewed.take().is_some() {
                        tracing::warn!(identity = %s.identity, ?holder, "lost the lease; stepping down");
                        leading.send_replace(false);
                    }
                }
                Ok(Err(e)) => {
                    tracing::warn!(identity = %s.identity, error = %e, "lease: API call failed");
                }
                Err(_) => tracing::warn!(identity = %s.identity, "lease: API call timed out"),
            }
            if let Some(t) = renewed {
                if now.saturating_duration_since(t) >= s.renew_deadline {
                    tracing::warn!(identity = %s.identity, "could not renew the lease in time; stepping down");
                    renewed = None;
                    leading.send_replace(false);
                }
            }
            let pause = if renewed.is_some() {
                s.retry_period
            } else {
                jittered(s.retry_period)
            };
            let stop = tokio::select! {
                () = tokio::time::sleep(pause) => false,
                r = shutdown.wait_for(|stop| *stop) => {
                    // Stopped, or the sender is gone: stop either way.
                    drop(r);
                    true
                }
            };
            if stop {
                if renewed.is_some() {
                    leading.send_replace(false);
                    match self.release().await {
                        Ok(()) => tracing::info!(identity = %s.identity, "released the lease"),
                        Err(e) => tracing::warn!(error = %e, "could not release the lease"),
                    }
                }
                return;
            }
        }
    }

    /// Remembers `lease`'s record; returns when this replica first saw it.
    fn observe(&mut self, lease: &Lease, now: Instant) -> Instant {
        let record = Record::of(lease);
        match &self.observed {
            Some((r, at)) if *r == record => *at,
            _ => {
                self.observed = Some((record, now));
                now
            }
        }
    }
}

/// Runs `work()` whenever `leading` is true and drops it as soon as it turns false, so the
/// controller never outlives this replica's leadership. Returns when `work` ends by itself
/// (graceful shutdown), when `shutdown` turns true while not leading, or when the elector is
/// gone.
pub async fn while_leading<F, Fut>(
    mut leading: watch::Receiver<bool>,
    mut shutdown: watch::Receiver<bool>,
    gauge: Gauge,
    mut work: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    loop {
        tokio::select! {
            r = leading.wait_for(|l| *l) => if r.is_err() { return },
            _ = shutdown.wait_for(|s| *s) => return,
        }
        gauge.set(1);
        let lost = tokio::select! {
            () = work() => false,
            r = leading.wait_for(|l| !*l) => r.is_ok(),
        };
        gauge.set(0);
        if !lost {
            return;
        }
        tracing::warn!("leadership lost: controller stopped");
    }
}

/// `d` plus up to 20 %, so that replicas started together do not retry in lockstep.
fn jittered(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0);
    d + d.mul_f64(f64::from(nanos % 1000) / 5000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duration_is_whole_seconds_at_least_one() {
        let mut s = LeaseSettings::new("l", "ns", "me");
        assert_eq!(s.duration_seconds(), 15);
        s.lease_duration = Duration::from_millis(300);
        assert_eq!(s.duration_seconds(), 1);
        s.lease_duration = Duration::from_millis(1500);
        assert_eq!(s.duration_seconds(), 2);
    }

    #[test]
    fn jitter_stays_within_a_fifth() {
        let d = Duration::from_secs(2);
        for _ in 0..100 {
            let j = jittered(d);
            assert!(j >= d && j <= d + d / 5, "{j:?}");
        }
    }
}
