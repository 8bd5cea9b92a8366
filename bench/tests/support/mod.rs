//! What the bench crate's process tests share: `attache-bench` servers on free ports, the
//! rig's PKI, and the load client's JSON report.

#![allow(dead_code)] // each test binary uses its own part

use std::{
    ffi::OsStr,
    io::{BufRead, BufReader, Read},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, ChildStdout, Command, Stdio},
};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_attache-bench");

/// An `attache-bench` server on a free port (it prints `listening on ADDR` first), killed on
/// drop; the rest of its stdout stays readable.
pub struct Server {
    child: Child,
    stdout: BufReader<ChildStdout>,
    pub addr: SocketAddr,
}

impl Server {
    pub fn start<S: AsRef<OsStr>>(args: &[S]) -> Self {
        let mut child = Command::new(BIN)
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start attache-bench");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout
            .read_line(&mut line)
            .expect("read the listening line");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .expect("an address");
        Self {
            child,
            stdout,
            addr,
        }
    }

    /// `attache-bench upstream` (mTLS, requires a client certificate) with the rig's `certs`.
    pub fn upstream(certs: &Path) -> Self {
        let certs = certs.as_os_str();
        Self::start(&[
            OsStr::new("upstream"),
            OsStr::new("--addr"),
            OsStr::new("127.0.0.1:0"),
            OsStr::new("--certs"),
            certs,
        ])
    }

    /// Stops the server and returns what it printed after the listening line.
    pub fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut rest = String::new();
        let _ = self.stdout.read_to_string(&mut rest);
        rest
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The rig's CA, server and client certificates (`attache-bench pki`) in a temporary folder.
pub fn pki() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("pki");
    let status = Command::new(BIN)
        .args(["pki", "--out"])
        .arg(&out)
        .status()
        .expect("run pki");
    assert!(status.success());
    (dir, out)
}

/// Runs `attache-bench load ARGS`, returning the parsed report, or stderr on failure.
pub fn load<S: AsRef<OsStr>>(args: &[S]) -> Result<Value, String> {
    let out = Command::new(BIN)
        .arg("load")
        .args(args)
        .output()
        .expect("run load");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(serde_json::from_slice(&out.stdout).expect("a JSON report"))
}

/// The load client's flags for mTLS with the rig's client certificate.
pub fn mtls_args(pki: &Path) -> Vec<String> {
    ["ca.crt", "client.crt", "client.key"]
        .iter()
        .zip(["--cacert", "--cert", "--key"])
        .flat_map(|(file, flag)| [flag.to_string(), pki.join(file).display().to_string()])
        .collect()
}
