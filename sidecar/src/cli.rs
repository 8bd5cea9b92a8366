//! Command line: `attache-sidecar run ...` and `attache-sidecar demo`.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use attache_api::config::ports;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::{
    app::SidecarOptions,
    config::ConfigSource,
    proxy::connections::ConnectionLimits,
    telemetry::{access_log::AccessLogFormat, TelemetryOptions},
};

#[derive(Parser, Debug)]
#[command(
    name = "attache-sidecar",
    version,
    about = "Attaché egress sidecar: calls third-party APIs with TLS/mTLS, credentials and resilience added on localhost"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub log: LogArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve integrations: rendered configs (--config-dir) or manifests (--manifest).
    Run(Box<RunArgs>),
    /// Print what the sidecar would send for one request, without sending it or reading a
    /// Secret: the integration chosen, the upstream URL, the headers (credentials shown as
    /// where they come from) and the policies that apply.
    Explain(crate::explain::ExplainArgs),
    /// Run the whole data path locally against a flaky mTLS "third party" and report.
    #[cfg(feature = "demo")]
    Demo(crate::demo::DemoArgs),
}

#[derive(Args, Debug)]
pub struct LogArgs {
    /// Log level or tracing filter (RUST_LOG syntax), e.g. `debug` or `attache_sidecar=debug`.
    #[arg(long, global = true, env = "ATTACHE_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Log format.
    #[arg(long, global = true, env = "ATTACHE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["config_dir", "manifest"])))]
pub struct RunArgs {
    /// Folder of rendered integration configs (in-cluster mode): DIR/NAME/config.json + secrets.
    #[arg(long, value_name = "DIR", env = "ATTACHE_CONFIG_DIR")]
    pub config_dir: Option<PathBuf>,
    /// ExternalIntegration manifest, or a directory of them (its *.yaml and *.yml files), for
    /// local mode; repeat for several.
    #[arg(long, value_name = "FILE|DIR", conflicts_with = "config_dir")]
    pub manifest: Vec<PathBuf>,
    /// Secret files for local mode: DIR/<secret-name>/<key>.
    #[arg(long, value_name = "DIR", requires = "manifest")]
    pub secrets_dir: Option<PathBuf>,
    /// Port of the first integration's listener (integrations sorted by name).
    #[arg(long, default_value_t = ports::FIRST_INTEGRATION)]
    pub first_port: u16,
    /// Address of the HTTP proxy listener (absolute-form requests routed by host): IP:PORT or
    /// HOST:PORT.
    #[arg(long, value_name = "ADDR", default_value_t = SocketAddr::from(([127, 0, 0, 1], ports::PROXY)), value_parser = parse_listen_addr)]
    pub proxy_addr: SocketAddr,
    /// Address of the admin listener (/metrics, /healthz, /readyz): IP:PORT or HOST:PORT.
    /// Default: 127.0.0.1:15090 in local mode (--manifest), 0.0.0.0:15090 with --config-dir
    /// (in a pod, for the kubelet's probes and Prometheus).
    #[arg(long, value_name = "ADDR", value_parser = parse_listen_addr)]
    pub admin_addr: Option<SocketAddr>,
    /// Address of the webhook listener (the third party's signed callbacks, bound only when an
    /// integration has `webhooks`): IP:PORT or HOST:PORT. Default: 127.0.0.1:15100 in local
    /// mode (--manifest), 0.0.0.0:15100 with --config-dir (behind the cluster's Ingress).
    #[arg(long, value_name = "ADDR", value_parser = parse_listen_addr)]
    pub webhook_addr: Option<SocketAddr>,
    /// Runtime worker threads; default: the CPUs the cgroup quota allows.
    #[arg(long)]
    pub worker_threads: Option<usize>,
    /// On SIGTERM, how long requests in flight may take to finish.
    #[arg(long, default_value = "25s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// The head of a request must arrive within this (from the connection's first byte).
    #[arg(long, default_value = "10s", value_parser = parse_positive_duration)]
    pub header_timeout: Duration,
    /// Connections with no request in flight are closed after this.
    #[arg(long, default_value = "90s", value_parser = parse_positive_duration)]
    pub idle_timeout: Duration,
    /// Connections each listener holds at once; more are closed as soon as accepted.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    #[command(flatten)]
    pub redis: crate::config::redis::RedisArgs,
    /// One line per request on stdout (`json`): method, path without its query, status or
    /// the sidecar's error code, attempts, times, retry reasons, trace and request ids.
    #[arg(long, value_enum, env = "ATTACHE_ACCESS_LOG", default_value_t = AccessLogFormat::Off)]
    pub access_log: AccessLogFormat,
    /// Export a span per request and per upstream attempt with OTLP over HTTP (protobuf) to
    /// this collector, e.g. http://otel-collector:4318 (`/v1/traces` is added to a URL without
    /// a path).
    #[arg(long, value_name = "URL", env = "ATTACHE_OTLP_ENDPOINT", value_parser = parse_otlp_endpoint)]
    pub otlp_endpoint: Option<http::Uri>,
}

fn parse_otlp_endpoint(s: &str) -> Result<http::Uri, String> {
    crate::telemetry::export::traces_url(s).map_err(|e| e.to_string())
}

/// `IP:PORT`, `[IPv6]:PORT` or `HOST:PORT`. `localhost` is the IPv4 loopback without asking a
/// resolver (a minimal image has no /etc/hosts); another host name is resolved once, here, an
/// IPv4 address preferred (the sidecar's other listeners are IPv4).
fn parse_listen_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let expected =
        || format!("{s:?}: expected IP:PORT or HOST:PORT, e.g. 127.0.0.1:15090 or localhost:15090");
    let (host, port) = s.rsplit_once(':').ok_or_else(expected)?;
    let port: u16 = port.parse().map_err(|_| expected())?;
    if host.is_empty() {
        return Err(expected());
    }
    if host.eq_ignore_ascii_case("localhost") {
        return Ok(SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, port)));
    }
    let resolved: Vec<SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
        .map_err(|e| format!("{s:?}: cannot resolve {host:?}: {e}"))?
        .collect();
    resolved
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| resolved.first())
        .copied()
        .ok_or_else(|| format!("{s:?}: {host:?} resolves to no address"))
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    s.parse::<attache_api::KubeDuration>()
        .map(Duration::from)
        .map_err(|e| e.to_string())
}

fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err("must be greater than 0".into()),
        d => Ok(d),
    }
}

impl RunArgs {
    pub fn options(&self) -> SidecarOptions {
        let source = match &self.config_dir {
            Some(d) => ConfigSource::ConfigDir(d.clone()),
            None => ConfigSource::Local {
                manifests: self.manifest.clone(),
                secrets_dir: self.secrets_dir.clone(),
                redis: self.redis.clone(),
            },
        };
        // Local mode runs on a workstation: its admin endpoints stay on the machine. In a pod
        // the kubelet's probes and Prometheus come from outside the pod's loopback.
        let admin_ip = match source {
            ConfigSource::Local { .. } => std::net::Ipv4Addr::LOCALHOST,
            ConfigSource::ConfigDir(_) => std::net::Ipv4Addr::UNSPECIFIED,
        };
        let admin_addr = self
            .admin_addr
            .unwrap_or_else(|| SocketAddr::from((admin_ip, ports::ADMIN)));
        let webhook_addr = self
            .webhook_addr
            .unwrap_or_else(|| SocketAddr::from((admin_ip, ports::WEBHOOKS)));
        SidecarOptions {
            source,
            webhook_addr,
            first_port: self.first_port,
            listen_ip: std::net::Ipv4Addr::LOCALHOST.into(),
            proxy_addr: self.proxy_addr,
            admin_addr,
            limits: ConnectionLimits {
                header_timeout: self.header_timeout,
                idle_timeout: self.idle_timeout,
                max_connections: self.max_connections as usize,
            },
            telemetry: TelemetryOptions {
                access_log: self.access_log,
                otlp_endpoint: self.otlp_endpoint.clone(),
            },
        }
    }
}

/// An error and its causes on one line, each cause once: most of our error types already
/// print their source in their own message, so a cause whose text is already there is skipped.
pub fn error_report(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

/// CPUs this process may use: the cgroup v2 quota (`cpu.max`) if set, else the machine's.
pub fn default_worker_threads() -> usize {
    let machine = std::thread::available_parallelism().map_or(1, |n| n.get());
    let quota = std::fs::read_to_string("/sys/fs/cgroup/cpu.max")
        .ok()
        .and_then(|s| cgroup_cpus(&s));
    quota.map_or(machine, |q| q.min(machine)).max(1)
}

/// `"200000 100000"` → 2; `"max 100000"` → None; fractions round up.
fn cgroup_cpus(cpu_max: &str) -> Option<usize> {
    let mut it = cpu_max.split_whitespace();
    let quota: u64 = it.next()?.parse().ok()?;
    let period: u64 = it.next()?.parse().ok()?;
    if period == 0 {
        return None;
    }
    Some(quota.div_ceil(period) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_quota_is_read_and_rounded_up() {
        assert_eq!(cgroup_cpus("200000 100000\n"), Some(2));
        assert_eq!(cgroup_cpus("50000 100000"), Some(1));
        assert_eq!(cgroup_cpus("max 100000"), None);
        assert_eq!(cgroup_cpus("garbage"), None);
    }

    #[test]
    fn listen_addresses_take_a_host_name() {
        let v4 = |s: &str| parse_listen_addr(s).map(|a| a.to_string());
        assert_eq!(v4("127.0.0.1:15090").as_deref(), Ok("127.0.0.1:15090"));
        assert_eq!(v4("[::1]:15090").as_deref(), Ok("[::1]:15090"));
        assert_eq!(v4("localhost:15090").as_deref(), Ok("127.0.0.1:15090"));
        assert_eq!(v4("LOCALHOST:0").as_deref(), Ok("127.0.0.1:0"));
        for bad in [
            "15090",
            ":15090",
            "localhost",
            "localhost:http",
            "localhost:70000",
        ] {
            let e = parse_listen_addr(bad).unwrap_err();
            assert!(e.contains("HOST:PORT"), "{bad}: {e}");
        }
    }

    #[test]
    fn the_admin_listener_stays_on_loopback_in_local_mode() {
        let admin = |args: &[&str]| {
            let cli = Cli::try_parse_from(args).unwrap();
            // Irrefutable in a build without the demo.
            #[allow(irrefutable_let_patterns)]
            let Command::Run(r) = cli.command
            else {
                panic!("not run")
            };
            r.options().admin_addr.to_string()
        };
        let run = ["attache-sidecar", "run"];
        assert_eq!(
            admin(&[&run[..], &["--manifest", "m.yaml"]].concat()),
            "127.0.0.1:15090"
        );
        assert_eq!(
            admin(&[&run[..], &["--config-dir", "/etc/attache"]].concat()),
            "0.0.0.0:15090"
        );
        assert_eq!(
            admin(
                &[
                    &run[..],
                    &["--manifest", "m", "--admin-addr", "localhost:9"]
                ]
                .concat()
            ),
            "127.0.0.1:9"
        );
    }

    #[test]
    fn the_webhook_listener_stays_on_loopback_in_local_mode() {
        let webhook = |args: &[&str]| {
            let cli = Cli::try_parse_from(args).unwrap();
            #[allow(irrefutable_let_patterns)]
            let Command::Run(r) = cli.command
            else {
                panic!("not run")
            };
            r.options().webhook_addr.to_string()
        };
        assert_eq!(
            webhook(&["attache-sidecar", "run", "--manifest", "m"]),
            "127.0.0.1:15100"
        );
        assert_eq!(
            webhook(&["attache-sidecar", "run", "--config-dir", "d"]),
            "0.0.0.0:15100"
        );
        assert_eq!(
            webhook(&[
                "attache-sidecar",
                "run",
                "--manifest",
                "m",
                "--webhook-addr",
                "localhost:9"
            ]),
            "127.0.0.1:9"
        );
    }

    #[test]
    fn error_report_prints_each_cause_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("reading {path}: {source}")]
        struct Read {
            path: &'static str,
            source: std::io::Error,
        }
        #[derive(Debug, thiserror::Error)]
        #[error("configuration: {0}")]
        struct Config(#[from] Read);
        #[derive(Debug, thiserror::Error)]
        #[error("starting")]
        struct Start(#[source] Config);
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = Start(Config(Read {
            path: "m.yaml",
            source: io,
        }));
        assert_eq!(
            error_report(&e),
            "starting: configuration: reading m.yaml: no such file"
        );
    }

    #[test]
    fn cli_parses() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "attache-sidecar",
            "run",
            "--manifest",
            "a.yaml",
            "--manifest",
            "b.yaml",
            "--secrets-dir",
            "s",
            "--drain-timeout",
            "5s",
        ])
        .unwrap();
        // Irrefutable in a build without the demo.
        #[allow(irrefutable_let_patterns)]
        let Command::Run(r) = cli.command
        else {
            panic!()
        };
        assert_eq!(r.manifest.len(), 2);
        assert_eq!(r.drain_timeout, Duration::from_secs(5));
        assert_eq!(r.options().limits, ConnectionLimits::default());
        assert!(
            Cli::try_parse_from(["attache-sidecar", "run"]).is_err(),
            "a source is required"
        );
    }
}
