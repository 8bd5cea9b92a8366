#![forbid(unsafe_code)]

use std::process::ExitCode;

use attache_api::config::url_env_name;
use attache_sidecar::{
    app::Sidecar,
    cli::{default_worker_threads, Cli, Command, LogFormat},
};
use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli);
    attache_sidecar::init_crypto();
    let threads = match &cli.command {
        // Synchronous: no runtime, no listener, no Secret read.
        Command::Explain(args) => {
            return match attache_sidecar::explain::run(args, &mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("attache-sidecar explain: {e}");
                    ExitCode::from(1)
                }
            };
        }
        Command::Run(r) => r.worker_threads.unwrap_or_else(default_worker_threads),
        #[cfg(feature = "demo")]
        Command::Demo(_) => 2,
    };
    // One thread: a current-thread runtime polls I/O and tasks on the same thread, so a
    // request crosses no thread boundary (lower latency at low load than one worker of the
    // multi-thread scheduler, which hands readiness over from its I/O driver).
    let built = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    };
    let rt = match built {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("attache-sidecar: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let log_format = cli.log.log_format;
    let result = rt.block_on(async move {
        match cli.command {
            Command::Run(args) => run(*args).await,
            Command::Explain(_) => Ok(()), // answered before the runtime started
            #[cfg(feature = "demo")]
            Command::Demo(args) => attache_sidecar::demo::run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Said once: as a JSON log line for log collectors, else as plain text.
            let message = attache_sidecar::cli::error_report(e.as_ref());
            match log_format {
                LogFormat::Json => tracing::error!("{message}"),
                LogFormat::Text => eprintln!("attache-sidecar: {message}"),
            }
            ExitCode::from(1)
        }
    }
}

async fn run(args: attache_sidecar::cli::RunArgs) -> anyhow::Result<()> {
    let sidecar = Sidecar::start(args.options()).await?;
    if !args.manifest.is_empty() {
        // Local mode: what the injector would put in the app's environment.
        for (name, addr) in &sidecar.integration_addrs {
            tracing::info!(
                "the app calls {name} at {}=http://{addr}",
                url_env_name(name)
            );
        }
        tracing::info!(
            "the app sends absolute http:// URLs through ATTACHE_PROXY_URL=http://{}",
            sidecar.proxy_addr
        );
    }
    wait_for_signal().await;
    tracing::info!("shutting down: no new connections, finishing requests in flight");
    if sidecar.shutdown(args.drain_timeout).await {
        tracing::info!("drained; bye");
    } else {
        tracing::warn!(drain_timeout = ?args.drain_timeout, "drain timeout reached; closing remaining connections");
    }
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn init_logging(cli: &Cli) {
    // The demo prints its own report (breaker trips included); its sidecar logs only errors.
    let level = match (&cli.command, cli.log.log_level.as_str()) {
        #[cfg(feature = "demo")]
        (Command::Demo(_), "info") => "error",
        (_, l) => l,
    };
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour only on a terminal: `kubectl logs` and files get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match cli.log.log_format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}
