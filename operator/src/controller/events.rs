//! Events on integrations' Ready transitions (`events.k8s.io/v1`).
//!
//! kube's `Recorder` keeps a whole copy of every Event it published, and its key, for six
//! minutes so that a repeat becomes a series: at 10,000 integrations that was tens of MiB of
//! the operator's memory. This publisher keeps what a repeat needs, the Event's name, its count
//! and when it was last seen, under a digest of what makes two Events the same, and writes the
//! same objects the `Recorder` does (a create, then merge patches of `series`).

use std::{
    collections::HashMap,
    hash::{DefaultHasher, Hash, Hasher},
    sync::Mutex,
};

use k8s_openapi::{
    api::{
        core::v1::ObjectReference,
        events::v1::{Event, EventSeries},
    },
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::{SignedDuration, Timestamp},
};
use kube::{
    api::{Patch, PatchParams, PostParams},
    Api, Client,
};
use serde_json::json;

/// How long a published Event can grow into a series (client-go's and kube's window).
const SERIES_WINDOW: SignedDuration = SignedDuration::from_mins(6);
/// How often the entries older than the window are dropped.
const SWEEP_EVERY: SignedDuration = SignedDuration::from_mins(1);

/// One Event to publish about an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    /// `Normal` or `Warning`.
    pub warning: bool,
    pub reason: String,
    pub action: String,
    pub message: String,
}

/// Publishes Events as `controller` (its `reportingController`) from `instance`.
pub struct EventPublisher {
    client: Client,
    controller: String,
    instance: String,
    recent: Mutex<Recent>,
}

/// The Events published in the last [`SERIES_WINDOW`], by [`key`].
#[derive(Default)]
struct Recent {
    by_key: HashMap<u64, Published>,
    swept: Option<Timestamp>,
}

/// What a repeat of a published Event needs to patch it.
#[derive(Clone, Debug)]
struct Published {
    name: String,
    count: i32,
    last_seen: Timestamp,
}

// === impl EventPublisher ===

impl EventPublisher {
    pub fn new(client: Client, controller: String, instance: String) -> Self {
        Self {
            client,
            controller,
            instance,
            recent: Mutex::default(),
        }
    }

    /// Creates the Event, or, when the same one was published less than six minutes ago,
    /// counts the repeat in that Event's `series` (a new Event if that one is gone).
    pub async fn publish(
        &self,
        note: &Note,
        regarding: &ObjectReference,
    ) -> Result<(), kube::Error> {
        let now = Timestamp::now();
        let key = key(note, regarding);
        let repeat = self.recent().repeat_of(key, now);
        let namespace = regarding.namespace.as_deref().unwrap_or("default");
        let api: Api<Event> = Api::namespaced(self.client.clone(), namespace);
        if let Some(previous) = repeat {
            let count = previous.count.saturating_add(1);
            let patch = Patch::Merge(series_patch(count, now));
            match api
                .patch(&previous.name, &PatchParams::default(), &patch)
                .await
            {
                Ok(_) => {
                    let published = Published {
                        name: previous.name,
                        count,
                        last_seen: now,
                    };
                    self.recent().by_key.insert(key, published);
                    return Ok(());
                }
                // Deleted meanwhile (by hand, or its TTL ran out): the repeat starts a new one.
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        let event = new_event(note, regarding, &self.controller, &self.instance, now);
        let name = event.metadata.name.clone().unwrap_or_default();
        api.create(&PostParams::default(), &event).await?;
        let published = Published {
            name,
            count: 1,
            last_seen: now,
        };
        self.recent().by_key.insert(key, published);
        Ok(())
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, Recent> {
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
    }
}

// === impl Recent ===

impl Recent {
    /// The Event `key` names if it is still open for a series; drops expired entries once a
    /// minute.
    fn repeat_of(&mut self, key: u64, now: Timestamp) -> Option<Published> {
        if self.swept.is_none_or(|t| t + SWEEP_EVERY <= now) {
            self.by_key.retain(|_, p| p.last_seen + SERIES_WINDOW > now);
            self.swept = Some(now);
        }
        self.by_key
            .get(&key)
            .filter(|p| p.last_seen + SERIES_WINDOW > now)
            .cloned()
    }
}

/// What makes two Events the same one (kube and client-go key on the same fields): the
/// object, type, reason, action and message. A 64-bit digest: a collision among the few
/// thousand Events of six minutes has a probability below 10⁻¹¹ and would only count a
/// repeat on the wrong Event.
fn key(note: &Note, regarding: &ObjectReference) -> u64 {
    let mut h = DefaultHasher::new();
    (
        regarding.uid.as_deref(),
        regarding.namespace.as_deref(),
        regarding.name.as_deref(),
        regarding.kind.as_deref(),
    )
        .hash(&mut h);
    (note.warning, &note.reason, &note.action, &note.message).hash(&mut h);
    h.finish()
}

/// A new `events.k8s.io/v1` Event, named `OBJECT.NANOS` like the `Recorder`'s.
fn new_event(
    note: &Note,
    regarding: &ObjectReference,
    controller: &str,
    instance: &str,
    now: Timestamp,
) -> Event {
    let object = regarding.name.as_deref().unwrap_or(controller);
    Event {
        metadata: ObjectMeta {
            name: Some(format!("{object}.{:x}", now.as_nanosecond())),
            namespace: regarding.namespace.clone(),
            ..ObjectMeta::default()
        },
        event_time: Some(MicroTime(now)),
        type_: Some(if note.warning { "Warning" } else { "Normal" }.into()),
        reason: Some(note.reason.clone()),
        action: Some(note.action.clone()),
        note: Some(note.message.clone()),
        regarding: Some(regarding.clone()),
        reporting_controller: Some(controller.into()),
        reporting_instance: Some(instance.into()),
        ..Event::default()
    }
}

/// The merge patch that counts a repeat.
fn series_patch(count: i32, now: Timestamp) -> serde_json::Value {
    json!({
        "series": EventSeries {
            count,
            last_observed_time: MicroTime(now),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(message: &str) -> Note {
        Note {
            warning: true,
            reason: "SecretNotFound".into(),
            action: "Reconcile".into(),
            message: message.into(),
        }
    }

    fn pay() -> ObjectReference {
        ObjectReference {
            kind: Some("ExternalIntegration".into()),
            namespace: Some("shop".into()),
            name: Some("pay".into()),
            uid: Some("u-1".into()),
            ..ObjectReference::default()
        }
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).expect("in range")
    }

    #[test]
    fn the_same_event_is_the_same_key_and_any_difference_is_another() {
        let k = key(&note("Secret \"pay-key\" not found"), &pay());
        assert_eq!(k, key(&note("Secret \"pay-key\" not found"), &pay()));
        assert_ne!(k, key(&note("Secret \"other\" not found"), &pay()));
        let other_object = ObjectReference {
            uid: Some("u-2".into()),
            ..pay()
        };
        assert_ne!(k, key(&note("Secret \"pay-key\" not found"), &other_object));
        let normal = Note {
            warning: false,
            ..note("Secret \"pay-key\" not found")
        };
        assert_ne!(k, key(&normal, &pay()));
    }

    #[test]
    fn a_repeat_within_six_minutes_continues_the_series_and_later_starts_anew() {
        let mut recent = Recent::default();
        assert!(recent.repeat_of(7, at(0)).is_none());
        recent.by_key.insert(
            7,
            Published {
                name: "pay.1".into(),
                count: 1,
                last_seen: at(0),
            },
        );
        let again = recent.repeat_of(7, at(359)).expect("within the window");
        assert_eq!((again.name.as_str(), again.count), ("pay.1", 1));
        assert!(recent.repeat_of(7, at(360)).is_none(), "the window is over");
        assert!(recent.repeat_of(7, at(420)).is_none());
        assert!(
            recent.by_key.is_empty(),
            "the next sweep dropped the old entry"
        );
    }

    #[test]
    fn old_entries_are_swept_at_most_once_a_minute() {
        let mut recent = Recent::default();
        let published = |last_seen| Published {
            name: "x.1".into(),
            count: 1,
            last_seen,
        };
        recent.repeat_of(0, at(0));
        recent.by_key.insert(1, published(at(-400)));
        recent.by_key.insert(2, published(at(0)));
        recent.repeat_of(0, at(30));
        assert_eq!(recent.by_key.len(), 2, "no sweep within a minute");
        recent.repeat_of(0, at(60));
        assert_eq!(recent.by_key.len(), 1, "the expired one is gone");
    }

    #[test]
    fn a_new_event_looks_like_kubes_and_a_repeat_patches_only_the_series() {
        let event = new_event(&note("gone"), &pay(), "attache-operator", "pod-1", at(0));
        assert_eq!(event.metadata.namespace.as_deref(), Some("shop"));
        let name = event.metadata.name.as_deref().unwrap_or_default();
        assert!(name.starts_with("pay."), "{name}");
        assert_eq!(event.type_.as_deref(), Some("Warning"));
        assert_eq!(
            event.reporting_controller.as_deref(),
            Some("attache-operator")
        );
        assert_eq!(event.reporting_instance.as_deref(), Some("pod-1"));
        assert_eq!(event.regarding, Some(pay()));
        assert!(event.series.is_none());
        let patch = series_patch(3, at(5));
        assert_eq!(patch["series"]["count"], 3);
        assert!(patch["series"]["lastObservedTime"].is_string());
        assert_eq!(patch.as_object().map(|o| o.len()), Some(1));
    }
}
