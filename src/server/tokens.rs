//! Bearer tokens of `keyward serve`: the tokens file (names, roles and SHA-256 hashes only),
//! token generation, and constant-time lookup of a presented token. Must never store, log
//! or return a plaintext token after `create` hands it out once.
//!
//! # The tokens file
//!
//! YAML, written by `keyward token create` (mode 0600), read by `keyward serve --tokens FILE`:
//!
//! ```yaml
//! # keyward serve tokens: SHA-256 hashes only; a token itself is shown once, at creation.
//! tokens:
//!   - name: ci-apply
//!     role: write
//!     sha256: 5e0b...   # hex SHA-256 of the whole token string
//!     created_at: 2026-11-21T22:00:00Z
//! ```
//!
//! Tokens may also come from the environment variable `KEYWARD_SERVE_TOKENS`:
//! `name:role:sha256hex` entries separated by commas or whitespace (hashes only there too).
//!
//! A token is `kwt_` followed by 32 random bytes in lowercase hex (256 bits of entropy), so
//! an unsalted SHA-256 is enough: it cannot be brute-forced, and a leaked tokens file gives
//! no usable token.

use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use subtle::ConstantTimeEq;

/// Prefix of every token keyward makes (so secret scanners can spot them).
pub const TOKEN_PREFIX: &str = "kwt_";
/// The environment variable with extra token entries (`name:role:sha256`).
pub const TOKENS_ENV: &str = "KEYWARD_SERVE_TOKENS";

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// list, get, events (what `keyward plan` needs).
    Read,
    /// everything `read` may, plus every change and the apply lock (what `apply` needs).
    Write,
    /// only `POST /v1/verify` (what applications need).
    Verify,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Verify => "verify",
        }
    }
    fn parse(s: &str) -> Option<Role> {
        match s {
            "read" => Some(Role::Read),
            "write" => Some(Role::Write),
            "verify" => Some(Role::Verify),
            _ => None,
        }
    }
    /// Whether a token of this role may do what `needed` requires. `write` includes `read`
    /// (apply lists before it changes) and `verify` (an admin may check a key); nothing
    /// else includes anything.
    pub fn allows(self, needed: Role) -> bool {
        self == needed || self == Role::Write
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One entry of the tokens file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    pub name: String,
    pub role: Role,
    /// Hex SHA-256 of the token.
    pub sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    #[serde(default)]
    tokens: Vec<TokenEntry>,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read tokens file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("tokens file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("cannot write tokens file {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{TOKENS_ENV}: {0}")]
    Env(String),
    #[error("a token named `{0}` already exists; revoke it first or pick another name")]
    Exists(String),
    #[error("no token named `{0}`")]
    NoSuchToken(String),
    #[error("invalid token name `{0}`: use 1-64 letters, digits, `-`, `_` or `.`")]
    BadName(String),
}

/// The hex SHA-256 of a token string.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn valid_hash(h: &str) -> bool {
    h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit())
}

/// The set of tokens a server accepts.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    entries: Vec<(TokenEntry, [u8; 32])>,
}

/// Who a request authenticated as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub role: Role,
}

impl Tokens {
    pub fn from_entries(entries: Vec<TokenEntry>) -> Result<Tokens, String> {
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            if !valid_name(&e.name) {
                return Err(format!("invalid token name `{}`", e.name));
            }
            if !valid_hash(&e.sha256) {
                return Err(format!(
                    "token `{}`: sha256 must be 64 hex digits (the file holds hashes, not tokens)",
                    e.name
                ));
            }
            let mut raw = [0u8; 32];
            hex::decode_to_slice(e.sha256.to_ascii_lowercase(), &mut raw)
                .map_err(|_| format!("token `{}`: sha256 is not hex", e.name))?;
            if out.iter().any(|(o, _): &(TokenEntry, _)| o.name == e.name) {
                return Err(format!("token name `{}` appears twice", e.name));
            }
            out.push((e, raw));
        }
        Ok(Tokens { entries: out })
    }

    /// Load the tokens file (a missing file is an empty set) plus `KEYWARD_SERVE_TOKENS`.
    pub fn load(path: Option<&Path>, env: Option<&str>) -> Result<Tokens, TokenError> {
        let mut entries = match path {
            Some(p) => read_file(p)?.tokens,
            None => Vec::new(),
        };
        if let Some(env) = env {
            entries.extend(parse_env(env)?);
        }
        Tokens::from_entries(entries).map_err(|message| TokenError::Parse {
            path: path.map(Path::to_path_buf).unwrap_or_default(),
            message,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Find the token's entry. Compares the presented token's hash with every entry in
    /// constant time (no early exit), so timing tells nothing about which hash matched.
    pub fn authenticate(&self, presented: &str) -> Option<Principal> {
        self.authenticate_digest(&Sha256::digest(presented.as_bytes()).into())
    }

    /// `authenticate` by the token's SHA-256 (a web view session keeps the digest, never
    /// the token), so a revoked token ends its sessions too.
    pub fn authenticate_digest(&self, digest: &[u8; 32]) -> Option<Principal> {
        let mut found: Option<&TokenEntry> = None;
        for (entry, raw) in &self.entries {
            if bool::from(raw.ct_eq(digest)) {
                found = Some(entry);
            }
        }
        found.map(|e| Principal {
            name: e.name.clone(),
            role: e.role,
        })
    }
}

fn parse_env(env: &str) -> Result<Vec<TokenEntry>, TokenError> {
    env.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(|item| {
            let mut parts = item.splitn(3, ':');
            let (Some(name), Some(role), Some(hash)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(TokenError::Env(
                    "each entry must be name:role:sha256hex".into(),
                ));
            };
            let role = Role::parse(role).ok_or_else(|| {
                TokenError::Env(format!(
                    "entry `{name}`: role must be read, write or verify"
                ))
            })?;
            Ok(TokenEntry {
                name: name.to_owned(),
                role,
                sha256: hash.to_owned(),
                created_at: None,
            })
        })
        .collect()
}

fn read_file(path: &Path) -> Result<TokensFile, TokenError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(TokensFile::default()),
        Err(source) => {
            return Err(TokenError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    if text.trim().is_empty() {
        return Ok(TokensFile::default());
    }
    // serde_yaml's messages quote only structure, never values longer than a token name,
    // and the file holds hashes only, so its message is safe to show.
    serde_yaml::from_str(&text).map_err(|e| TokenError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

fn write_err(path: &Path) -> impl Fn(std::io::Error) -> TokenError + '_ {
    move |source| TokenError::Write {
        path: path.to_owned(),
        source,
    }
}

/// The lock file beside the tokens file (`tokens.yaml.lock`). The tokens file itself is
/// replaced by a rename on every write, so a lock on it would be a lock on the old inode;
/// the lock file is never renamed or removed.
fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    path.with_file_name(name)
}

/// An exclusive lock on the tokens file for one read-modify-write (`create`, `revoke`):
/// held until dropped, so concurrent `keyward token` processes take turns instead of each
/// writing back what it read before the other's change (a lost revocation).
struct WriteLock {
    _file: std::fs::File,
}

impl WriteLock {
    fn take(path: &Path) -> Result<WriteLock, TokenError> {
        let werr = write_err(path);
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            crate::private::create_dir_all(parent).map_err(&werr)?;
        }
        let mut opts = std::fs::OpenOptions::new();
        opts.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let file = opts.open(lock_path(path)).map_err(&werr)?;
        #[cfg(unix)]
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| werr(e.into()))?;
        Ok(WriteLock { _file: file })
    }
}

/// A temporary file name beside `path` no other writer uses (pid and random suffix).
fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(
        ".{}.{:016x}.tmp",
        std::process::id(),
        rand::random::<u64>()
    ));
    path.with_file_name(name)
}

/// Write the file durably: a unique temp file, fsync, rename over the file, fsync the
/// directory. Callers hold the [`WriteLock`].
fn write_file(path: &Path, file: &TokensFile, _lock: &WriteLock) -> Result<(), TokenError> {
    let werr = write_err(path);
    let mut text = String::from(
        "# keyward serve tokens: SHA-256 hashes only; a token itself is shown once, at creation.\n",
    );
    text.push_str(
        &serde_yaml::to_string(file).map_err(|e| werr(std::io::Error::other(e.to_string())))?,
    );
    let tmp = temp_path(path);
    let written = (|| {
        use std::io::Write;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(werr(e));
    }
    #[cfg(unix)]
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(&werr)?;
    }
    Ok(())
}

/// A freshly generated token: `kwt_` + 64 hex digits. The caller prints it once.
pub fn generate() -> zeroize::Zeroizing<String> {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    let t = zeroize::Zeroizing::new(format!("{TOKEN_PREFIX}{}", hex::encode(b)));
    zeroize::Zeroize::zeroize(&mut b);
    t
}

/// Make a token named `name` with `role`, add its hash to the file and return the token.
pub fn create(
    path: &Path,
    name: &str,
    role: Role,
) -> Result<zeroize::Zeroizing<String>, TokenError> {
    if !valid_name(name) {
        return Err(TokenError::BadName(name.to_owned()));
    }
    let lock = WriteLock::take(path)?;
    let mut file = read_file(path)?;
    if file.tokens.iter().any(|t| t.name == name) {
        return Err(TokenError::Exists(name.to_owned()));
    }
    let token = generate();
    file.tokens.push(TokenEntry {
        name: name.to_owned(),
        role,
        sha256: hash_token(&token),
        created_at: Some(Utc::now()),
    });
    write_file(path, &file, &lock)?;
    Ok(token)
}

/// The entries of the file (names, roles, creation times; hashes too, never tokens).
pub fn list(path: &Path) -> Result<Vec<TokenEntry>, TokenError> {
    Ok(read_file(path)?.tokens)
}

/// Remove the token named `name` from the file.
pub fn revoke(path: &Path, name: &str) -> Result<TokenEntry, TokenError> {
    let lock = WriteLock::take(path)?;
    let mut file = read_file(path)?;
    let pos = file
        .tokens
        .iter()
        .position(|t| t.name == name)
        .ok_or_else(|| TokenError::NoSuchToken(name.to_owned()))?;
    let removed = file.tokens.remove(pos);
    write_file(path, &file, &lock)?;
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_authenticate_revoke() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t/tokens.yaml");
        let w = create(&path, "ci-apply", Role::Write).unwrap();
        let r = create(&path, "plan", Role::Read).unwrap();
        assert!(w.starts_with(TOKEN_PREFIX) && w.len() == 68);
        assert!(matches!(
            create(&path, "plan", Role::Read),
            Err(TokenError::Exists(_))
        ));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(w.as_str()) && !text.contains(r.as_str()));
        let tokens = Tokens::load(Some(&path), None).unwrap();
        assert_eq!(tokens.authenticate(&w).unwrap().role, Role::Write);
        assert_eq!(tokens.authenticate(&r).unwrap().name, "plan");
        assert!(tokens.authenticate("kwt_nope").is_none());
        assert!(tokens.authenticate("").is_none());
        revoke(&path, "plan").unwrap();
        let tokens = Tokens::load(Some(&path), None).unwrap();
        assert!(tokens.authenticate(&r).is_none());
        assert!(matches!(
            revoke(&path, "plan"),
            Err(TokenError::NoSuchToken(_))
        ));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn env_entries_and_bad_input() {
        let t = "kwt_abc";
        let env = format!("app:verify:{}", hash_token(t));
        let tokens = Tokens::load(None, Some(&env)).unwrap();
        assert_eq!(
            tokens.authenticate(t),
            Some(Principal {
                name: "app".into(),
                role: Role::Verify
            })
        );
        assert!(Tokens::load(None, Some("app:admin:00")).is_err());
        assert!(Tokens::load(None, Some("app:read:kwt_plaintext")).is_err());
        assert!(Tokens::load(None, Some("justaname")).is_err());
        assert!(matches!(
            create(Path::new("/nonexistent/x.yaml"), "bad name", Role::Read),
            Err(TokenError::BadName(_))
        ));
    }

    #[test]
    fn roles() {
        assert!(Role::Write.allows(Role::Read));
        assert!(Role::Write.allows(Role::Verify));
        assert!(!Role::Read.allows(Role::Write));
        assert!(!Role::Read.allows(Role::Verify));
        assert!(!Role::Verify.allows(Role::Read));
    }
}
