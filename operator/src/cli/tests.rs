use clap::Parser;

use super::*;

/// Runs the CLI in-process: (status, stdout, stderr).
fn run(args: &[&str], stdin: &str) -> (Status, String, String) {
    let cli = Cli::try_parse_from(args).unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let status = execute(
        cli,
        Streams {
            stdin: &mut stdin.as_bytes(),
            stdout: &mut out,
            stderr: &mut err,
        },
    )
    .unwrap();
    (
        status,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

#[test]
fn run_takes_the_controller_flags() {
    let cli =
        Cli::try_parse_from(["attache-operator", "run", "--leader-election", "false"]).unwrap();
    assert!(matches!(cli.command, Command::Run(a) if !a.leader_election));
}

#[test]
fn crd_prints_the_generated_yaml() {
    let (status, out, _) = run(&["attache-operator", "crd"], "");
    assert_eq!(status, Status::Success);
    assert_eq!(out, crd::crd_yaml().unwrap());
}

#[test]
fn validate_reads_stdin() {
    let good = "apiVersion: attache.dev/v1alpha1\nkind: ExternalIntegration\n\
                metadata: {name: a}\nspec: {upstream: {url: \"https://a.example\"}}\n";
    let (status, out, err) = run(&["attache-operator", "validate", "-f", "-"], good);
    assert_eq!(
        (status, out.as_str(), err.as_str()),
        (Status::Success, "<stdin>: ExternalIntegration a: OK\n", "")
    );

    let bad = good.replace("https", "http");
    let (status, out, err) = run(&["attache-operator", "validate", "-f", "-"], &bad);
    assert_eq!(status, Status::Failure);
    assert!(out.is_empty());
    assert!(
        err.starts_with("<stdin>: ExternalIntegration a: spec.upstream.url: "),
        "{err}"
    );
}

#[test]
fn validate_fails_when_there_is_nothing_to_validate() {
    let (status, _, err) = run(
        &["attache-operator", "validate", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
    );
    assert_eq!(status, Status::Failure);
    assert!(err.contains("no ExternalIntegration"), "{err}");
}

#[test]
fn files_can_be_repeated_or_listed() {
    let parse = |args: &[&str]| match Cli::try_parse_from(args).unwrap().command {
        Command::Validate(v) => v.input.files,
        other => panic!("{other:?}"),
    };
    let both = [PathBuf::from("a.yaml"), PathBuf::from("b.yaml")];
    assert_eq!(parse(&["x", "validate", "-f", "a.yaml", "b.yaml"]), both);
    assert_eq!(
        parse(&["x", "validate", "-f", "a.yaml", "--filename", "b.yaml"]),
        both
    );
    assert!(Cli::try_parse_from(["x", "validate"]).is_err());
}

#[test]
fn render_needs_its_directories_and_at_least_one_pod() {
    let base = [
        "x",
        "render",
        "-f",
        "a.yaml",
        "--secrets-dir",
        "s",
        "--out",
        "o",
    ];
    let cli = Cli::try_parse_from(base).unwrap();
    match cli.command {
        Command::Render(r) => assert_eq!(r.pods, 1),
        other => panic!("{other:?}"),
    }
    assert!(Cli::try_parse_from(base.iter().chain(&["--pods", "0"])).is_err());
    assert!(Cli::try_parse_from(["x", "render", "-f", "a.yaml", "--out", "o"]).is_err());
}

#[test]
fn render_refuses_a_missing_secrets_dir() {
    let cli = Cli::try_parse_from([
        "x",
        "render",
        "-f",
        "-",
        "--secrets-dir",
        "/nonexistent/attache-secrets",
        "--out",
        "/nonexistent/out",
    ])
    .unwrap();
    let err = execute(
        cli,
        Streams {
            stdin: &mut "".as_bytes(),
            stdout: &mut Vec::new(),
            stderr: &mut Vec::new(),
        },
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "--secrets-dir /nonexistent/attache-secrets: not a directory"
    );
}
