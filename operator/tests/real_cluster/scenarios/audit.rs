//! The chart's RBAC is enough: not one request of the operator's ServiceAccount was refused.

use crate::cluster::{Cluster, NAMESPACE, RELEASE};

pub async fn no_request_of_the_operator_was_forbidden(c: &mut Cluster) {
    let user = format!("system:serviceaccount:{NAMESPACE}:{RELEASE}");
    let events = c.audit_events(&user);
    assert!(
        events.len() > 50,
        "only {} audited requests by {user}: is the audit log on?",
        events.len()
    );
    let forbidden: Vec<String> = events
        .iter()
        .filter(|e| e["responseStatus"]["code"] == 403)
        .map(|e| format!("{} {}", e["verb"], e["requestURI"]))
        .collect();
    println!(
        "  {} requests by {user}, {} refused",
        events.len(),
        forbidden.len()
    );
    assert!(
        forbidden.is_empty(),
        "requests refused by RBAC: {forbidden:#?}"
    );
}
