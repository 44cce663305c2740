//! Helpers shared by the `deliver_*` integration tests: principals with real age and SSH
//! keys, envelope metadata, and a walker over files. No mocks: real keys, real files.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use chrono::{DateTime, TimeZone, Utc};
use keyward::deliver::EnvelopeMeta;
use keyward::spec::model::{Principal, PrincipalKind, RecipientKey};

pub fn principal(id: &str, kind: PrincipalKind, recipients: &[String]) -> Principal {
    Principal {
        id: id.to_string(),
        kind,
        name: None,
        email: None,
        recipients: recipients.iter().map(|r| RecipientKey::new(r)).collect(),
        may_grant: None,
        location: None,
    }
}

pub fn t(y: i32, m: u32, d: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, 12, 0, 0)
        .single()
        .expect("valid date")
}

pub fn meta(key: &str, id: &str, generation: u32) -> EnvelopeMeta {
    EnvelopeMeta {
        key: key.to_string(),
        store: "alma-sandbox".to_string(),
        id: id.to_string(),
        generation,
        expires_at: Some(t(2027, 6, 30)),
        previous_valid_until: None,
        client_id: None,
    }
}

/// A new age identity: (secret text, public recipient).
pub fn age_identity() -> (String, String) {
    use age::secrecy::ExposeSecret;
    let id = age::x25519::Identity::generate();
    (
        id.to_string().expose_secret().to_string(),
        id.to_public().to_string(),
    )
}

/// Write an age identity file (age-keygen layout) and return its path.
pub fn write_identity_file(path: &Path, secret: &str) -> PathBuf {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).expect("create identity dir");
    }
    std::fs::write(path, format!("# test identity\n{secret}\n")).expect("write identity file");
    path.to_path_buf()
}

/// Generate an SSH ed25519 key with ssh-keygen at `path` (passphrase may be empty).
/// Returns the public key line, or None when ssh-keygen is missing (after the SKIP line of
/// `needs`, which also fails the test under CI=true).
pub fn ssh_keygen(path: &Path, passphrase: &str) -> Option<String> {
    ssh_keygen_kind(path, &["-t", "ed25519"], passphrase)
}

/// Like `ssh_keygen` with explicit type arguments (e.g. `["-t", "rsa", "-b", "2048"]`).
pub fn ssh_keygen_kind(path: &Path, kind: &[&str], passphrase: &str) -> Option<String> {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).expect("create ssh dir");
    }
    if !crate::needs::part(&crate::needs::SSH_KEYGEN, "its SSH keys") {
        return None;
    }
    let out = Command::new("ssh-keygen")
        .arg("-q")
        .args(kind)
        .args(["-C", "test@keyward", "-N", passphrase, "-f"])
        .arg(path)
        .output()
        .expect("run ssh-keygen");
    assert!(
        out.status.success(),
        "ssh-keygen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public =
        std::fs::read_to_string(path.with_extension("pub")).expect("ssh-keygen wrote .pub");
    Some(public.trim().to_string())
}

/// Every regular file under `root`, recursively.
pub fn all_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir") {
            let p = e.expect("dir entry").path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

pub fn contains_bytes(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

#[cfg(unix)]
pub fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}
