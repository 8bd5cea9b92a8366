//! The `inject` subcommand's arguments and its run.

use std::{io, path::PathBuf};

use clap::Args;

use super::{inject, to_yaml, KnownIntegration};
use crate::{
    admission::{settings::DEFAULT_IMAGE, InjectorSettings},
    cli::{InputArgs, Status, Streams},
    manifests, validate,
};

#[derive(Debug, Args)]
pub struct InjectArgs {
    #[command(flatten)]
    pub input: InputArgs,
    /// ExternalIntegration manifests: the integrations that exist (YAML, several documents
    /// each, or directories of them).
    #[arg(short = 'i', long = "integrations", value_name = "FILE", required = true, num_args = 1..)]
    pub integrations: Vec<PathBuf>,
    /// The cluster has no native sidecars (Kubernetes before 1.29): make the sidecar a regular
    /// container, placed first.
    #[arg(long)]
    pub no_native_sidecar: bool,
    /// The sidecar image.
    #[arg(long, value_name = "IMAGE", default_value = DEFAULT_IMAGE)]
    pub image: String,
}

/// Prints the mutated documents on stdout and one line per pod on stderr; on failure prints
/// only the reasons.
pub fn execute(args: &InjectArgs, io: Streams<'_>) -> io::Result<Status> {
    let docs = manifests::read_inputs(&args.input.files, io.stdin);
    let int_inputs = manifests::read_inputs(&args.integrations, io.stdin);
    let mut ok = true;
    for e in docs.errors.iter().chain(&int_inputs.errors) {
        writeln!(io.stderr, "{e}")?;
        ok = false;
    }
    let report = validate::check_inputs(&int_inputs);
    for p in report.problems() {
        writeln!(io.stderr, "{p}")?;
        ok = false;
    }
    let known: Vec<KnownIntegration> = report
        .integrations()
        .map(|(_, i)| KnownIntegration {
            namespace: i.metadata.namespace.clone(),
            name: i.metadata.name.clone().unwrap_or_default(),
        })
        .collect();
    if ok && known.is_empty() {
        writeln!(
            io.stderr,
            "no ExternalIntegration ({}) in the -i inputs",
            validate::API_VERSION
        )?;
        ok = false;
    }
    if !ok {
        return Ok(Status::Failure);
    }
    let settings = InjectorSettings {
        image: args.image.clone(),
        native_sidecars: !args.no_native_sidecar,
        ..InjectorSettings::default()
    };
    match inject(&docs, &known, &settings) {
        Ok(out) => {
            let yaml = match to_yaml(&out.documents) {
                Ok(y) => y,
                Err(e) => {
                    writeln!(io.stderr, "cannot write YAML: {e}")?;
                    return Ok(Status::Failure);
                }
            };
            io.stdout.write_all(yaml.as_bytes())?;
            for n in &out.notes {
                writeln!(io.stderr, "{n}")?;
            }
            Ok(Status::Success)
        }
        Err(errors) => {
            for e in &errors {
                writeln!(io.stderr, "{e}")?;
            }
            writeln!(io.stderr, "nothing printed: fix the inputs first")?;
            Ok(Status::Failure)
        }
    }
}
