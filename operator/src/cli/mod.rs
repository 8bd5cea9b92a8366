//! The command line: argument definitions and what each subcommand does with them.
//!
//! [`execute`] writes to the streams it is given and returns a [`Status`], so the commands are
//! tested in-process as well as through the binary.

use std::{
    io::{self, Read, Write},
    path::PathBuf,
    process::ExitCode,
};

use attache_api::{fs::DirSecretSource, RenderOptions};
use clap::{Args, Parser, Subcommand};

pub mod inject;

use crate::{
    check::{self, CheckArgs},
    crd::{self, CrdError},
    manifests::{self, Inputs},
    render::{self, write::WriteError},
    validate,
};

#[derive(Debug, Parser)]
#[command(
    name = "attache-operator",
    version,
    about = "Attaché operator: turns ExternalIntegrations into sidecar config, injects the sidecar",
    long_about = None
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the controller (leader-elected) and the admission webhook, with /metrics,
    /// /healthz and /readyz on --metrics-addr. Connects with the in-cluster service account,
    /// else KUBECONFIG / ~/.kube/config.
    Run(Box<crate::run::RunArgs>),
    /// Print the ExternalIntegration CRD as YAML (the bytes of crds/externalintegrations.attache.dev.yaml).
    Crd,
    /// Check manifests as the cluster would at `kubectl apply`, without a cluster.
    ///
    /// Every ExternalIntegration in the inputs is checked against the CRD's schema (unknown
    /// fields, types, required fields, ranges) and its validation rules. Prints one OK line per
    /// valid integration; otherwise one line per problem, naming file, resource and field, and
    /// exits with status 1. Documents of other kinds are skipped.
    Validate(ValidateArgs),
    /// Write, per integration, exactly the files its ConfigMap and Secret would hold.
    ///
    /// Writes OUT/NAME/config.json (the ConfigMap) and the Secret's files (mode 0600), the
    /// layout `attache-sidecar run --config-dir OUT` serves. Kubernetes objects are stood in
    /// for by files: key KEY of Secret NAME is DIR/NAME/KEY (a kubernetes.io/tls Secret is
    /// DIR/NAME/tls.crt and DIR/NAME/tls.key), and a CA bundle from a ConfigMap
    /// (tls.caBundleRef.kind: ConfigMap) is read from DIR/NAME/KEY as well. Names and keys
    /// follow Kubernetes' rules; files may be symlinks and hold at most 1 MiB. Nothing is
    /// written unless every integration renders.
    Render(RenderArgs),
    /// Print the objects as the sidecar injector would mutate them (like `linkerd inject`).
    ///
    /// Pods and the pod templates of Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs
    /// and CronJobs get the attache-sidecar container, its volumes and the ATTACHE_*_URL env
    /// vars; other documents pass through unchanged. Every pod is injected unless it opts out
    /// (attache.dev/inject: "false"), with the -i integrations of its namespace (or those its
    /// attache.dev/integrations annotation names). Fails, printing nothing, naming each
    /// missing integration.
    Inject(inject::InjectArgs),
    /// Check the installation in the current kubeconfig's cluster, one line per question.
    ///
    /// The CRD (installed, same as this version's), the RBAC the operator's ServiceAccount
    /// needs (SubjectAccessReview), the leader (Lease renewed, its pod Ready), the webhook
    /// configuration and its caBundle, the serving certificate (dates, names, signer), whether
    /// the API server reaches the webhook (a dry-run pod), native sidecar support and every
    /// ExternalIntegration's readiness. Exits 1 if any check fails.
    Check(CheckArgs),
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    #[command(flatten)]
    pub input: InputArgs,
}

#[derive(Debug, Args)]
pub struct InputArgs {
    /// Manifest files (YAML or JSON, several documents each), directories of them, or - for
    /// standard input.
    #[arg(short = 'f', long = "filename", value_name = "FILE", required = true, num_args = 1..)]
    pub files: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RenderArgs {
    #[command(flatten)]
    pub input: InputArgs,
    /// Directory standing in for the namespace's Secrets and ConfigMaps: DIR/NAME/KEY.
    #[arg(long, value_name = "DIR")]
    pub secrets_dir: PathBuf,
    /// Where to write: one folder per integration, OUT/NAME/.
    #[arg(long, value_name = "OUT")]
    pub out: PathBuf,
    /// Pods sharing the integration: a `rateLimit.scope: shared` limit is divided by it.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub pods: u32,
}

/// How a command ended; becomes the exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Exit 0.
    Success,
    /// Exit 1: the inputs are invalid or could not be rendered; the reasons were printed.
    Failure,
}

/// What stops a command other than bad inputs.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Crd(#[from] CrdError),
    #[error("cannot print: {0}")]
    Output(#[from] io::Error),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error("--secrets-dir {}: {reason}", path.display())]
    SecretsDir { path: PathBuf, reason: String },
    #[error(transparent)]
    Run(#[from] crate::run::RunError),
}

/// The standard streams a command uses.
pub struct Streams<'a> {
    pub stdin: &'a mut dyn Read,
    pub stdout: &'a mut dyn Write,
    pub stderr: &'a mut dyn Write,
}

// === impl Status ===

impl From<Status> for ExitCode {
    fn from(s: Status) -> Self {
        match s {
            Status::Success => ExitCode::SUCCESS,
            Status::Failure => ExitCode::from(1),
        }
    }
}

/// Runs one command.
pub fn execute(cli: Cli, io: Streams<'_>) -> Result<Status, Error> {
    crate::init_crypto();
    match cli.command {
        Command::Run(args) => {
            crate::run::execute(*args)?;
            Ok(Status::Success)
        }
        Command::Crd => {
            io.stdout.write_all(crd::crd_yaml()?.as_bytes())?;
            Ok(Status::Success)
        }
        Command::Validate(args) => validate_cmd(&args, io),
        Command::Render(args) => render_cmd(&args, io),
        Command::Inject(args) => Ok(inject::execute(&args, io)?),
        Command::Check(args) => check_cmd(&args, io),
    }
}

/// Runs every check and prints the report.
fn check_cmd(args: &CheckArgs, io: Streams<'_>) -> Result<Status, Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(crate::run::RunError::Runtime)?;
    let report = runtime.block_on(check::run(args));
    report.print(io.stdout)?;
    Ok(if report.failed() == 0 {
        Status::Success
    } else {
        Status::Failure
    })
}

fn validate_cmd(args: &ValidateArgs, io: Streams<'_>) -> Result<Status, Error> {
    let inputs = manifests::read_inputs(&args.input.files, io.stdin);
    let report = validate::check_inputs(&inputs);
    let mut ok = report_input_errors(&inputs, io.stderr)?;
    for c in &report.checked {
        match &c.outcome {
            Ok(_) => writeln!(io.stdout, "{}: OK", c.subject())?,
            Err(errs) => {
                ok = false;
                for e in errs {
                    writeln!(io.stderr, "{}: {e}", c.subject())?;
                }
            }
        }
    }
    if report.checked.is_empty() && inputs.errors.is_empty() {
        writeln!(
            io.stderr,
            "no ExternalIntegration ({}) in the inputs ({} other documents skipped)",
            validate::API_VERSION,
            report.skipped
        )?;
        ok = false;
    }
    Ok(if ok { Status::Success } else { Status::Failure })
}

fn render_cmd(args: &RenderArgs, io: Streams<'_>) -> Result<Status, Error> {
    if !args.secrets_dir.is_dir() {
        return Err(Error::SecretsDir {
            path: args.secrets_dir.clone(),
            reason: "not a directory".into(),
        });
    }
    let inputs = manifests::read_inputs(&args.input.files, io.stdin);
    let report = validate::check_inputs(&inputs);
    let inputs_ok = report_input_errors(&inputs, io.stderr)?;
    let problems = report.problems();
    for p in &problems {
        writeln!(io.stderr, "{p}")?;
    }
    // The valid integrations are rendered even when others are not, so that one run names
    // their missing Secrets too.
    let source = DirSecretSource::new(&args.secrets_dir);
    let opts = RenderOptions {
        pods_sharing: args.pods,
    };
    let rendered = render::render_all(&report, &source, opts);
    if let Err(failures) = &rendered {
        for f in failures {
            writeln!(io.stderr, "{f}")?;
        }
    }
    let outputs = match rendered {
        Ok(outputs) if inputs_ok && problems.is_empty() => outputs,
        Ok(_) => {
            writeln!(io.stderr, "nothing written: fix the manifests first")?;
            return Ok(Status::Failure);
        }
        Err(_) => {
            writeln!(io.stderr, "nothing written")?;
            return Ok(Status::Failure);
        }
    };
    if outputs.is_empty() {
        writeln!(
            io.stderr,
            "no ExternalIntegration in the inputs: nothing to render"
        )?;
        return Ok(Status::Failure);
    }
    for o in &outputs {
        let files = render::write::write_integration(&args.out, o)?;
        let dir = args.out.join(&o.name);
        writeln!(
            io.stdout,
            "{}: wrote {} ({})",
            o.subject,
            dir.display(),
            files.join(", ")
        )?;
    }
    Ok(Status::Success)
}

/// Prints the inputs that could not be read; true when there were none.
fn report_input_errors(inputs: &Inputs, stderr: &mut dyn Write) -> io::Result<bool> {
    for e in &inputs.errors {
        writeln!(stderr, "{e}")?;
    }
    Ok(inputs.errors.is_empty())
}

#[cfg(test)]
mod tests;
