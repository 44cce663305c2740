//! Files only their owner may read: the embedded databases (with their `-wal` and `-shm`),
//! peppers and token files. Owns creating them 0600 in directories keyward makes 0700, and
//! the warning for one whose mode lets other users in (the caller returns it to the command,
//! which prints it). Unix permissions; elsewhere a no-op. Must not read or write contents.

use std::io;
use std::path::{Path, PathBuf};

/// Create `dir` and every missing parent, each directory it creates mode 0700 (existing
/// ones are left as they are).
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir)
}

/// Create `path` empty with mode 0600 unless it exists, so SQLite opens an owner-only
/// database file (its `-wal` and `-shm` files copy the database's mode).
pub fn create_file(path: &Path) -> io::Result<()> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    match o.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// The permission bits of `path` when it exists and grants anything to group or others.
pub fn loose_mode(path: &Path) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
        (mode & 0o077 != 0).then_some(mode)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// A warning for each of `paths` that exists with a mode other users can use, naming the
/// file and the fix.
pub fn loose(paths: &[PathBuf]) -> Vec<String> {
    paths
        .iter()
        .filter_map(|p| {
            loose_mode(p).map(|m| {
                format!(
                    "{} is mode {m:04o}: other users can read it (it holds keyward's secrets or their hashes); run `chmod 600 {}`",
                    p.display(),
                    p.display()
                )
            })
        })
        .collect()
}
