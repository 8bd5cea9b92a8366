//! The suite's scenarios, in the order they run.

use futures::FutureExt;

use crate::Scenario;

mod admission;
mod audit;
mod check;
mod leader;
mod reconcile;

pub fn all() -> Vec<(&'static str, Scenario)> {
    vec![
        ("starts_as_the_chart_runs_it", |c| {
            leader::starts_as_the_chart_runs_it(c).boxed_local()
        }),
        ("every_example_reconciles", |c| {
            reconcile::every_example_reconciles(c).boxed_local()
        }),
        ("integration_lifecycle", |c| {
            reconcile::integration_lifecycle(c).boxed_local()
        }),
        ("webhook_injects_through_the_chart_configuration", |c| {
            admission::webhook_injects_through_the_chart_configuration(c).boxed_local()
        }),
        ("pods_counted_and_shared_rate_split", |c| {
            admission::pods_counted_and_shared_rate_split(c).boxed_local()
        }),
        ("inject_writes_for_the_clusters_version", |c| {
            admission::inject_writes_for_the_clusters_version(c).boxed_local()
        }),
        ("leader_takeover", |c| {
            leader::leader_takeover(c).boxed_local()
        }),
        // It reads the audit log of everything above.
        ("no_request_of_the_operator_was_forbidden", |c| {
            audit::no_request_of_the_operator_was_forbidden(c).boxed_local()
        }),
        // After the audit: it breaks the installation on purpose (RBAC, certificate, CRD).
        ("check_reports_healthy_and_broken_installs", |c| {
            check::check_reports_healthy_and_broken_installs(c).boxed_local()
        }),
    ]
}
