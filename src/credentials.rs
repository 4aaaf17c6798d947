//! The MISP API key: loaded from a systemd credential or a root-only file, checked, and kept
//! as a secret type from the first byte read. Only the MISP client uses it.

use secrecy::{ExposeSecret, SecretString};
use std::fmt;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// What the shipped unit's `SetCredential=NAME:NO-KEY-INSTALLED` fallback puts in place of a key
/// file that does not exist yet: the unit starts, and this source says exactly what is missing.
pub const UNIT_PLACEHOLDER: &str = "NO-KEY-INSTALLED";

/// Largest key file accepted: a MISP key is 40 bytes; anything big is not a key.
const MAX_KEY_FILE: u64 = 4096;

/// A MISP API key. `Debug` and `Display` print `ApiKey(***)`; the only way to the text is
/// [`ApiKey::expose`], called when building the `Authorization` header. Not `Clone`: share it
/// behind an `Arc` so that one copy exists.
pub struct ApiKey(SecretString);

impl ApiKey {
    /// Wraps a secret that is already a `SecretString` (tests, or a future key source).
    pub fn from_secret(secret: SecretString) -> ApiKey {
        ApiKey(secret)
    }

    /// The key text. Keep the borrow short; never log or format it.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// Whether the key has MISP's format (40 ASCII letters and digits).
    pub fn is_standard(&self) -> bool {
        looks_like_api_key(self.expose())
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

/// Whether `s` has the shape of a MISP API key: exactly 40 ASCII letters and digits. The config
/// loader uses it to refuse keys pasted into the configuration.
pub fn looks_like_api_key(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Why a credential was refused. Messages name the file and the fix, never the key.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("invalid credential name {name:?}: use a plain file name (letters, digits, `.`, `-`, `_`), no `/`")]
    BadName { name: String },
    #[error("credential {} does not exist; create it (`install -m 600 -o root /dev/null {}` then write the key) or fix the source's `api-key` (the credential name)", path.display(), path.display())]
    Missing { path: PathBuf },
    #[error("credential {} is a symbolic link; mispd refuses links: replace it with the file itself", path.display())]
    Symlink { path: PathBuf },
    #[error("credential {} is not a regular file; put the key in a plain file", path.display())]
    NotRegular { path: PathBuf },
    #[error("credential {} is owned by uid {owner}, not by root or mispd's uid {euid}; fix with `chown root: {}`", path.display(), path.display())]
    BadOwner {
        path: PathBuf,
        owner: u32,
        euid: u32,
    },
    #[error("credential {} has mode {mode:04o}: group and others must have no access; fix with `chmod 600 {}`", path.display(), path.display())]
    BadMode { path: PathBuf, mode: u32 },
    #[error("credential directory {} has mode {mode:04o} and is writable by group or others, so the key could be swapped; fix with `chmod go-w {}`", path.display(), path.display())]
    DirWritable { path: PathBuf, mode: u32 },
    #[error("credential directory {} is owned by uid {owner}, not by root or mispd's uid {euid}, so that user could swap the key; fix with `chown root: {}`", path.display(), path.display())]
    DirOwner {
        path: PathBuf,
        owner: u32,
        euid: u32,
    },
    #[error("credential {} cannot be read by mispd (uid {euid}): permission denied; pass it with systemd's `LoadCredential=` (recommended) or make mispd's user own it", path.display())]
    Unreadable { path: PathBuf, euid: u32 },
    #[error("credential {} is empty; write the MISP API key into it", path.display())]
    Empty { path: PathBuf },
    #[error("credential {} is {size} bytes: too big to be an API key (at most {MAX_KEY_FILE})", path.display())]
    TooBig { path: PathBuf, size: u64 },
    #[error("credential {} is not valid UTF-8 text", path.display())]
    NotUtf8 { path: PathBuf },
    #[error("credential {} does not look like a MISP API key (40 letters and digits, here {len} characters{}); fix the file, or set `allow-nonstandard-key = true` if your MISP uses another format", path.display(), if *.has_space { ", with inner whitespace" } else { "" })]
    BadFormat {
        path: PathBuf,
        len: usize,
        has_space: bool,
    },
    #[error("no API key installed for credential {}: the unit's placeholder is in place; write the key to /etc/mispd/credentials/{name} (chmod 600) or use LoadCredentialEncrypted=, then `systemctl restart mispd`", path.display())]
    NotInstalled { path: PathBuf, name: String },
    #[error("cannot read credential {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Whether a credential name is a safe single file name.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'@'))
}

/// Loads the credential `name`.
///
/// With `credentials_directory` (systemd's `$CREDENTIALS_DIRECTORY`, made by
/// `LoadCredential=`/`LoadCredentialEncrypted=`) the file is taken from there: systemd set its
/// ownership and mode, so only links and empty files are refused. Otherwise it comes from
/// `credentials_dir`, which must not be writable by group or others, and the file must be a
/// regular file (not a link) owned by root or by mispd's effective uid, with no group or other
/// permission bits.
///
/// The trailing newline is stripped. The key must look like a MISP key unless
/// `allow_nonstandard` (then a warning is logged).
pub fn load(
    name: &str,
    credentials_directory: Option<&Path>,
    credentials_dir: &Path,
    allow_nonstandard: bool,
) -> Result<ApiKey, CredentialError> {
    if !valid_name(name) {
        return Err(CredentialError::BadName {
            name: name.to_string(),
        });
    }
    let (path, strict) = match credentials_directory {
        Some(dir) => (dir.join(name), false),
        None => (credentials_dir.join(name), true),
    };
    if strict {
        check_dir(credentials_dir)?;
    }
    let bytes = read_checked(&path, strict)?;
    parse_key(&path, bytes, allow_nonstandard)
}

fn check_dir(dir: &Path) -> Result<(), CredentialError> {
    let meta = std::fs::metadata(dir).map_err(|source| io_err(dir, source))?;
    let euid = crate::sys::euid();
    if meta.uid() != 0 && meta.uid() != euid {
        return Err(CredentialError::DirOwner {
            path: dir.to_path_buf(),
            owner: meta.uid(),
            euid,
        });
    }
    let mode = meta.permissions().mode() & 0o7777;
    // A sticky world-writable directory (/tmp) still lets others plant files: refuse it too.
    if mode & 0o022 != 0 {
        return Err(CredentialError::DirWritable {
            path: dir.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

fn io_err(path: &Path, source: std::io::Error) -> CredentialError {
    if source.kind() == std::io::ErrorKind::NotFound {
        CredentialError::Missing {
            path: path.to_path_buf(),
        }
    } else if source.kind() == std::io::ErrorKind::PermissionDenied {
        CredentialError::Unreadable {
            path: path.to_path_buf(),
            euid: crate::sys::euid(),
        }
    } else {
        CredentialError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

fn read_checked(path: &Path, strict: bool) -> Result<Zeroizing<Vec<u8>>, CredentialError> {
    // O_NOFOLLOW: the final component may not be a link; checks below use the opened fd's
    // metadata, so a file swapped between check and read is not possible.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path);
    let file = match file {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(CredentialError::Symlink {
                path: path.to_path_buf(),
            })
        }
        Err(e) => return Err(io_err(path, e)),
    };
    let meta = file.metadata().map_err(|e| io_err(path, e))?;
    if !meta.file_type().is_file() {
        return Err(CredentialError::NotRegular {
            path: path.to_path_buf(),
        });
    }
    if strict {
        let euid = crate::sys::euid();
        if meta.uid() != 0 && meta.uid() != euid {
            return Err(CredentialError::BadOwner {
                path: path.to_path_buf(),
                owner: meta.uid(),
                euid,
            });
        }
        let mode = meta.mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(CredentialError::BadMode {
                path: path.to_path_buf(),
                mode,
            });
        }
    }
    if meta.len() > MAX_KEY_FILE {
        return Err(CredentialError::TooBig {
            path: path.to_path_buf(),
            size: meta.len(),
        });
    }
    let mut buf = Zeroizing::new(Vec::with_capacity(MAX_KEY_FILE as usize + 1));
    // Reading into a pre-sized buffer: no reallocation leaves an unwiped copy behind.
    file.take(MAX_KEY_FILE + 1)
        .read_to_end(&mut buf)
        .map_err(|e| io_err(path, e))?;
    if buf.len() as u64 > MAX_KEY_FILE {
        return Err(CredentialError::TooBig {
            path: path.to_path_buf(),
            size: buf.len() as u64,
        });
    }
    Ok(buf)
}

fn parse_key(
    path: &Path,
    bytes: Zeroizing<Vec<u8>>,
    allow_nonstandard: bool,
) -> Result<ApiKey, CredentialError> {
    let mut end = bytes.len();
    while end > 0 && matches!(bytes[end - 1], b'\n' | b'\r') {
        end -= 1;
    }
    let trimmed = &bytes[..end];
    if trimmed.is_empty() {
        return Err(CredentialError::Empty {
            path: path.to_path_buf(),
        });
    }
    let text = std::str::from_utf8(trimmed).map_err(|_| CredentialError::NotUtf8 {
        path: path.to_path_buf(),
    })?;
    if text == UNIT_PLACEHOLDER {
        return Err(CredentialError::NotInstalled {
            path: path.to_path_buf(),
            name: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        });
    }
    if !looks_like_api_key(text) {
        let has_space = text.chars().any(char::is_whitespace);
        if !allow_nonstandard || has_space || text.chars().any(char::is_control) {
            return Err(CredentialError::BadFormat {
                path: path.to_path_buf(),
                len: text.chars().count(),
                has_space,
            });
        }
        tracing::warn!(
            path = %path.display(),
            "the API key does not have MISP's usual format (40 letters and digits); using it because allow-nonstandard-key is set"
        );
    }
    // Exact capacity, so turning the String into the secret's Box<str> does not reallocate.
    let mut owned = String::with_capacity(text.len());
    owned.push_str(text);
    Ok(ApiKey(SecretString::from(owned)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_shape() {
        assert!(looks_like_api_key(&"a1".repeat(20)));
        assert!(!looks_like_api_key(&"a1".repeat(19)));
        assert!(!looks_like_api_key(&format!("{}-", "a".repeat(39))));
        assert!(!looks_like_api_key(&"é".repeat(20)));
    }

    #[test]
    fn names() {
        assert!(valid_name("misp-main.key"));
        for bad in ["", ".", "..", "a/b", "../x", "a b", "a\0"] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn debug_is_masked() {
        let key = ApiKey::from_secret(SecretString::from("x".repeat(40)));
        assert_eq!(format!("{key:?}"), "ApiKey(***)");
        assert_eq!(format!("{key}"), "ApiKey(***)");
    }

    #[test]
    fn parse_strips_newlines_only() {
        let p = Path::new("/x");
        let k = parse_key(
            p,
            Zeroizing::new(format!("{}\r\n", "A".repeat(40)).into_bytes()),
            false,
        )
        .unwrap();
        assert_eq!(k.expose(), "A".repeat(40));
        let e = parse_key(p, Zeroizing::new(b" short\n".to_vec()), true).unwrap_err();
        assert!(matches!(
            e,
            CredentialError::BadFormat {
                has_space: true,
                ..
            }
        ));
        let ok = parse_key(p, Zeroizing::new(b"short-but-allowed".to_vec()), true).unwrap();
        assert!(!ok.is_standard());
        assert!(matches!(
            parse_key(p, Zeroizing::new(b"\n".to_vec()), false),
            Err(CredentialError::Empty { .. })
        ));
    }
}

#[cfg(test)]
mod placeholder_tests {
    use super::*;

    #[test]
    fn unit_placeholder_says_no_key_is_installed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("misp-main");
        std::fs::write(&p, UNIT_PLACEHOLDER).unwrap();
        let err = load(
            "misp-main",
            Some(dir.path()),
            Path::new("/nonexistent"),
            true,
        )
        .unwrap_err();
        assert!(matches!(err, CredentialError::NotInstalled { .. }), "{err}");
        assert!(err.to_string().contains("no API key installed"), "{err}");
    }
}
