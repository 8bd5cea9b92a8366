//! Writing one rendered integration to `OUT/NAME/`.
//!
//! Each file is written to a temporary name and renamed into place, secret files first and
//! `config.json` last, so a sidecar watching the directory never reads half a file or a config
//! whose secrets are not there yet. Secret files are created with mode 0600. Secret files that
//! an earlier render wrote but this one does not need are removed afterwards.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use attache_api::config::files;

use super::Output;

/// Every file name the generated Secret can hold; the ones not rendered now are stale.
const SECRET_FILES: &[&str] = &[
    files::AUTH_CREDENTIAL,
    files::AUTH_USERNAME,
    files::AUTH_PASSWORD,
    files::OAUTH2_CLIENT_SECRET,
    files::CA_BUNDLE,
    files::CLIENT_CERT,
    files::CLIENT_KEY,
];

/// A file or directory that could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {}: {source}", path.display())]
pub struct WriteError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// Writes `out/NAME/`; returns the names of the files written, in order.
pub fn write_integration(out: &Path, output: &Output) -> Result<Vec<String>, WriteError> {
    let dir = out.join(&output.name);
    fs::create_dir_all(&dir).map_err(|source| WriteError {
        path: dir.clone(),
        source,
    })?;
    let mut written = Vec::new();
    for (name, bytes) in &output.rendered.files {
        write_atomic(&dir, name, bytes.expose(), 0o600)?;
        written.push(name.clone());
    }
    for (name, text) in output.rendered.config_map_data() {
        write_atomic(&dir, &name, text.as_bytes(), 0o644)?;
        written.push(name);
    }
    for stale in SECRET_FILES
        .iter()
        .filter(|f| !output.rendered.files.contains_key(**f))
    {
        let path = dir.join(stale);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(WriteError { path, source: e })
            }
            _ => {}
        }
    }
    Ok(written)
}

fn write_atomic(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> Result<(), WriteError> {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| WriteError { path, source }
    };
    // A leftover from an interrupted run would make `create_new` fail.
    let _ = fs::remove_file(&tmp);
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let result = opts.open(&tmp).and_then(|mut f| {
        io::Write::write_all(&mut f, bytes)?;
        f.sync_all()
    });
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(err(&tmp)(e));
    }
    fs::rename(&tmp, &path).map_err(err(&path))
}
