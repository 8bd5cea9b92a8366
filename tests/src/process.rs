//! Runs our real binaries as child processes, keeping their logs for assertions and echoing
//! them to the test's stderr so a failing end-to-end test shows what the binary said.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read};
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::anyhow;

/// Overrides where [`bin_path`] looks, for running the tests against prebuilt binaries.
pub const BIN_DIR_ENV: &str = "ATTACHE_BIN_DIR";

/// Path of a workspace binary next to the running test executable (`target/<profile>/NAME`).
pub fn bin_path(name: &str) -> PathBuf {
    let file = format!("{name}{}", std::env::consts::EXE_SUFFIX);
    let dir = match std::env::var_os(BIN_DIR_ENV) {
        Some(dir) => PathBuf::from(dir),
        None => {
            let exe = std::env::current_exe().expect("current test executable");
            let mut dir = exe
                .parent()
                .expect("test executable has a directory")
                .to_path_buf();
            if dir.file_name() == Some(OsStr::new("deps")) {
                dir.pop();
            }
            dir
        }
    };
    let path = dir.join(&file);
    assert!(
        path.is_file(),
        "binary {} not found; build it with `cargo test --workspace` (or `cargo build --workspace`), \
         or point {BIN_DIR_ENV} at a directory holding it",
        path.display()
    );
    path
}

/// A port that was free a moment ago on 127.0.0.1 (racy by nature, good enough for tests).
pub fn free_port() -> u16 {
    free_ports(1)[0]
}

/// `n` distinct free ports, held together while chosen so they cannot collide.
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind an ephemeral port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("listener address").port())
        .collect()
}

/// The first of `n` consecutive free ports, for binaries that number listeners from a base
/// port (the sidecar's `--first-port`).
pub fn free_port_range(n: u16) -> u16 {
    for _ in 0..200 {
        let base = free_port();
        if base.checked_add(n).is_none() {
            continue;
        }
        let held: Result<Vec<TcpListener>, _> = (base..base + n)
            .map(|p| TcpListener::bind((Ipv4Addr::LOCALHOST, p)))
            .collect();
        if held.is_ok() {
            return base;
        }
    }
    panic!("no range of {n} consecutive free ports found");
}

/// Polls GET `url` until it answers 200, e.g. a freshly started `/readyz`.
pub async fn wait_http_ok(url: &str, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let client = crate::client::HttpClient::new().with_timeout(Duration::from_secs(2));
    loop {
        let last = match client.get(url).await {
            Ok(r) if r.status == 200 => return Ok(()),
            Ok(r) => format!("status {}: {}", r.status, r.text()),
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() >= deadline {
            return Err(anyhow!("{url} not OK after {timeout:?}; last: {last}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A running child process whose stdout and stderr are captured; killed on drop.
pub struct Proc {
    name: String,
    child: Child,
    output: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
}

impl Proc {
    /// Starts `bin` with `args`; panics if it cannot start, as no test can go on then.
    pub fn spawn(bin: &Path, args: &[impl AsRef<OsStr>]) -> Proc {
        let mut cmd = Command::new(bin);
        cmd.args(args);
        Proc::spawn_command(cmd)
    }

    /// Starts a prepared command (for env vars or a working directory); output is captured.
    pub fn spawn_command(mut cmd: Command) -> Proc {
        let name = Path::new(cmd.get_program())
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "proc".to_string());
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {:?}: {e}", cmd.get_program()));
        let output = Arc::new(Mutex::new(String::new()));
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            readers.push(capture(name.clone(), out, output.clone()));
        }
        if let Some(err) = child.stderr.take() {
            readers.push(capture(name.clone(), err, output.clone()));
        }
        Proc {
            name,
            child,
            output,
            readers,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the process wrote to stdout and stderr so far, interleaved by line.
    pub fn output(&self) -> String {
        self.output
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits until the output contains `needle`, e.g. a listener's start-up log line.
    pub async fn wait_for_output(&self, needle: &str, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.output().contains(needle) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(anyhow!(
                    "{} did not print {needle:?} within {timeout:?}; output so far:\n{}",
                    self.name,
                    self.output()
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Asks for a graceful shutdown; `kill(1)` keeps this crate free of unsafe libc calls.
    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill -TERM");
        assert!(status.success(), "kill -TERM {} failed", self.child.id());
    }

    /// Kills the process at once (SIGKILL).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The exit status if the process has exited.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits up to `timeout` for the process to exit; `None` if it is still running.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_status() {
                self.drain_readers().await;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Gives the reader threads a moment to drain the pipes, so `output()` is complete after
    /// an exit; bounded, since a grandchild could hold the pipes open.
    async fn drain_readers(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(2);
        while !self.readers.iter().all(JoinHandle::is_finished) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.try_status().is_none() {
            self.kill();
        }
    }
}

fn capture(
    name: String,
    stream: impl Read + Send + 'static,
    output: Arc<Mutex<String>>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&line);
                    eprint!("[{name}] {text}");
                    if !text.ends_with('\n') {
                        eprintln!();
                    }
                    let mut all = output.lock().unwrap_or_else(|e| e.into_inner());
                    all.push_str(&text);
                    if !text.ends_with('\n') {
                        all.push('\n');
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::{Action, Upstream};

    #[test]
    fn free_ports_are_distinct_and_bindable() {
        let ports = free_ports(5);
        let mut sorted = ports.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 5);
        let base = free_port_range(3);
        for p in base..base + 3 {
            TcpListener::bind((Ipv4Addr::LOCALHOST, p)).unwrap();
        }
        assert_ne!(free_port(), 0);
    }

    #[test]
    #[should_panic(expected = "cargo test --workspace")]
    fn bin_path_explains_a_missing_binary() {
        bin_path("no-such-attache-binary");
    }

    #[tokio::test]
    async fn captures_output_and_stops_on_sigterm() {
        let script = "echo started on 127.0.0.1:1; echo oops >&2; \
                      trap 'echo bye; exit 3' TERM; while true; do sleep 0.05; done";
        let mut proc = Proc::spawn(Path::new("/bin/sh"), &["-c", script]);
        proc.wait_for_output("started on", Duration::from_secs(5))
            .await
            .unwrap();
        proc.wait_for_output("oops", Duration::from_secs(5))
            .await
            .unwrap();
        assert!(proc.wait_exit(Duration::from_millis(100)).await.is_none());
        proc.sigterm();
        let status = proc.wait_exit(Duration::from_secs(5)).await.unwrap();
        assert_eq!(status.code(), Some(3));
        assert!(proc.output().contains("bye"), "{}", proc.output());
        assert!(proc
            .wait_for_output("never printed", Duration::from_millis(50))
            .await
            .is_err());
    }

    #[tokio::test]
    async fn drop_kills_the_process() {
        let proc = Proc::spawn(Path::new("/bin/sleep"), &["30"]);
        let pid = proc.pid();
        drop(proc);
        let alive = Command::new("kill")
            .args(["-0", &pid.to_string()])
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(!alive.success(), "pid {pid} survived drop");
    }

    #[tokio::test]
    async fn wait_http_ok_polls_until_200() {
        let up = Upstream::builder().start().await;
        up.script(
            "/readyz",
            vec![
                Action::respond(503, "warming"),
                Action::respond(503, "warming"),
            ],
        );
        let url = format!("{}/readyz", up.url());
        wait_http_ok(&url, Duration::from_secs(5)).await.unwrap();
        assert_eq!(up.requests_for("/readyz").len(), 3);

        up.set_default_action(Action::respond(500, "broken"));
        let err = wait_http_ok(&url, Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("broken"), "{err}");
    }
}
