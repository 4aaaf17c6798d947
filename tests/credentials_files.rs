//! Credential files: every unsafe file is refused with its own message, and the key never
//! shows up in any message.

use mispd::credentials::{load, CredentialError};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

const KEY: &str = "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789ABCD";

fn setup() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let path = dir.path().join("misp.key");
    (dir, path)
}

fn write(path: &Path, content: &str, mode: u32) {
    std::fs::write(path, content).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn refuse(dir: &Path) -> CredentialError {
    let err = load("misp.key", None, dir, false).unwrap_err();
    let msg = err.to_string();
    assert!(
        !msg.contains(KEY) && !format!("{err:?}").contains(KEY),
        "key leaked: {msg}"
    );
    err
}

#[test]
fn good_file_loads_and_newline_is_stripped() {
    let (dir, path) = setup();
    write(&path, &format!("{KEY}\n"), 0o600);
    let key = load("misp.key", None, dir.path(), false).unwrap();
    assert_eq!(key.expose(), KEY);
    assert_eq!(format!("{key:?}"), "ApiKey(***)");
    write(&path, KEY, 0o400);
    assert_eq!(
        load("misp.key", None, dir.path(), false).unwrap().expose(),
        KEY
    );
}

#[test]
fn world_readable_0644_is_refused() {
    let (dir, path) = setup();
    write(&path, KEY, 0o644);
    let err = refuse(dir.path());
    assert!(
        matches!(err, CredentialError::BadMode { mode: 0o644, .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("0644") && msg.contains(&format!("chmod 600 {}", path.display())),
        "{msg}"
    );
}

#[test]
fn group_readable_0640_is_refused() {
    let (dir, path) = setup();
    write(&path, KEY, 0o640);
    let err = refuse(dir.path());
    assert!(
        matches!(err, CredentialError::BadMode { mode: 0o640, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("0640"));
}

#[test]
fn file_of_another_user_is_refused() {
    let (dir, path) = setup();
    write(&path, KEY, 0o600);
    let euid = mispd::sys::euid();
    if euid != 0 {
        eprintln!("not root: cannot chown to another user, ownership test skipped");
        return;
    }
    std::os::unix::fs::chown(&path, Some(65534), None).unwrap();
    let err = refuse(dir.path());
    assert!(
        matches!(err, CredentialError::BadOwner { owner: 65534, .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("uid 65534") && msg.contains(&format!("chown root: {}", path.display())),
        "{msg}"
    );
}

#[test]
fn symlink_is_refused_even_to_a_good_file() {
    let (dir, path) = setup();
    let real = dir.path().join("real.key");
    write(&real, KEY, 0o600);
    std::os::unix::fs::symlink(&real, &path).unwrap();
    let err = refuse(dir.path());
    assert!(matches!(err, CredentialError::Symlink { .. }), "{err:?}");
    assert!(err.to_string().contains("symbolic link"));
    // The systemd credentials directory is trusted for ownership, but not for links.
    let err = load(
        "misp.key",
        Some(dir.path()),
        Path::new("/nonexistent"),
        false,
    )
    .unwrap_err();
    assert!(matches!(err, CredentialError::Symlink { .. }), "{err:?}");
}

#[test]
fn empty_file_is_refused() {
    let (dir, path) = setup();
    write(&path, "\n", 0o600);
    let err = refuse(dir.path());
    assert!(matches!(err, CredentialError::Empty { .. }), "{err:?}");
    assert!(err.to_string().contains("is empty"));
}

#[test]
fn bad_format_is_refused_unless_allowed() {
    let (dir, path) = setup();
    write(&path, "not-a-misp-key", 0o600);
    let err = refuse(dir.path());
    assert!(
        matches!(err, CredentialError::BadFormat { len: 14, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("allow-nonstandard-key"));
    let key = load("misp.key", None, dir.path(), true).unwrap();
    assert_eq!(key.expose(), "not-a-misp-key");
    // A key with the right length but one bad character: the message must not echo it.
    let almost = format!("{}!", &KEY[..39]);
    write(&path, &almost, 0o600);
    let err = load("misp.key", None, dir.path(), false).unwrap_err();
    assert!(!err.to_string().contains(&almost[..20]), "{err}");
}

#[test]
fn missing_file_and_directory_problems() {
    let (dir, _) = setup();
    let err = refuse(dir.path());
    assert!(matches!(err, CredentialError::Missing { .. }), "{err:?}");
    std::fs::create_dir(dir.path().join("misp.key")).unwrap();
    assert!(matches!(
        refuse(dir.path()),
        CredentialError::NotRegular { .. }
    ));
    let (dir2, path2) = setup();
    write(&path2, KEY, 0o600);
    std::fs::set_permissions(dir2.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = refuse(dir2.path());
    assert!(
        matches!(err, CredentialError::DirWritable { mode: 0o777, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("chmod go-w"));
}

#[test]
fn unsafe_names_are_refused() {
    let (dir, _) = setup();
    for name in ["../misp.key", "a/b", "", ".."] {
        let err = load(name, None, dir.path(), false).unwrap_err();
        assert!(
            matches!(err, CredentialError::BadName { .. }),
            "{name}: {err:?}"
        );
    }
}

#[test]
fn systemd_credentials_directory_is_used_first() {
    // systemd makes $CREDENTIALS_DIRECTORY files itself (owned by the service user, 0400):
    // ownership and mode checks do not apply there; the fallback directory is not read.
    let (creds, path) = setup();
    write(&path, &format!("{KEY}\n"), 0o444);
    let key = load(
        "misp.key",
        Some(creds.path()),
        Path::new("/nonexistent"),
        false,
    )
    .unwrap();
    assert_eq!(key.expose(), KEY);
    write(&path, "", 0o400);
    let err = load(
        "misp.key",
        Some(creds.path()),
        Path::new("/nonexistent"),
        false,
    )
    .unwrap_err();
    assert!(matches!(err, CredentialError::Empty { .. }), "{err:?}");
}

#[test]
fn process_hardening_makes_it_non_dumpable() {
    assert!(mispd::sys::is_dumpable());
    mispd::sys::harden_process().unwrap();
    assert!(!mispd::sys::is_dumpable());
    assert_eq!(mispd::sys::core_limit().unwrap(), 0);
}

#[test]
fn fifo_is_refused_without_blocking() {
    let (dir, path) = setup();
    let ok = std::process::Command::new("mkfifo")
        .arg("-m")
        .arg("600")
        .arg(&path)
        .status();
    if !ok.is_ok_and(|s| s.success()) {
        eprintln!("mkfifo not available: FIFO test skipped");
        return;
    }
    let err = refuse(dir.path());
    assert!(matches!(err, CredentialError::NotRegular { .. }), "{err:?}");
}

#[test]
fn oversized_file_is_refused() {
    let (dir, path) = setup();
    write(&path, &"A".repeat(10_000), 0o600);
    assert!(matches!(
        refuse(dir.path()),
        CredentialError::TooBig { size: 10_000, .. }
    ));
}

#[test]
fn directory_of_another_user_is_refused() {
    let (dir, path) = setup();
    write(&path, KEY, 0o600);
    if mispd::sys::euid() != 0 {
        eprintln!("not root: cannot chown to another user, ownership test skipped");
        return;
    }
    std::os::unix::fs::chown(dir.path(), Some(65534), None).unwrap();
    let err = refuse(dir.path());
    assert!(
        matches!(err, CredentialError::DirOwner { owner: 65534, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("chown root:"));
}
