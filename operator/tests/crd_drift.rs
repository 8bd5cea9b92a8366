//! `crds/externalintegrations.attache.dev.yaml` must hold exactly what `attache-operator crd`
//! prints, so the checked-in CRD (and the Helm chart's copy of it) never drifts from the types.

use std::{path::Path, process::Command};

use attache_operator::crd::{CRD_FILE, REGENERATE_COMMAND};

#[test]
fn checked_in_crd_matches_attache_operator_crd() {
    let out = Command::new(env!("CARGO_BIN_EXE_attache-operator"))
        .arg("crd")
        .output()
        .expect("run attache-operator crd");
    assert!(out.status.success(), "attache-operator crd failed: {out:?}");
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(CRD_FILE);
    let checked_in = std::fs::read(&path).unwrap_or_else(|e| {
        panic!("{CRD_FILE} cannot be read ({e}): create it with\n    {REGENERATE_COMMAND}")
    });
    if checked_in != out.stdout {
        let generated = String::from_utf8_lossy(&out.stdout);
        let file = String::from_utf8_lossy(&checked_in);
        let first = generated
            .lines()
            .zip(file.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| generated.lines().count().min(file.lines().count()));
        panic!(
            "{CRD_FILE} is stale (first difference at line {}): regenerate it from the repository root with\n    {REGENERATE_COMMAND}",
            first + 1
        );
    }
}
