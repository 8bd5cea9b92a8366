//! A real `redis-server` for tests (Debian's package; CI installs it): started on a free
//! loopback port with no persistence, killed and started again on the same port to test what
//! clients do while it is away.
//!
//! When the program is missing, [`RedisServer::start`] returns None after saying so, unless
//! `ATTACHE_TEST_TOOLS=required` (CI), where a missing program fails the test.

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use crate::process::{free_port, Proc};

const PROGRAM: &str = "redis-server";

pub struct RedisServer {
    proc: Option<Proc>,
    port: u16,
}

/// Where `redis-server` is, if installed (PATH, then Debian's /usr/bin).
fn program() -> Option<PathBuf> {
    let found = Command::new("which")
        .arg(PROGRAM)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    found.or_else(|| {
        let p = PathBuf::from("/usr/bin").join(PROGRAM);
        p.exists().then_some(p)
    })
}

/// True when tests must fail, not skip, without the real programs.
pub fn tools_required() -> bool {
    std::env::var("ATTACHE_TEST_TOOLS").is_ok_and(|v| v == "required")
}

impl RedisServer {
    /// A fresh server on a free port, or None (with a message) when redis-server is missing.
    pub async fn start(test: &str) -> Option<RedisServer> {
        if program().is_none() {
            assert!(
                !tools_required(),
                "{test}: redis-server is not installed and ATTACHE_TEST_TOOLS=required \
                 (scripts/install-test-tools.sh installs it)"
            );
            eprintln!(
                "{test}: skipped: redis-server is not installed (apt-get install redis-server)"
            );
            return None;
        }
        let mut server = RedisServer {
            proc: None,
            port: free_port(),
        };
        server.restart().await;
        Some(server)
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server at once (SIGKILL): clients see connections reset.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    /// Starts the server again on the same port (empty: no persistence) and waits until it
    /// accepts connections.
    pub async fn restart(&mut self) {
        self.kill();
        let bin = program().expect("redis-server is installed");
        let port = self.port.to_string();
        let proc = Proc::spawn(
            &bin,
            &[
                "--port",
                &port,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
            ],
        );
        self.proc = Some(proc);
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not listen on {addr} within 10 s; output:\n{}",
                self.proc.as_ref().map(Proc::output).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
