//! The suite's scenarios, in the order they run.

use futures::FutureExt;

use crate::Scenario;

mod admission;
mod audit;
mod check;
mod faults;
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
        ("a_missing_key_is_reported_and_nothing_is_generated", |c| {
            faults::a_missing_key_is_reported_and_nothing_is_generated(c).boxed_local()
        }),
        ("someone_elses_object_with_the_generated_name_is_not_taken_over", |c| {
            faults::someone_elses_object_with_the_generated_name_is_not_taken_over(c)
                .boxed_local()
        }),
        ("drift_in_a_generated_object_is_repaired", |c| {
            faults::drift_in_a_generated_object_is_repaired(c).boxed_local()
        }),
        (
            "a_mismatched_or_expired_client_pair_is_certificate_invalid_and_the_last_good_pair_stays",
            |c| {
                faults::a_mismatched_or_expired_client_pair_is_certificate_invalid_and_the_last_good_pair_stays(c)
                    .boxed_local()
            },
        ),
        ("an_mtls_integration_reports_its_client_certificate_expiry", |c| {
            faults::an_mtls_integration_reports_its_client_certificate_expiry(c).boxed_local()
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
