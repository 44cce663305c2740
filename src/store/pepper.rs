//! The pepper: 32 random bytes in a sidecar file `<db>.pepper` (mode 0600) that key the
//! HMAC stored instead of a secret hash. Owns creating, loading and using it; must never
//! print it, log it or put it in the database.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::store::{SecretHash, StoreError, StoreResult};

const LEN: usize = 32;
const CHECK_LABEL: &[u8] = b"keyward pepper check v1";

/// The secret key of the store's MACs. Debug never shows it. The HMAC is keyed once (its
/// inner and outer pads computed when the pepper is loaded) and cloned for each MAC.
pub(crate) struct Pepper {
    keyed: Hmac<Sha256>,
}

impl std::fmt::Debug for Pepper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pepper(<redacted>)")
    }
}

/// `<db path>.pepper`
pub(crate) fn path_for(db: &Path) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push(".pepper");
    PathBuf::from(s)
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Backend(format!("{what} {}: {e}", path.display()))
}

impl Pepper {
    fn new(bytes: Zeroizing<[u8; LEN]>) -> StoreResult<Pepper> {
        // HMAC accepts keys of any length, so this error is not expected.
        let keyed = <Hmac<Sha256> as Mac>::new_from_slice(bytes.as_ref())
            .map_err(|_| StoreError::Backend("cannot key the HMAC with the pepper".into()))?;
        Ok(Pepper { keyed })
    }

    fn mac_bytes(&self, data: &[u8]) -> StoreResult<[u8; 32]> {
        let mut m = self.keyed.clone();
        m.update(data);
        Ok(m.finalize().into_bytes().into())
    }

    /// HMAC-SHA256(pepper, lowercase hex SHA-256 of the secret). Refuses anything that is
    /// not 64 hex digits, so a plaintext secret passed by mistake is never stored.
    pub(crate) fn mac(&self, hash: &SecretHash) -> StoreResult<Vec<u8>> {
        let h = hash.0.as_bytes();
        if h.len() != 64 || !h.iter().all(u8::is_ascii_hexdigit) {
            return Err(StoreError::Invalid(
                "secret_hash must be the 64-digit hex SHA-256 of the secret".into(),
            ));
        }
        let lower = Zeroizing::new(hash.0.to_ascii_lowercase());
        Ok(self.mac_bytes(lower.as_bytes())?.to_vec())
    }

    /// A public fingerprint of the pepper, stored in `meta` to detect a pepper file that
    /// belongs to another database.
    pub(crate) fn check_value(&self) -> StoreResult<String> {
        Ok(hex::encode(self.mac_bytes(CHECK_LABEL)?))
    }
}

/// Load the pepper; `Ok(None)` when the file does not exist.
pub(crate) fn load(path: &Path) -> StoreResult<Option<Pepper>> {
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("cannot open pepper file", path, e)),
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = f
            .metadata()
            .map_err(|e| io_err("cannot stat pepper file", path, e))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(StoreError::Refused(format!(
                "pepper file {} is accessible by other users (mode {:o}); run `chmod 600` on it",
                path.display(),
                mode & 0o777
            )));
        }
    }
    let mut buf = Zeroizing::new(Vec::with_capacity(LEN + 1));
    f.take(LEN as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| io_err("cannot read pepper file", path, e))?;
    if buf.len() != LEN {
        return Err(StoreError::Backend(format!(
            "pepper file {} is corrupt (expected {LEN} bytes, found {})",
            path.display(),
            buf.len()
        )));
    }
    let mut bytes = Zeroizing::new([0u8; LEN]);
    bytes.copy_from_slice(&buf);
    Pepper::new(bytes).map(Some)
}

fn open_new(path: &Path) -> std::io::Result<File> {
    let mut o = OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(path)
}

/// Create a new pepper atomically: write a temporary file (0600, fsync), then hard-link it
/// to the final name, which fails if another process created one first — then theirs is
/// used. Readers therefore never see a partially written pepper.
pub(crate) fn create(path: &Path) -> StoreResult<Pepper> {
    let mut bytes = Zeroizing::new([0u8; LEN]);
    rand::rngs::OsRng.fill_bytes(bytes.as_mut());

    let mut nonce = [0u8; 8];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(format!(".tmp-{}", hex::encode(nonce)));
    let tmp = PathBuf::from(tmp_name);

    let write = |p: &Path| -> std::io::Result<()> {
        let mut f = open_new(p)?;
        f.write_all(bytes.as_ref())?;
        f.sync_all()
    };
    write(&tmp).map_err(|e| io_err("cannot write pepper file", &tmp, e))?;
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            // Another process won the race: use its pepper.
            return load(path)?.ok_or_else(|| {
                StoreError::Backend(format!(
                    "pepper file {} vanished while opening",
                    path.display()
                ))
            });
        }
        // File systems without hard links: exclusive create of the final name.
        Err(_) => write(path).map_err(|e| io_err("cannot create pepper file", path, e))?,
    }
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Pepper::new(bytes)
}
