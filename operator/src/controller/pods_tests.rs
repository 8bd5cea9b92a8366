use std::collections::BTreeMap;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};

use super::*;
use crate::contract::INJECTED_LABEL;

fn pod(ns: &str, name: &str, uses: &str) -> PartialObjectMeta<Pod> {
    PartialObjectMeta {
        types: None,
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            labels: Some(BTreeMap::from([(INJECTED_LABEL.into(), "true".into())])),
            annotations: Some(BTreeMap::from([(
                INJECTED_INTEGRATIONS_ANNOTATION.into(),
                uses.into(),
            )])),
            ..Default::default()
        },
        _phantom: Default::default(),
    }
}

fn key(ns: &str, integration: &str) -> Key {
    Key {
        namespace: ns.into(),
        integration: integration.into(),
    }
}

#[test]
fn annotation_lists_integrations() {
    let p = pod("payments", "a", " stripe, twilio,,stripe ");
    assert_eq!(integrations_of(&p.metadata), ["stripe", "twilio"]);
    let mut terminating = p.clone();
    terminating.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
    assert!(integrations_of(&terminating.metadata).is_empty());
    let mut bare = p;
    bare.metadata.annotations = None;
    assert!(integrations_of(&bare.metadata).is_empty());
}

#[test]
fn counts_follow_pods_per_namespace_and_integration() {
    let mut c = PodCounts::default();
    assert!(c.apply(Event::Init).is_empty());
    c.apply(Event::InitApply(pod("payments", "a", "stripe,twilio")));
    c.apply(Event::InitApply(pod("payments", "b", "stripe")));
    c.apply(Event::InitApply(pod("billing", "a", "stripe")));
    let changed = c.apply(Event::InitDone);
    assert_eq!(
        changed,
        vec![
            (key("billing", "stripe"), 1),
            (key("payments", "stripe"), 2),
            (key("payments", "twilio"), 1),
        ]
    );

    // A pod starts using another integration: two counts move.
    let changed = c.apply(Event::Apply(pod("payments", "b", "twilio")));
    assert_eq!(
        changed,
        vec![
            (key("payments", "stripe"), 1),
            (key("payments", "twilio"), 2)
        ]
    );
    // Re-delivery of the same pod changes nothing.
    assert!(c
        .apply(Event::Apply(pod("payments", "b", "twilio")))
        .is_empty());

    // Terminating pods stop counting before they are gone; the delete is then a no-op.
    let mut terminating = pod("payments", "a", "stripe,twilio");
    terminating.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
    let changed = c.apply(Event::Apply(terminating.clone()));
    assert_eq!(
        changed,
        vec![
            (key("payments", "stripe"), 0),
            (key("payments", "twilio"), 1)
        ]
    );
    assert!(c.apply(Event::Delete(terminating)).is_empty());
    assert_eq!(c.count(&key("payments", "twilio")), 1);
    assert_eq!(c.count(&key("billing", "stripe")), 1);

    // A relist that misses a pod (deleted while the watch was down) drops it.
    c.apply(Event::Init);
    c.apply(Event::InitApply(pod("payments", "b", "twilio")));
    let changed = c.apply(Event::InitDone);
    assert_eq!(changed, vec![(key("billing", "stripe"), 0)]);
}

fn settings() -> DampingSettings {
    DampingSettings {
        scale_down_window: Duration::from_secs(20),
        min_interval: Duration::from_secs(1),
    }
}

#[test]
fn increases_apply_at_once() {
    let t0 = Instant::now();
    let mut d = Damper::new(settings());
    let k = key("payments", "stripe");
    d.observe(k.clone(), 3, t0);
    assert_eq!(
        d.share(&k, t0),
        PodShare {
            pods: 3,
            divisor: 3
        }
    );
    assert_eq!(d.next_due(), Some(t0));
    assert_eq!(d.take_due(t0), vec![k.clone()]);
    d.observe(k.clone(), 5, t0 + Duration::from_secs(5));
    assert_eq!(
        d.share(&k, t0 + Duration::from_secs(5)),
        PodShare {
            pods: 5,
            divisor: 5
        }
    );
}

#[test]
fn decreases_wait_for_the_window() {
    let t0 = Instant::now();
    let s = |secs| t0 + Duration::from_secs(secs);
    let mut d = Damper::new(settings());
    let k = key("payments", "stripe");
    d.observe(k.clone(), 4, t0);
    d.take_due(t0);
    d.observe(k.clone(), 2, s(10));
    // The live count is reported at once, the divisor holds the peak.
    assert_eq!(
        d.share(&k, s(10)),
        PodShare {
            pods: 2,
            divisor: 4
        }
    );
    assert_eq!(
        d.share(&k, s(29)),
        PodShare {
            pods: 2,
            divisor: 4
        }
    );
    assert_eq!(
        d.share(&k, s(30)),
        PodShare {
            pods: 2,
            divisor: 2
        }
    );
    // One trigger for the change (status.pods), one when the window has passed.
    assert_eq!(d.take_due(s(10)), vec![k.clone()]);
    assert_eq!(d.next_due(), Some(s(30)));
    assert!(d.take_due(s(29)).is_empty());
    assert_eq!(d.take_due(s(30)), vec![k.clone()]);
    assert_eq!(d.next_due(), None);
}

#[test]
fn a_rolling_update_keeps_the_peak() {
    // 3 replicas, surge of 1: 4, 3, 4, 3, 4, 3 every 5 s.
    let t0 = Instant::now();
    let mut d = Damper::new(settings());
    let k = key("payments", "stripe");
    d.observe(k.clone(), 3, t0);
    let mut t = t0;
    for (i, n) in [4, 3, 4, 3, 4, 3].into_iter().enumerate() {
        t = t0 + Duration::from_secs(5 * (i as u64 + 1));
        d.observe(k.clone(), n, t);
        assert_eq!(d.share(&k, t).divisor, 4, "step {i}");
    }
    assert_eq!(d.share(&k, t + Duration::from_secs(20)).divisor, 3);
}

#[test]
fn triggers_are_rate_limited_per_integration() {
    let t0 = Instant::now();
    let ms = |m| t0 + Duration::from_millis(m);
    let mut d = Damper::new(settings());
    let a = key("payments", "stripe");
    let b = key("payments", "twilio");
    d.observe(a.clone(), 1, t0);
    assert_eq!(d.take_due(t0), vec![a.clone()]);
    // A burst of pod starts within the interval: one trigger, at its end.
    for (i, m) in [100, 200, 300, 400].into_iter().enumerate() {
        d.observe(a.clone(), 2 + i as u32, ms(m));
    }
    assert_eq!(d.next_due(), Some(ms(1000)));
    assert!(d.take_due(ms(999)).is_empty());
    // Another integration is not held back by the first one's limit.
    d.observe(b.clone(), 1, ms(500));
    assert_eq!(d.take_due(ms(500)), vec![b.clone()]);
    assert_eq!(d.take_due(ms(1000)), vec![a.clone()]);
    assert_eq!(
        d.share(&a, ms(1000)),
        PodShare {
            pods: 5,
            divisor: 5
        }
    );
}

#[test]
fn unknown_integrations_have_no_pods_and_divide_by_one() {
    let d = Damper::new(settings());
    assert_eq!(
        d.share(&key("payments", "stripe"), Instant::now()),
        PodShare {
            pods: 0,
            divisor: 1
        }
    );
}

#[test]
fn idle_integrations_are_forgotten() {
    let t0 = Instant::now();
    let mut d = Damper::new(settings());
    let k = key("payments", "stripe");
    d.observe(k.clone(), 1, t0);
    d.take_due(t0);
    d.observe(k.clone(), 0, t0 + Duration::from_secs(1));
    d.take_due(t0 + Duration::from_secs(1));
    d.take_due(t0 + Duration::from_secs(21));
    assert!(d.keys.is_empty());
}

#[tokio::test(start_paused = true)]
async fn tracker_sends_damped_triggers() {
    let tracker = PodTracker::new(settings());
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let (triggers_tx, mut triggers) = mpsc::unbounded_channel();
    let events = futures::stream::unfold(events_rx, |mut rx| async {
        rx.recv().await.map(|e| (Ok(e), rx))
    });
    tokio::spawn(tracker.clone().run(events, triggers_tx));

    events_tx.send(Event::Init).unwrap();
    events_tx
        .send(Event::InitApply(pod("payments", "a", "stripe")))
        .unwrap();
    events_tx.send(Event::InitDone).unwrap();
    tracker.wait_ready().await;
    assert_eq!(
        triggers.recv().await.unwrap(),
        ObjectRef::new("stripe").within("payments")
    );
    assert_eq!(tracker.share("payments", "stripe").pods, 1);

    events_tx
        .send(Event::Apply(pod("payments", "b", "stripe")))
        .unwrap();
    events_tx
        .send(Event::Delete(pod("payments", "b", "stripe")))
        .unwrap();
    // Coalesced into one trigger, a second after the first.
    let before = Instant::now();
    triggers.recv().await.unwrap();
    assert!(Instant::now() - before >= Duration::from_millis(900));
    assert_eq!(
        tracker.share("payments", "stripe"),
        PodShare {
            pods: 1,
            divisor: 2
        }
    );
    // And one when the scale-down window has passed.
    triggers.recv().await.unwrap();
    assert_eq!(
        tracker.share("payments", "stripe"),
        PodShare {
            pods: 1,
            divisor: 1
        }
    );
}

#[test]
fn the_selector_is_the_injected_label() {
    assert_eq!(INJECTED_SELECTOR, format!("{INJECTED_LABEL}=true"));
}
