//! The README's commands, read from README.md itself so that it cannot drift from what works:
//! the blocks of "The two commands", "Local mode" and "Your first integration" run here word
//! for word where a command can run on this machine (no cluster, no network), with the built
//! binaries first on PATH as `cargo install` would put them; what needs a cluster (`kubectl`)
//! is checked against the files and names it uses instead.

use std::{
    net::TcpListener,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use attache_tests::{bin_path, sidecar::TempDir, wait_http_ok, Proc};
use serde_json::{json, Value};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn readme() -> String {
    std::fs::read_to_string(root().join("README.md")).expect("read README.md")
}

/// The fenced code blocks `(language, body)` of the `## ` section whose title starts with
/// `title`.
fn blocks(title: &str) -> Vec<(String, String)> {
    let text = readme();
    let start = text
        .find(&format!("\n## {title}"))
        .unwrap_or_else(|| panic!("README has no section {title:?}"));
    let section = &text[start + 1..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    let mut out = Vec::new();
    let mut lines = section.lines();
    while let Some(line) = lines.next() {
        if let Some(lang) = line.strip_prefix("```") {
            let body: Vec<&str> = lines.by_ref().take_while(|l| *l != "```").collect();
            out.push((lang.to_string(), body.join("\n") + "\n"));
        }
    }
    out
}

/// The commands of a shell block: lines with their trailing `# comment` removed, comment-only
/// lines (illustrated output) left out.
fn commands(block: &str) -> Vec<String> {
    block
        .lines()
        .map(|l| l.split(" #").next().unwrap_or("").trim().to_string())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

/// The directory of the built binaries, for PATH.
fn bin_dir() -> PathBuf {
    bin_path("attache-sidecar")
        .parent()
        .expect("binary has a directory")
        .to_path_buf()
}

fn path_with_bins() -> String {
    format!(
        "{}:{}",
        bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// `attache-operator ARGS...`, which must succeed; its stdout.
fn operator(args: &[&Path]) -> String {
    let out = Command::new(bin_path("attache-operator"))
        .args(args)
        .output()
        .expect("run attache-operator");
    assert!(
        out.status.success(),
        "attache-operator {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn the_two_commands() {
    let found = blocks("The two commands");
    assert_eq!(found.len(), 1, "one block");
    let block = &found[0].1;
    assert_eq!(
        commands(block),
        [
            "cargo run -p attache-sidecar -- demo",
            "cargo test --workspace"
        ]
    );
    // `cargo test --workspace` is the suite this test runs in; the demo runs here, as the
    // built binary that `cargo run -p attache-sidecar --` would run (the README says so).
    assert!(block.contains("# or: attache-sidecar demo"), "{block}");
    let out = Command::new(bin_path("attache-sidecar"))
        .arg("demo")
        .output()
        .expect("run attache-sidecar demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("Demo finished in"), "{stdout}");
}

/// Kills a process group when dropped, so that no sidecar outlives a failed test.
struct Group(u32);

impl Group {
    fn signal(&self, signal: &str) {
        let _ = Command::new("kill")
            .args([signal, "--", &format!("-{}", self.0)])
            .status();
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.signal("-KILL");
    }
}

#[tokio::test]
async fn local_mode_runs_word_for_word() {
    let found = blocks("Local mode");
    let shell: Vec<&String> = found
        .iter()
        .filter(|(lang, _)| lang == "sh")
        .map(|(_, b)| b)
        .collect();
    assert_eq!(shell.len(), 2, "the sidecar's block, then the app's");
    let (server, app) = (shell[0], shell[1]);
    // The README's commands use the default ports: they must be free.
    for addr in ["127.0.0.1:15001", "127.0.0.1:15080", "127.0.0.1:15090"] {
        if let Err(e) = TcpListener::bind(addr) {
            panic!("the README's local mode needs {addr}, which is taken: {e}");
        }
    }
    // A fresh directory that has the repository's examples/, as the root of a clone does.
    let dir = TempDir::new("readme-local");
    std::os::unix::fs::symlink(root().join("examples"), dir.path().join("examples"))
        .expect("symlink examples/");
    let bash = |script: &str| {
        let mut cmd = Command::new("bash");
        cmd.args(["-euo", "pipefail", "-c", script])
            .current_dir(dir.path())
            .env("PATH", path_with_bins())
            .env_remove("STRIPE_API_KEY");
        cmd
    };

    let mut cmd = bash(server);
    cmd.process_group(0);
    let mut sidecar = Proc::spawn_command(cmd);
    let group = Group(sidecar.pid());
    if let Err(e) = wait_http_ok("http://127.0.0.1:15090/readyz", Duration::from_secs(30)).await {
        panic!("{e:#}\nthe sidecar block printed:\n{}", sidecar.output());
    }
    assert_eq!(
        std::fs::read_to_string(dir.path().join("secrets/stripe-key/api-key")).unwrap(),
        "sk_test_replace_me"
    );
    assert!(
        sidecar
            .output()
            .contains("listening for integration stripe on http://127.0.0.1:15001"),
        "{}",
        sidecar.output()
    );

    let out = tokio::task::spawn_blocking({
        let mut cmd = bash(app);
        move || cmd.output().expect("run the app's block")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the app's block failed:\n{stdout}{}\nsidecar:\n{}",
        String::from_utf8_lossy(&out.stderr),
        sidecar.output()
    );
    assert!(stdout.starts_with("ready\n"), "{stdout}");
    // Both requests were answered by the sidecar (here, without network, with its own error).
    assert_eq!(stdout.matches("HTTP/1.1 ").count(), 2, "{stdout}");
    assert!(
        stdout.contains("attache_requests_total{integration=\"stripe\""),
        "{stdout}"
    );

    group.signal("-TERM");
    let status = sidecar.wait_exit(Duration::from_secs(30)).await;
    assert!(
        status.is_some(),
        "the sidecar did not stop on SIGTERM:\n{}",
        sidecar.output()
    );
}

#[test]
fn your_first_integration_matches_the_examples() {
    let found = blocks("Your first integration");
    let shell = &found
        .iter()
        .find(|(lang, _)| lang == "sh")
        .expect("sh block")
        .1;
    let cmds = commands(shell);
    let words = |c: &String| c.split_whitespace().map(str::to_string).collect::<Vec<_>>();

    // kubectl apply -f FILE: the file exists and is valid as the API server would judge it.
    let file = cmds
        .iter()
        .find_map(|c| c.strip_prefix("kubectl apply -f "))
        .expect("kubectl apply -f FILE");
    let file = root().join(file);
    operator(&[Path::new("validate"), Path::new("-f"), &file]);
    let text = std::fs::read_to_string(&file).unwrap();
    let xint: Value = serde_saphyr::from_str(&text).expect("one YAML document");
    let namespace = xint["metadata"]["namespace"].as_str().expect("a namespace");
    let name = xint["metadata"]["name"].as_str().unwrap();
    let key_ref = &xint["spec"]["auth"]["apiKey"]["secretKeyRef"];

    // The namespace is created first; every -n names it; the Secret is the one the file names.
    assert_eq!(cmds[0], format!("kubectl create namespace {namespace}"));
    for c in &cmds[1..] {
        let w = words(c);
        if let Some(i) = w.iter().position(|x| x == "-n") {
            assert_eq!(w[i + 1], namespace, "{c}");
        }
    }
    let create_secret = format!(
        "kubectl -n {namespace} create secret generic {} --from-literal={}=",
        key_ref["name"].as_str().unwrap(),
        key_ref["key"].as_str().unwrap()
    );
    assert!(
        cmds.iter().any(|c| c.starts_with(&create_secret)),
        "{create_secret}... in {cmds:?}"
    );
    assert!(cmds.contains(&format!("kubectl -n {namespace} get xint")));
    assert!(
        shell.contains(&format!("# {name} ")),
        "the output shown names {name}"
    );

    // The pod template annotations, on a Deployment of that namespace, get the sidecar and the
    // URL the README says the app calls.
    let yaml = &found
        .iter()
        .find(|(lang, _)| lang == "yaml")
        .expect("yaml block")
        .1;
    let snippet: Value = serde_saphyr::from_str(yaml).expect("the snippet is YAML");
    let annotations = snippet["spec"]["template"]["metadata"]["annotations"].clone();
    assert_eq!(annotations["attache.dev/inject"], "true");
    let deployment = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "checkout", "namespace": namespace},
        "spec": {
            "selector": {"matchLabels": {"app": "checkout"}},
            "template": {
                "metadata": {"labels": {"app": "checkout"}, "annotations": annotations},
                "spec": {"containers": [{"name": "app", "image": "checkout:1"}]},
            },
        },
    });
    let dir = TempDir::new("readme-inject");
    let deployment_file = dir.path().join("deployment.yaml");
    std::fs::write(&deployment_file, deployment.to_string()).unwrap();
    let injected = operator(&[
        Path::new("inject"),
        Path::new("-f"),
        &deployment_file,
        Path::new("-i"),
        &file,
    ]);
    assert!(injected.contains("name: attache-sidecar"), "{injected}");
    let url = "http://127.0.0.1:15001";
    assert!(
        injected.contains("ATTACHE_STRIPE_URL") && injected.contains(url),
        "{injected}"
    );
    let readme = readme();
    assert!(
        readme.contains(&format!(
            "`$ATTACHE_STRIPE_URL/v1/charges` (`{url}/v1/charges`)"
        )),
        "the README's URL is the injected one"
    );
}
