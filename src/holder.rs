//! Who holds an apply lock, and whether that process is gone: the holder string names the
//! user, the host, the boot (`/proc/sys/kernel/random/boot_id`), the pid and the process's
//! start time (field 22 of `/proc/PID/stat`), so a lock a killed apply left can be told
//! from a live one. A holder is judged dead only on the same host and boot, and only from
//! `/proc` (gone, a zombie, or another process under a reused pid); anything else (another
//! host, another boot, an older holder without a boot id, no `/proc`) is never dead here.
//! Must not take or release locks (apply does) nor print anything.

use std::path::Path;

/// The lock holder string apply uses:
/// `who@host (pid N, start T, boot B)` (start and boot left out where `/proc` lacks them).
pub fn holder_string(who: &str) -> String {
    let pid = std::process::id();
    let mut s = format!("{who}@{} (pid {pid}", local_hostname());
    if let Some(start) = start_time(Path::new("/proc"), pid) {
        s.push_str(&format!(", start {start}"));
    }
    if let Some(boot) = boot_id() {
        s.push_str(&format!(", boot {boot}"));
    }
    s.push(')');
    s
}

pub fn local_hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// This boot's id, when the kernel says it.
pub fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// What a holder string says about the process behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub host: String,
    pub pid: u32,
    pub start: Option<u64>,
    pub boot: Option<String>,
}

impl Holder {
    /// Read `who@host (pid N[, start T][, boot B])`; None for any other text.
    pub fn parse(holder: &str) -> Option<Holder> {
        let (_, rest) = holder.rsplit_once('@')?;
        let (host, inner) = rest.split_once(" (")?;
        let inner = inner.strip_suffix(')')?;
        let mut parts = inner.split(", ");
        let pid = parts.next()?.strip_prefix("pid ")?.parse().ok()?;
        let mut h = Holder {
            host: host.to_string(),
            pid,
            start: None,
            boot: None,
        };
        for p in parts {
            if let Some(t) = p.strip_prefix("start ") {
                h.start = Some(t.parse().ok()?);
            } else if let Some(b) = p.strip_prefix("boot ") {
                h.boot = Some(b.to_string());
            } else {
                return None;
            }
        }
        Some(h)
    }
}

/// Why a lock holder can or cannot be released automatically.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Liveness {
    /// The process is gone (no such pid, a zombie, or another process under its pid).
    Dead(&'static str),
    /// The process runs.
    Alive,
    /// Nothing here can tell: another host or boot, or a holder without a boot id.
    Unknown(&'static str),
}

/// Judge `holder` against this host, this boot and the process table at `proc_root`.
pub fn liveness(holder: &str) -> Liveness {
    liveness_at(
        holder,
        &local_hostname(),
        boot_id().as_deref(),
        Path::new("/proc"),
    )
}

/// [`liveness`] with the host, boot and `/proc` given (so it can be tested).
pub fn liveness_at(holder: &str, host: &str, boot: Option<&str>, proc_root: &Path) -> Liveness {
    let Some(h) = Holder::parse(holder) else {
        return Liveness::Unknown("the holder is not an apply of keyward");
    };
    if h.host != host {
        return Liveness::Unknown("the lock was taken on another host");
    }
    let (Some(theirs), Some(ours)) = (h.boot.as_deref(), boot) else {
        return Liveness::Unknown("the lock does not say which boot took it");
    };
    if theirs != ours {
        return Liveness::Unknown("the lock was taken before this machine restarted");
    }
    let Some((state, start)) = stat(proc_root, h.pid) else {
        return Liveness::Dead("its process is gone");
    };
    if state == 'Z' || state == 'X' {
        return Liveness::Dead("its process was killed and is a zombie");
    }
    match h.start {
        Some(s) if s != start => Liveness::Dead("its pid now belongs to another process"),
        _ => Liveness::Alive,
    }
}

/// The start time (clock ticks after boot) of process `pid`.
fn start_time(proc_root: &Path, pid: u32) -> Option<u64> {
    stat(proc_root, pid).map(|(_, t)| t)
}

/// State (field 3) and start time (field 22) of `/proc/PID/stat`. The command name
/// (field 2) is in parentheses and may hold spaces and parentheses: fields are counted
/// after its last `)`.
fn stat(proc_root: &Path, pid: u32) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(proc_root.join(pid.to_string()).join("stat")).ok()?;
    let (_, after) = text.rsplit_once(')')?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((state, start))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_proc(pid: u32, comm: &str, state: char, start: u64) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(pid.to_string());
        std::fs::create_dir_all(&p).unwrap();
        // Fields 4..21 are zeros; field 22 is the start time.
        let zeros = vec!["0"; 18].join(" ");
        std::fs::write(
            p.join("stat"),
            format!("{pid} ({comm}) {state} {zeros} {start} 0 0\n"),
        )
        .unwrap();
        d
    }

    #[test]
    fn the_holder_string_names_pid_start_and_boot_and_parses_back() {
        let s = holder_string("ci");
        let h = Holder::parse(&s).expect(&s);
        assert_eq!(h.pid, std::process::id());
        assert_eq!(h.host, local_hostname());
        assert_eq!(h.boot, boot_id());
        assert_eq!(h.start, start_time(Path::new("/proc"), std::process::id()));
        assert!(h.start.is_some() && h.boot.is_some(), "{s}");
        assert_eq!(liveness(&s), Liveness::Alive, "this very process runs");
    }

    #[test]
    fn gone_zombie_and_reused_pids_are_dead_on_the_same_host_and_boot() {
        let holder = "ci@h (pid 42, start 100, boot B)";
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            liveness_at(holder, "h", Some("B"), empty.path()),
            Liveness::Dead(_)
        ));
        let zombie = fake_proc(42, "key ward) (x", 'Z', 100);
        assert!(matches!(
            liveness_at(holder, "h", Some("B"), zombie.path()),
            Liveness::Dead(_)
        ));
        let reused = fake_proc(42, "bash", 'S', 999);
        assert!(matches!(
            liveness_at(holder, "h", Some("B"), reused.path()),
            Liveness::Dead(_)
        ));
        let same = fake_proc(42, "keyward", 'S', 100);
        assert_eq!(
            liveness_at(holder, "h", Some("B"), same.path()),
            Liveness::Alive
        );
    }

    #[test]
    fn another_host_another_boot_or_no_boot_is_never_judged() {
        let empty = tempfile::tempdir().unwrap();
        for (holder, host, boot) in [
            ("ci@other (pid 42, start 100, boot B)", "h", Some("B")),
            ("ci@h (pid 42, start 100, boot A)", "h", Some("B")),
            ("ci@h (pid 42)", "h", Some("B")),
            ("ci@h (pid 42, start 100, boot B)", "h", None),
            ("someone by hand", "h", Some("B")),
        ] {
            assert!(
                matches!(
                    liveness_at(holder, host, boot, empty.path()),
                    Liveness::Unknown(_)
                ),
                "{holder}"
            );
        }
    }
}
