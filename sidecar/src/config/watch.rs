//! Change detection for hot reload.
//!
//! Polling a fingerprint every few hundred milliseconds, rather than inotify: the watched
//! trees are a handful of small files, and Kubernetes' atomic `..data` symlink swaps,
//! editors' rename-over-writes and ConfigMap propagation all defeat naive inotify watches
//! (events land on the old inode or a symlink).
//!
//! The fingerprint must stay cheap whatever lies in the watched folders: it hashes each file's
//! metadata (inode, size, times, followed through symlinks), plus the content of files small
//! enough to be a manifest, secret or config (at most [`MAX_FILE_BYTES`]), so that two quick
//! same-size edits within one timestamp tick are still seen. Larger files (which the loader
//! refuses anyway) and non-regular files (FIFOs, devices) are never read.

use std::{
    collections::hash_map::DefaultHasher,
    hash::{Hash, Hasher},
    os::unix::fs::MetadataExt,
    path::Path,
};

use attache_api::fs::MAX_FILE_BYTES;

/// A hash of every regular file (followed through symlinks) under the given roots, with names.
pub fn fingerprint(roots: &[std::path::PathBuf]) -> u64 {
    let mut h = DefaultHasher::new();
    for root in roots {
        hash_path(root, &mut h, 0);
    }
    h.finish()
}

fn hash_path(path: &Path, h: &mut DefaultHasher, depth: usize) {
    // Deep trees are not ours; also guards against symlink loops.
    if depth > 8 {
        return;
    }
    path.hash(h);
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => {
            let Ok(rd) = std::fs::read_dir(path) else {
                1u8.hash(h);
                return;
            };
            let mut names: Vec<_> = rd
                .filter_map(|e| e.ok())
                .map(|e| e.file_name())
                .filter(|n| !n.to_string_lossy().starts_with('.'))
                .collect();
            names.sort();
            for n in names {
                hash_path(&path.join(n), h, depth + 1);
            }
        }
        Ok(m) => {
            (
                m.dev(),
                m.ino(),
                m.len(),
                m.mtime(),
                m.mtime_nsec(),
                m.ctime(),
                m.ctime_nsec(),
            )
                .hash(h);
            if m.is_file() && m.len() <= MAX_FILE_BYTES {
                match std::fs::read(path) {
                    Ok(bytes) => bytes.hash(h),
                    Err(_) => 2u8.hash(h),
                }
            }
        }
        Err(_) => 3u8.hash(h),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sees_content_changes_through_a_data_symlink_swap() {
        let root = std::env::temp_dir().join(format!("attache-watch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let gen1 = root.join("..2026_01");
        let gen2 = root.join("..2026_02");
        std::fs::create_dir_all(&gen1).unwrap();
        std::fs::create_dir_all(&gen2).unwrap();
        std::fs::write(gen1.join("key"), "one").unwrap();
        std::fs::write(gen2.join("key"), "two").unwrap();
        std::os::unix::fs::symlink("..2026_01", root.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/key", root.join("key")).unwrap();
        let roots = vec![root.clone()];
        let before = fingerprint(&roots);
        assert_eq!(before, fingerprint(&roots), "stable when nothing changes");
        // The kubelet's swap: a new symlink renamed over ..data.
        std::os::unix::fs::symlink("..2026_02", root.join("..data_tmp")).unwrap();
        std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
        assert_ne!(before, fingerprint(&roots));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
