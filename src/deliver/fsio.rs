//! Durable, atomic file writes for the outbox and for user-requested output files:
//! temp file in the same directory, write, fsync, rename (or link, to refuse overwriting),
//! then fsync the directory. Must not decide what is written; callers pass bytes that are
//! ciphertext, manifests or (only for `write_secret_file`/`keygen`) 0600 files a user asked for.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use rand::RngCore;

use super::DeliverError;

/// Mode for ciphertext and manifests (public by design: they are committed to git).
pub(crate) const MODE_PUBLIC: u32 = 0o644;
/// Mode for anything a person could read a secret or a private key from.
pub(crate) const MODE_PRIVATE: u32 = 0o600;

fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// A temp path next to `path`: `.<name>.tmp-<random>`, so the rename stays on one filesystem.
fn temp_path_for(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    let mut r = [0u8; 8];
    rand::rngs::OsRng.fill_bytes(&mut r);
    parent_of(path).join(format!(".{name}.tmp-{}", hex::encode(r)))
}

fn open_new(path: &Path, mode: u32) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    o.open(path)
}

/// Create a new temp file next to `path` holding `bytes`, fsynced. Returns its path.
fn write_temp(path: &Path, bytes: &[u8], mode: u32) -> Result<PathBuf, DeliverError> {
    let tmp = temp_path_for(path);
    let result = (|| {
        let mut f = open_new(&tmp, mode)?;
        // The umask may have narrowed the mode; set it exactly.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            f.set_permissions(fs::Permissions::from_mode(mode))?;
        }
        f.write_all(bytes)?;
        f.sync_all()
    })();
    match result {
        Ok(()) => Ok(tmp),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(DeliverError::io("write a temporary file next to", path, e))
        }
    }
}

/// fsync a directory so renames and unlinks in it survive a crash.
pub(crate) fn fsync_dir(dir: &Path) -> Result<(), DeliverError> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| DeliverError::io("fsync directory", dir, e))
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// Write `bytes` to `path` atomically and durably, replacing any existing file.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), DeliverError> {
    write_replace(path, bytes, mode)?;
    fsync_dir(&parent_of(path))
}

/// Like [`write_atomic`] but WITHOUT the directory fsync: the file's bytes are durable
/// (fsynced before the rename) and the rename is atomic, so after a crash `path` holds
/// either the old file or the complete new one; the rename itself is durable only once
/// the caller fsyncs the directory. Lets a caller write several files into one
/// directory and pay for one directory fsync (see `Outbox::write_pending`).
pub(crate) fn write_replace(path: &Path, bytes: &[u8], mode: u32) -> Result<(), DeliverError> {
    let tmp = write_temp(path, bytes, mode)?;
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(DeliverError::io("rename a temporary file onto", path, e));
    }
    Ok(())
}

/// Write `bytes` to a NEW file at `path` atomically (the complete file appears at once, or
/// nothing does); fails with `AlreadyExists` when `path` exists, never overwriting it.
pub(crate) fn create_new_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), DeliverError> {
    if fs::symlink_metadata(path).is_ok() {
        return Err(DeliverError::AlreadyExists {
            path: path.to_path_buf(),
        });
    }
    let tmp = write_temp(path, bytes, mode)?;
    // hard_link fails if the target exists (no race window), unlike rename.
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => fsync_dir(&parent_of(path)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(DeliverError::AlreadyExists {
            path: path.to_path_buf(),
        }),
        Err(e) => Err(DeliverError::io("create", path, e)),
    }
}

/// Write a committed, public file (a console ledger) atomically and durably, creating its
/// directory if missing: temp file, fsync, rename, fsync directory.
pub fn write_committed_file(path: &Path, bytes: &[u8]) -> Result<(), DeliverError> {
    create_dir_durable(&parent_of(path))?;
    write_atomic(path, bytes, MODE_PUBLIC)
}

/// Create `dir` and any missing parents, fsyncing each parent after a directory is made in it.
pub(crate) fn create_dir_durable(dir: &Path) -> Result<(), DeliverError> {
    let mut missing = Vec::new();
    let mut cur = dir.to_path_buf();
    loop {
        match fs::metadata(&cur) {
            Ok(m) if m.is_dir() => break,
            Ok(_) => {
                return Err(DeliverError::io(
                    "create directory",
                    &cur,
                    io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        "a file with that name is in the way",
                    ),
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                missing.push(cur.clone());
                match cur.parent() {
                    Some(p) if !p.as_os_str().is_empty() => cur = p.to_path_buf(),
                    _ => break,
                }
            }
            Err(e) => return Err(DeliverError::io("inspect directory", &cur, e)),
        }
    }
    for d in missing.iter().rev() {
        match fs::create_dir(d) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(DeliverError::io("create directory", d, e)),
        }
        fsync_dir(&parent_of(d))?;
    }
    Ok(())
}

/// Remove a file if it exists (missing is fine: removal is idempotent for crash recovery).
pub(crate) fn remove_if_exists(path: &Path) -> Result<bool, DeliverError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(DeliverError::io("delete", path, e)),
    }
}

/// Write a file a user asked for (`-o FILE`) that holds a secret: created with mode 0600
/// from the start (never briefly readable by others), written completely, fsynced, then
/// renamed over `path` (an existing file is replaced, and ends up 0600 too).
pub fn write_secret_file(path: &Path, bytes: &[u8]) -> Result<(), DeliverError> {
    write_atomic(path, bytes, MODE_PRIVATE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_replace_swaps_the_whole_file_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("manifest.json");
        write_replace(&path, b"first version", MODE_PUBLIC).expect("write");
        write_replace(&path, b"second", MODE_PUBLIC).expect("replace");
        assert_eq!(fs::read(&path).expect("read"), b"second");
        let names: Vec<String> = fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["manifest.json"], "no temp file is left behind");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
            assert_eq!(mode, MODE_PUBLIC);
        }
        // A directory in the way is an error, not a panic, and leaves nothing behind.
        let blocked = dir.path().join("sub");
        fs::create_dir_all(blocked.join("x")).expect("mkdir");
        assert!(write_replace(&blocked.join("x"), b"y", MODE_PUBLIC).is_err());
        assert_eq!(fs::read_dir(&blocked).expect("list").count(), 1);
    }
}
