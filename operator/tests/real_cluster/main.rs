//! The cluster path against a real kube-apiserver and kube-controller-manager (1.20, built from
//! Debian's source by `scripts/real-apiserver.sh`), with the operator's **built binary** run as
//! the chart runs it: the chart's arguments, `RUST_LOG` and JSON logs, as the chart's
//! ServiceAccount with the chart's RBAC, and the chart's own MutatingWebhookConfiguration
//! calling it.
//!
//! One control plane serves every scenario; they run in order, each in its own namespaces, and
//! the suite reports each one. The fake API server tests (`controller_*.rs`) remain only for
//! what a real server cannot do on demand: timing and injected failures.
//!
//! ```sh
//! scripts/real-apiserver.sh build      # once: 4 to 12 minutes on 2 cores, cached
//! cargo test -p attache-operator --test real_cluster [-- SCENARIO]
//! ```
//!
//! Without a built control plane the suite says so and passes, unless
//! `ATTACHE_REAL_APISERVER=required` (as CI sets it), where that is a failure.

mod cluster;
mod http;
mod replica;
mod scenarios;

use std::{
    panic::AssertUnwindSafe,
    process::ExitCode,
    time::{Duration, Instant},
};

use futures::FutureExt;

use crate::cluster::Cluster;

/// One named check of the suite.
type Scenario = for<'a> fn(&'a mut Cluster) -> futures::future::LocalBoxFuture<'a, ()>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let all = scenarios::all();
    if args.iter().any(|a| a == "--list") {
        for (name, _) in &all {
            println!("{name}: test");
        }
        return ExitCode::SUCCESS;
    }
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let chosen: Vec<_> = all
        .into_iter()
        .filter(|(name, _)| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str())))
        .collect();
    if chosen.is_empty() {
        println!("real_cluster: no scenario matches {filters:?}");
        return ExitCode::SUCCESS;
    }
    if cluster::built_control_plane().is_none() {
        let required = std::env::var("ATTACHE_REAL_APISERVER").as_deref() == Ok("required");
        let msg =
            "the real API server is not built: run `scripts/real-apiserver.sh build` (as root)";
        if required {
            eprintln!("real_cluster: FAILED: {msg} (ATTACHE_REAL_APISERVER=required)");
            return ExitCode::FAILURE;
        }
        println!("real_cluster: skipped, {msg}");
        return ExitCode::SUCCESS;
    }

    // A failed assertion is reported as its message and place; the backtrace of the runner's
    // poll machinery says nothing more.
    std::panic::set_hook(Box::new(|info| {
        let place = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("(no message)");
        eprintln!("  FAILED at {place}: {message}");
    }));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let started = Instant::now();
    let mut cluster = match runtime.block_on(Cluster::start()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "real_cluster: FAILED to start the control plane and install the chart: {e:#}"
            );
            return ExitCode::FAILURE;
        }
    };
    println!(
        "real_cluster: control plane up, chart installed, operator started in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let mut failed = Vec::new();
    for (name, scenario) in &chosen {
        let t = Instant::now();
        println!("\n--- scenario {name}");
        let run = runtime.block_on(async {
            tokio::time::timeout(
                Duration::from_secs(240),
                AssertUnwindSafe(scenario(&mut cluster)).catch_unwind(),
            )
            .await
        });
        let outcome = match run {
            Ok(Ok(())) => "ok",
            Ok(Err(_)) => "FAILED",
            Err(_) => "FAILED (timed out after 240 s)",
        };
        if outcome != "ok" {
            failed.push(*name);
        }
        println!(
            "--- scenario {name}: {outcome} ({:.1} s)",
            t.elapsed().as_secs_f64()
        );
    }
    if !failed.is_empty() {
        cluster.dump_logs();
    }
    runtime.block_on(cluster.stop());
    println!(
        "\nreal_cluster: {} scenarios, {} failed {:?}, {:.1} s in all",
        chosen.len(),
        failed.len(),
        failed,
        started.elapsed().as_secs_f64()
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
