//! The `inject` subcommand's arguments and its run.

use std::{io, path::PathBuf, time::Duration};

use clap::Args;
use k8s_openapi::apimachinery::pkg::version::Info;

use super::{InputArgs, Status, Streams};
use crate::{
    admission::{
        settings::{native_sidecars_supported, DEFAULT_IMAGE},
        InjectorSettings,
    },
    inject::{inject, to_yaml, KnownIntegration},
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
    /// container, placed first. Same as --kubernetes-version 1.28.
    #[arg(long)]
    pub no_native_sidecar: bool,
    /// The Kubernetes version the output is for: MAJOR.MINOR, or `auto` to ask the API server
    /// of the current kubeconfig. From 1.29 the sidecar is a native sidecar (an init container
    /// with restartPolicy Always), before it a regular container placed first.
    #[arg(long, value_name = "VERSION", default_value = ASSUMED_VERSION, value_parser = parse_version)]
    pub kubernetes_version: TargetVersion,
    /// The sidecar image.
    #[arg(long, value_name = "IMAGE", default_value = DEFAULT_IMAGE)]
    pub image: String,
}

/// What `inject` assumes without --kubernetes-version: native sidecars.
const ASSUMED_VERSION: &str = "1.29";

/// The cluster version `inject` writes for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetVersion {
    Known {
        major: u32,
        minor: u32,
    },
    /// Ask the current kubeconfig's API server.
    Auto,
}

fn parse_version(v: &str) -> Result<TargetVersion, String> {
    if v == "auto" {
        return Ok(TargetVersion::Auto);
    }
    let (major, minor) = v
        .trim_start_matches('v')
        .split_once('.')
        .ok_or_else(|| format!("{v:?}: expected MAJOR.MINOR (e.g. 1.30) or auto"))?;
    let minor = minor.split('.').next().unwrap_or(minor);
    match (major.parse(), minor.parse()) {
        (Ok(major), Ok(minor)) => Ok(TargetVersion::Known { major, minor }),
        _ => Err(format!("{v:?}: expected MAJOR.MINOR (e.g. 1.30) or auto")),
    }
}

/// Whether the target cluster runs native sidecars, and how that was decided (for the note
/// on stderr).
fn native_sidecars(args: &InjectArgs) -> Result<(bool, String), String> {
    if args.no_native_sidecar {
        return Ok((false, "--no-native-sidecar".into()));
    }
    let info = match &args.kubernetes_version {
        TargetVersion::Known { major, minor } => Info {
            major: major.to_string(),
            minor: minor.to_string(),
            ..Info::default()
        },
        TargetVersion::Auto => server_version()?,
    };
    let native = native_sidecars_supported(&info);
    let shown = if info.git_version.is_empty() {
        format!("{}.{}", info.major, info.minor)
    } else {
        info.git_version.clone()
    };
    let source = match args.kubernetes_version {
        TargetVersion::Auto => "read from the current kubeconfig's API server",
        TargetVersion::Known { .. } if args.kubernetes_version == default_version() => {
            "assumed; --kubernetes-version auto reads the cluster's"
        }
        TargetVersion::Known { .. } => "--kubernetes-version",
    };
    Ok((native, format!("Kubernetes {shown} ({source})")))
}

fn default_version() -> TargetVersion {
    parse_version(ASSUMED_VERSION).unwrap_or(TargetVersion::Auto)
}

/// `/version` of the current kubeconfig's API server.
fn server_version() -> Result<Info, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async {
        let client = kube::Client::try_default()
            .await
            .map_err(|e| format!("--kubernetes-version auto: no usable kubeconfig: {e}"))?;
        match tokio::time::timeout(Duration::from_secs(10), client.apiserver_version()).await {
            Ok(Ok(info)) => Ok(info),
            Ok(Err(e)) => Err(format!("--kubernetes-version auto: {e}")),
            Err(_) => {
                Err("--kubernetes-version auto: the API server did not answer within 10 s".into())
            }
        }
    })
}

/// Prints the mutated documents on stdout and one line per pod on stderr; on failure prints
/// only the reasons, all of them.
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
    // Every integration the -i inputs define, valid or not: a pod naming an invalid one is not
    // told as well that it is missing (the integration's own problems were printed).
    let known: Vec<KnownIntegration> = report
        .checked
        .iter()
        .filter(|c| c.resource.kind.as_deref() == Some(validate::KIND))
        .filter_map(|c| {
            Some(KnownIntegration {
                webhooks: c.outcome.as_ref().is_ok_and(|x| x.spec.webhooks.is_some()),
                namespace: c.resource.namespace.clone(),
                name: c.resource.name.clone()?,
            })
        })
        .collect();
    if !int_inputs.errors.is_empty() {
        // Which integrations exist is unknown: every pod would be told its are missing.
        return Ok(Status::Failure);
    }
    if known.is_empty() {
        writeln!(
            io.stderr,
            "no ExternalIntegration ({}) in the -i inputs",
            validate::API_VERSION
        )?;
        return Ok(Status::Failure);
    }
    let (native, version) = match native_sidecars(args) {
        Ok(v) => v,
        Err(e) => {
            writeln!(io.stderr, "{e}")?;
            return Ok(Status::Failure);
        }
    };
    let settings = InjectorSettings {
        image: args.image.clone(),
        native_sidecars: native,
        ..InjectorSettings::default()
    };
    let out = match inject(&docs, &known, &settings) {
        Ok(out) if ok => out,
        Ok(_) => {
            writeln!(io.stderr, "nothing printed: fix the inputs first")?;
            return Ok(Status::Failure);
        }
        Err(errors) => {
            for e in &errors {
                writeln!(io.stderr, "{e}")?;
            }
            writeln!(io.stderr, "nothing printed: fix the inputs first")?;
            return Ok(Status::Failure);
        }
    };
    let yaml = match to_yaml(&out.documents) {
        Ok(y) => y,
        Err(e) => {
            writeln!(io.stderr, "cannot write YAML: {e}")?;
            return Ok(Status::Failure);
        }
    };
    io.stdout.write_all(yaml.as_bytes())?;
    let form = if native {
        "native sidecar"
    } else {
        "regular container placed first (no native sidecars before 1.29)"
    };
    writeln!(io.stderr, "for {version}: the sidecar is a {form}")?;
    for n in &out.notes {
        writeln!(io.stderr, "{n}")?;
    }
    Ok(Status::Success)
}

#[cfg(test)]
mod version_tests {
    use super::*;

    #[test]
    fn versions_parse_as_major_minor_or_auto() {
        assert_eq!(
            parse_version("1.30"),
            Ok(TargetVersion::Known {
                major: 1,
                minor: 30
            })
        );
        assert_eq!(
            parse_version("v1.28.4"),
            Ok(TargetVersion::Known {
                major: 1,
                minor: 28
            })
        );
        assert_eq!(parse_version("auto"), Ok(TargetVersion::Auto));
        assert!(parse_version("1").unwrap_err().contains("MAJOR.MINOR"));
        assert!(parse_version("one.two").is_err());
    }

    #[test]
    fn native_sidecars_from_1_29_and_the_assumption_is_said() {
        let args = |v: &str, no_native: bool| InjectArgs {
            input: InputArgs { files: vec![] },
            integrations: vec![],
            no_native_sidecar: no_native,
            kubernetes_version: parse_version(v).unwrap(),
            image: DEFAULT_IMAGE.into(),
        };
        let (native, note) = native_sidecars(&args(ASSUMED_VERSION, false)).unwrap();
        assert!(native);
        assert!(note.contains("assumed"), "{note}");
        assert!(!native_sidecars(&args("1.28", false)).unwrap().0);
        assert!(native_sidecars(&args("1.31", false)).unwrap().0);
        assert!(!native_sidecars(&args("1.31", true)).unwrap().0);
    }
}
