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

/// Write `bytes` to `path` (created or truncated, mode set exactly) WITHOUT an fsync: for a
/// group of writes made durable together by [`flush_files`]. Only for files nothing reads
/// as valid until a later, flushed step says so (an envelope before its manifest exists, a
/// manifest's temp file before its rename).
pub(crate) fn write_unsynced(path: &Path, bytes: &[u8], mode: u32) -> Result<(), DeliverError> {
    let result = (|| {
        let mut o = OpenOptions::new();
        o.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            o.mode(mode);
        }
        let mut f = o.open(path)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            f.set_permissions(fs::Permissions::from_mode(mode))?;
        }
        f.write_all(bytes)
    })();
    result.map_err(|e| DeliverError::io("write", path, e))
}

/// A temp path next to `path` holding `bytes`, not yet fsynced (see [`write_unsynced`]).
pub(crate) fn write_temp_unsynced(
    path: &Path,
    bytes: &[u8],
    mode: u32,
) -> Result<PathBuf, DeliverError> {
    let tmp = temp_path_for(path);
    let mut o = OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(mode);
    }
    let result = o.open(&tmp).and_then(|mut f| {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            f.set_permissions(fs::Permissions::from_mode(mode))?;
        }
        f.write_all(bytes)
    });
    match result {
        Ok(()) => Ok(tmp),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(DeliverError::io("write a temporary file next to", path, e))
        }
    }
}

/// Rename `from` onto `to` (atomic; durable once `to`'s directory is flushed).
pub(crate) fn rename(from: &Path, to: &Path) -> Result<(), DeliverError> {
    fs::rename(from, to).map_err(|e| {
        let _ = fs::remove_file(from);
        DeliverError::io("rename a temporary file onto", to, e)
    })
}

/// Make every write to `files` durable. One `syncfs(2)` of the filesystem holding `root`
/// where that is known to flush data and metadata (Linux, local filesystems: see
/// [`whole_filesystem_sync`]), else an fsync of each file. Either way, when this returns
/// Ok the bytes of every file are on stable storage, as if each had been fsynced.
pub(crate) fn flush_files(root: &Path, files: &[PathBuf]) -> Result<(), DeliverError> {
    if files.is_empty() || whole_filesystem_sync(root)? {
        return Ok(());
    }
    fsync_each(files)
}

/// The portable path of [`flush_files`]: an fsync of each file.
fn fsync_each(files: &[PathBuf]) -> Result<(), DeliverError> {
    for f in files {
        File::open(f)
            .and_then(|f| f.sync_all())
            .map_err(|e| DeliverError::io("fsync", f, e))?;
    }
    Ok(())
}

/// Make the entries of every directory in `dirs` durable (renames, new files and
/// directories in them): one `syncfs(2)` as [`flush_files`], else an fsync of each.
pub(crate) fn flush_dirs(root: &Path, dirs: &[PathBuf]) -> Result<(), DeliverError> {
    if dirs.is_empty() || whole_filesystem_sync(root)? {
        return Ok(());
    }
    let unique: std::collections::BTreeSet<&PathBuf> = dirs.iter().collect();
    for d in unique {
        fsync_dir(d)?;
    }
    Ok(())
}

/// `syncfs(2)` on the filesystem holding `root`, when it is a local Linux filesystem whose
/// sync writes back and waits for every dirty page and all metadata, and reports writeback
/// errors (ext4, xfs, btrfs, f2fs; tmpfs has nothing to write back). False (nothing done)
/// elsewhere: network and FUSE filesystems, other systems. One call replaces thousands of
/// fsyncs in a batch.
fn whole_filesystem_sync(root: &Path) -> Result<bool, DeliverError> {
    #[cfg(target_os = "linux")]
    {
        const TRUSTED: [i64; 5] = [
            0xEF53,      // ext2/3/4
            0x5846_5342, // xfs
            0x9123_683E, // btrfs
            0xF2F5_2010, // f2fs
            0x0102_1994, // tmpfs
        ];
        let dir = File::open(root).map_err(|e| DeliverError::io("open", root, e))?;
        let kind = rustix::fs::fstatfs(&dir)
            // `f_type`'s integer type differs between targets.
            .map(|s| {
                #[allow(clippy::useless_conversion)]
                i64::from(s.f_type)
            })
            .unwrap_or(0);
        if !TRUSTED.contains(&kind) {
            return Ok(false);
        }
        rustix::fs::syncfs(&dir)
            .map_err(|e| DeliverError::io("sync the filesystem of", root, e.into()))?;
        Ok(true)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = root;
        Ok(false)
    }
}

/// Create `dir` and any missing parents WITHOUT fsyncs, pushing onto `touched` each
/// directory that gained an entry (the parent of every directory made): flushed later with
/// [`flush_dirs`].
pub(crate) fn create_dir_unsynced(
    dir: &Path,
    touched: &mut Vec<PathBuf>,
) -> Result<(), DeliverError> {
    if fs::metadata(dir).is_ok_and(|m| m.is_dir()) {
        return Ok(());
    }
    let parent = parent_of(dir);
    if parent != dir {
        create_dir_unsynced(&parent, touched)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => {
            touched.push(parent);
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(DeliverError::io("create directory", dir, e)),
    }
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

    #[test]
    fn unsynced_writes_and_both_flush_paths_leave_complete_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let deep = dir.path().join("a/b/c");
        let mut touched = Vec::new();
        create_dir_unsynced(&deep, &mut touched).expect("mkdir");
        assert!(deep.is_dir());
        assert_eq!(
            touched,
            [
                dir.path().to_path_buf(),
                dir.path().join("a"),
                dir.path().join("a/b")
            ],
            "the parent of every directory made"
        );
        let f = deep.join("x.age");
        write_unsynced(&f, b"ciphertext", MODE_PUBLIC).expect("write");
        write_unsynced(&f, b"shorter", MODE_PUBLIC).expect("rewrite");
        let tmp =
            write_temp_unsynced(&deep.join("manifest.json"), b"{}", MODE_PUBLIC).expect("tmp");
        // The portable path (each file, each directory) and the whole-filesystem one.
        fsync_each(&[f.clone(), tmp.clone()]).expect("fsync each");
        flush_files(dir.path(), &[f.clone(), tmp.clone()]).expect("flush files");
        rename(&tmp, &deep.join("manifest.json")).expect("rename");
        flush_dirs(dir.path(), &touched).expect("flush dirs");
        assert_eq!(fs::read(&f).expect("read"), b"shorter");
        assert_eq!(fs::read(deep.join("manifest.json")).expect("read"), b"{}");
        assert!(!tmp.exists());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&f).expect("meta").permissions().mode() & 0o777;
            assert_eq!(mode, MODE_PUBLIC);
        }
    }
}
