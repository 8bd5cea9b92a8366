use std::fs;

use super::*;

fn write(root: &Path, name: &str, key: &str, value: impl AsRef<[u8]>) {
    fs::create_dir_all(root.join(name)).unwrap();
    fs::write(root.join(name).join(key), value).unwrap();
}

fn unavailable(r: Result<SecretBytes, SourceError>) -> String {
    match r {
        Err(SourceError::Unavailable(m)) => m,
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[test]
fn reads_keys_and_tells_missing_objects_from_missing_keys() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "stripe-key", "api-key", "sk_test_1\n");
    let src = DirSecretSource::new(dir.path());
    let v = src.secret_key("stripe-key", "api-key").unwrap();
    assert_eq!(v.expose(), b"sk_test_1\n");
    assert_eq!(src.config_map_key("stripe-key", "api-key").unwrap(), v);
    assert_eq!(
        src.secret_key("stripe-key", "other"),
        Err(SourceError::KeyNotFound)
    );
    assert_eq!(
        src.secret_key("nope", "api-key"),
        Err(SourceError::ObjectNotFound)
    );
    assert_eq!(
        src.config_map_key("nope", "ca.crt"),
        Err(SourceError::ObjectNotFound)
    );
    // The typed error names the path that was looked for.
    match src.read("stripe-key", "other") {
        Err(e @ DirSourceError::KeyNotFound(_)) => assert_eq!(
            e.to_string(),
            format!(
                "{} not found",
                dir.path().join("stripe-key/other").display()
            )
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn refuses_names_and_keys_that_leave_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("ok")).unwrap();
    let src = DirSecretSource::new(dir.path().join("ok"));
    for (name, key) in [
        ("..", "x"),
        ("a/b", "x"),
        ("ok", ".."),
        ("ok", "a/b"),
        ("ok", ""),
        ("ok", "..data"),
    ] {
        assert!(
            matches!(src.secret_key(name, key), Err(SourceError::Unavailable(_))),
            "{name:?} {key:?}"
        );
    }
}

#[test]
fn names_and_keys_follow_kubernetes_rules_and_say_why_not() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "Stripe_Key", "api-key", "x");
    let src = DirSecretSource::new(dir.path());
    assert_eq!(
        unavailable(src.secret_key("Stripe_Key", "api-key")),
        "\"Stripe_Key\" is not a valid object name: use lower case letters, digits, '-' and \
         '.', starting and ending with a letter or digit"
    );
    assert_eq!(
        unavailable(src.secret_key("stripe", "api key")),
        "\"api key\" is not a valid key: use letters, digits, '-', '_' and '.'"
    );
    assert_eq!(src.object_dir("Stripe_Key"), None);
    assert_eq!(src.object_dir("../x"), None);
    assert_eq!(
        src.object_dir("stripe-key"),
        Some(dir.path().join("stripe-key"))
    );
}

#[test]
fn a_file_where_a_directory_belongs_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("flat"), "x").unwrap();
    let src = DirSecretSource::new(dir.path());
    let m = unavailable(src.secret_key("flat", "k"));
    assert!(m.ends_with("is not a directory"), "{m}");
}

#[test]
fn without_a_directory_a_lookup_names_the_missing_flag() {
    let src = DirSecretSource::without_dir();
    assert_eq!(
        unavailable(src.secret_key("stripe-key", "api-key")),
        "no --secrets-dir given"
    );
    assert_eq!(
        unavailable(src.config_map_key("bank-ca", "ca.crt")),
        "no --secrets-dir given"
    );
    assert_eq!(src.object_dir("stripe-key"), None);
}

#[cfg(unix)]
#[test]
fn follows_symlinks_as_a_mounted_secret_volume_has_them() {
    use std::os::unix::fs::symlink;

    // The kubelet's layout: DIR/NAME/key -> ..data/key, ..data -> ..<generation>/.
    let dir = tempfile::tempdir().unwrap();
    let volume = dir.path().join("bank-mtls");
    write(&volume, "..2026_01_01", "tls.crt", "cert");
    symlink("..2026_01_01", volume.join("..data")).unwrap();
    symlink("..data/tls.crt", volume.join("tls.crt")).unwrap();
    // And an object folder that is itself a link to one elsewhere.
    let elsewhere = tempfile::tempdir().unwrap();
    write(elsewhere.path(), "real", "token", "t0k");
    symlink(elsewhere.path().join("real"), dir.path().join("linked")).unwrap();
    // A link to nothing is a missing key.
    symlink("..data/tls.key", volume.join("tls.key")).unwrap();

    let src = DirSecretSource::new(dir.path());
    assert_eq!(
        src.secret_key("bank-mtls", "tls.crt").unwrap().expose(),
        b"cert"
    );
    assert_eq!(src.secret_key("linked", "token").unwrap().expose(), b"t0k");
    assert_eq!(
        src.secret_key("bank-mtls", "tls.key"),
        Err(SourceError::KeyNotFound)
    );
}

#[test]
fn files_larger_than_a_secret_can_be_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let limit = usize::try_from(MAX_FILE_BYTES).unwrap();
    write(dir.path(), "big", "at-limit", vec![b'a'; limit]);
    write(dir.path(), "big", "over", vec![b'a'; limit + 1]);
    let src = DirSecretSource::new(dir.path());
    assert_eq!(src.secret_key("big", "at-limit").unwrap().len(), limit);
    let m = unavailable(src.secret_key("big", "over"));
    assert!(
        m.ends_with("over is larger than 1048576 bytes, the most a Secret or ConfigMap holds"),
        "{m}"
    );
}

#[test]
fn a_directory_where_a_key_belongs_is_unavailable_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("obj/sub")).unwrap();
    let src = DirSecretSource::new(dir.path());
    let m = unavailable(src.secret_key("obj", "sub"));
    assert!(
        m.starts_with(&dir.path().join("obj/sub").display().to_string()),
        "{m}"
    );
}
