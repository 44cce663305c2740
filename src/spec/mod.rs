//! The spec: keyward.yaml, people.yaml and keys/**/*.yaml, parsed and validated into
//! `model::Spec`. Owns reading those files (from disk, or from an in-memory map for a git
//! revision) and reporting every problem at once; must not talk to stores or apply policy.

pub mod adapters;
pub mod budget;
pub mod config;
pub mod console_store;
mod envvar;
pub mod keys;
pub mod model;
mod outbox_place;
pub mod people;
pub mod pos;
pub mod raw;
pub mod yaml;

pub use crate::diag::Sources;
pub use model::*;

use crate::diag::{Diagnostic, Diagnostics, Location, codes, redact};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The configuration file, relative to the repository root.
pub const CONFIG_FILE: &str = "keyward.yaml";
/// The people file, relative to the repository root.
pub const PEOPLE_FILE: &str = "people.yaml";
/// The directory of key files, relative to the repository root.
pub const KEYS_DIR: &str = "keys";
/// The spec files together may not be larger than this (each file: `yaml::MAX_FILE_BYTES`).
pub const MAX_SPEC_BYTES: u64 = 64 * 1024 * 1024;
/// No more spec files than this.
pub const MAX_SPEC_FILES: usize = 10_000;
/// No more keys than this in the whole spec.
pub const MAX_KEYS: usize = 200_000;
/// At most this many diagnostics are reported; the rest are counted in one last
/// diagnostic ("and N more").
pub const MAX_REPORTED: usize = 200;

/// A successfully validated spec, its warnings and the source texts (for rendering).
#[derive(Debug, Clone)]
pub struct Loaded {
    pub spec: Spec,
    pub warnings: Diagnostics,
    pub sources: Sources,
}

/// Is `rel` (relative to the root) a spec file: keyward.yaml, people.yaml or keys/**/*.y(a)ml?
pub fn is_spec_file(rel: &Path) -> bool {
    rel == Path::new(CONFIG_FILE) || rel == Path::new(PEOPLE_FILE) || is_key_file(rel)
}

fn is_key_file(rel: &Path) -> bool {
    rel.starts_with(KEYS_DIR)
        && matches!(
            rel.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        )
}

/// Read the spec files under `root` from disk and validate them. Symlinks pointing outside
/// the repository, non-UTF-8 files and files over 8 MiB are refused with a diagnostic.
/// `Err` holds every diagnostic (errors and warnings) when there is at least one error.
pub fn load(root: &Path) -> Result<Loaded, Diagnostics> {
    let (files, diags) = read_tree(root);
    finish(root, files, diags)
}

/// What `keyward validate` checks: the spec read like [`load`], kept also when it has
/// errors, so the policy can be checked on the part that read cleanly in the same pass.
pub struct Checked {
    /// The spec as far as it is valid: keys with an error of their own are left out.
    pub spec: Spec,
    /// Every diagnostic (errors and warnings), redacted and capped like [`load`]'s.
    pub diags: Diagnostics,
    pub sources: Sources,
    /// keyward.yaml read without an error, so its `policy:` is the one written (the
    /// policy checked on a spec whose keyward.yaml has errors would be a guess).
    pub policy_known: bool,
}

/// Read and validate the spec under `root`, keeping what read cleanly (see [`Checked`]).
pub fn check(root: &Path) -> Checked {
    let (files, diags) = read_tree(root);
    checked(root, files, diags)
}

/// Read the spec under `root` like [`load`], with one more file `rel` (relative to the root)
/// that exists only in memory: how `keyward request` checks a key file before writing it.
/// A file already at `rel` on disk is replaced by `bytes` in what is checked.
pub fn load_with_file(root: &Path, rel: &Path, bytes: Vec<u8>) -> Result<Loaded, Diagnostics> {
    let (mut files, diags) = read_tree(root);
    files.insert(rel.to_path_buf(), bytes);
    finish(root, files, diags)
}

/// Validate spec files given in memory (paths relative to `root`; other paths are ignored).
/// Paths in the spec (sqlite files, the outbox) are resolved against `root`.
pub fn load_from_files(
    root: &Path,
    files: BTreeMap<PathBuf, Vec<u8>>,
) -> Result<Loaded, Diagnostics> {
    finish(root, files, Diagnostics::default())
}

fn finish(
    root: &Path,
    files: BTreeMap<PathBuf, Vec<u8>>,
    diags: Diagnostics,
) -> Result<Loaded, Diagnostics> {
    let c = checked(root, files, diags);
    if c.diags.has_errors() {
        return Err(c.diags);
    }
    Ok(Loaded {
        spec: c.spec,
        warnings: c.diags,
        sources: c.sources,
    })
}

fn checked(root: &Path, files: BTreeMap<PathBuf, Vec<u8>>, mut diags: Diagnostics) -> Checked {
    let root = std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf());
    let reported: BTreeSet<PathBuf> = diags
        .iter()
        .filter_map(|d| d.location.as_ref().map(|l| l.file.clone()))
        .collect();
    let mut sources = Sources::new();
    // keyward.yaml and people.yaml first (the key files are checked against them); the
    // key files are then parsed, validated and dropped one at a time (see `key_files_checked`).
    let mut files = files;
    let mut parse_one = |name: &str, diags: &mut Diagnostics| -> (bool, Option<yaml::Doc>) {
        let rel = PathBuf::from(name);
        let Some(bytes) = files.remove(&rel) else {
            return (false, None);
        };
        let (text, doc) = yaml::parse(&rel, &bytes, diags);
        if let Some(t) = text {
            sources.insert(rel, t);
        }
        (true, doc)
    };
    let (config_read, config_doc) = parse_one(CONFIG_FILE, &mut diags);
    let (people_read, people_doc) = parse_one(PEOPLE_FILE, &mut diags);
    missing_required_files(
        &[(CONFIG_FILE, config_read), (PEOPLE_FILE, people_read)],
        &reported,
        &mut diags,
    );

    // keyward.yaml
    let config = match &config_doc {
        Some(doc) => config::parse(
            &mut yaml::Ctx {
                doc,
                diags: &mut diags,
            },
            &root,
        ),
        None => config::Config::defaults(&root),
    };
    // people.yaml
    let people = match &people_doc {
        Some(doc) => people::parse(
            &mut yaml::Ctx {
                doc,
                diags: &mut diags,
            },
            &config.catalogue,
        ),
        None => people::People::default(),
    };
    // keys
    let refs = keys::Refs {
        config: &config,
        people: &people,
        stores_ok: config_doc.is_some(),
        people_ok: people_doc.is_some(),
    };
    let key_files = within_limits(files, &sources, &mut diags);
    let mut seen: Vec<keys::Seen> = Vec::new();
    for one in key_files_checked(key_files, &refs) {
        if let Some(t) = one.text {
            sources.insert(one.rel, t);
        }
        diags.extend(one.diags);
        seen.extend(one.seen);
    }
    let keys_out = unique_keys(seen, &mut diags);

    diags.0.extend(too_many_keys(keys_out.len()));
    secrets_anywhere(&sources, &mut diags);
    diags.sort();
    cap_reported(&mut diags);
    for d in &mut diags.0 {
        d.message = redact(&d.message);
        d.hint = d.hint.as_deref().map(redact);
    }
    let config_file = Path::new(CONFIG_FILE);
    let policy_known = config_doc.is_some()
        && !diags.iter().any(|d| {
            d.severity == crate::diag::Severity::Error
                && d.location.as_ref().is_some_and(|l| l.file == config_file)
        });
    let spec = Spec {
        root,
        stores: config.stores,
        catalogue: config.catalogue,
        policy: config.policy,
        delivery: config.delivery,
        guards: config.guards,
        notify: config.notify,
        principals: people.principals,
        teams: people.teams,
        keys: keys_out,
    };
    Checked {
        spec,
        diags,
        sources,
        policy_known,
    }
}

/// An error for each required file (keyward.yaml, people.yaml) that was not read and has
/// no diagnostic of its own yet.
fn missing_required_files(
    read: &[(&str, bool)],
    reported: &BTreeSet<PathBuf>,
    diags: &mut Diagnostics,
) {
    for &(required, read) in read {
        let p = PathBuf::from(required);
        if !read && !reported.contains(&p) {
            let hint = if required == CONFIG_FILE {
                "create keyward.yaml with `version: 1` and your stores (see examples/library)"
            } else {
                "create people.yaml listing the people, teams and services that own and receive keys"
            };
            diags.push(
                Diagnostic::error(codes::MISSING_FILE, format!("{required} is missing"))
                    .at(Location::new(required, 1, 1))
                    .hint(hint),
            );
        }
    }
}

/// The keys read, each (store, name) once, sorted; a second definition is an error that
/// points at the first.
fn unique_keys(seen: Vec<keys::Seen>, diags: &mut Diagnostics) -> Vec<DesiredKey> {
    let mut first: BTreeMap<(String, String), Location> = BTreeMap::new();
    let mut keys_out = Vec::new();
    for s in seen {
        match first.get(&(s.store.clone(), s.name.clone())) {
            Some(prev) => diags.push(
                Diagnostic::error(
                    codes::DUPLICATE_KEY,
                    format!("key `{}` is defined twice in store `{}`", s.name, s.store),
                )
                .at(s.location.clone())
                .related("first defined here", prev.clone())
                .hint(
                    "key names are unique within a store; rename one, or put it in another store",
                ),
            ),
            None => {
                first.insert((s.store.clone(), s.name.clone()), s.location.clone());
                if let Some(k) = s.key {
                    keys_out.push(k);
                }
            }
        }
    }
    keys_out.sort_by(|a, b| (&a.store, &a.name).cmp(&(&b.store, &b.name)));
    keys_out
}

fn too_many_keys(n: usize) -> Option<Diagnostic> {
    (n > MAX_KEYS).then(|| {
        Diagnostic::error(
            codes::TOO_LARGE,
            format!("the spec holds {n} keys, more than the {MAX_KEYS} keyward checks"),
        )
        .at(Location::new(KEYS_DIR, 1, 1))
        .hint("split the keys over several key repositories")
    })
}

/// Keep the first [`MAX_REPORTED`] diagnostics (sorted: by file and line) and count the
/// rest in one more, so a spec with a million mistakes reports in the time of a few.
pub fn cap_reported(diags: &mut Diagnostics) {
    if diags.0.len() <= MAX_REPORTED {
        return;
    }
    let rest = diags.0.split_off(MAX_REPORTED);
    let errors = rest.iter().filter(|d| d.is_error()).count();
    let warnings = rest.len() - errors;
    let what = match (errors, warnings) {
        (e, 0) => format!("{e} more error(s)"),
        (0, w) => format!("{w} more warning(s)"),
        (e, w) => format!("{e} more error(s) and {w} more warning(s)"),
    };
    let first = rest.iter().find_map(|d| d.location.clone());
    let d = if errors > 0 {
        Diagnostic::error(codes::TOO_MANY_DIAGNOSTICS, format!("and {what} not shown"))
    } else {
        Diagnostic::warning(codes::TOO_MANY_DIAGNOSTICS, format!("and {what} not shown"))
    };
    let mut d = d.at_opt(first).hint(format!(
        "fix the first {MAX_REPORTED} and run again (the next one is here)"
    ));
    d.omitted = Some(crate::diag::Omitted { errors, warnings });
    diags.push(d);
}

/// A secret-shaped string anywhere in a spec file (a comment, a label, a purpose) is
/// refused: the repository is shared and its history is forever. Private keys are KW114,
/// other secrets KW140; neither shows the value. Lines already reported (a pasted
/// recipient) are not reported twice.
fn secrets_anywhere(sources: &Sources, diags: &mut Diagnostics) {
    let reported: BTreeSet<(PathBuf, usize)> = diags
        .iter()
        .filter(|d| d.code == codes::PRIVATE_KEY)
        .filter_map(|d| d.location.as_ref().map(|l| (l.file.clone(), l.line)))
        .collect();
    for (file, text) in sources {
        for found in crate::leak::find(text) {
            let (line, column) = crate::leak::line_col(text, found.start);
            if reported.contains(&(file.clone(), line)) {
                continue;
            }
            let message = format!(
                "{} in a spec file (its value is not shown)",
                found.kind.describe()
            );
            let d = if found.kind.is_private_key() {
                Diagnostic::error(codes::PRIVATE_KEY, message).hint(
                    "remove it now and treat that identity as compromised: it is in the repository, and may be in git history",
                )
            } else {
                Diagnostic::error(codes::SECRET_IN_SPEC, message).hint(
                    "remove it now and revoke or rotate it where it was issued: the repository is shared and git history keeps it; describe what a key is for, never paste its value",
                )
            };
            diags.push(d.at(Location::new(file, line, column)));
        }
    }
}

/// The texts of the files `diags` point at, read from under `root` (lossy UTF-8; files
/// over the size limit, non-regular files and symlinks out of the repository skipped): for
/// rendering the diagnostics of a failed [`load`].
pub fn sources_for(root: &Path, diags: &Diagnostics) -> Sources {
    let mut out = Sources::new();
    let Ok(canon_root) = root.canonicalize() else {
        return out;
    };
    let files = diags
        .iter()
        .flat_map(|d| d.location.iter().chain(d.related.iter().map(|(_, l)| l)))
        .map(|l| l.file.clone());
    for rel in files {
        if out.contains_key(&rel) || !is_spec_file(&rel) {
            continue;
        }
        let full = root.join(&rel);
        let small = full
            .metadata()
            .is_ok_and(|m| m.is_file() && m.len() <= yaml::MAX_FILE_BYTES as u64)
            && inside(&full, &canon_root);
        // (Checked before reading: a tuple `(small, read())` would read a device or a
        // 50 MB file anyway.)
        if !small {
            continue;
        }
        if let Ok(bytes) = std::fs::read(&full) {
            out.insert(rel, String::from_utf8_lossy(&bytes).into_owned());
        }
    }
    out
}

/// One key file, parsed and validated (its YAML value and position index already dropped).
struct CheckedFile {
    rel: PathBuf,
    text: Option<String>,
    diags: Diagnostics,
    seen: Vec<keys::Seen>,
}

fn check_key_file(rel: PathBuf, bytes: Vec<u8>, refs: &keys::Refs) -> CheckedFile {
    let mut diags = Diagnostics::default();
    let (text, doc) = yaml::parse(&rel, &bytes, &mut diags);
    drop(bytes);
    let seen = match &doc {
        Some(doc) => keys::parse_file(
            &mut yaml::Ctx {
                doc,
                diags: &mut diags,
            },
            refs,
        ),
        None => Vec::new(),
    };
    CheckedFile {
        rel,
        text,
        diags,
        seen,
    }
}

/// Key files above this total size are checked on several threads.
const PARALLEL_BYTES: usize = 256 * 1024;

/// Parse and validate every key file, returning the results in the order given (so
/// "first defined here" and every other output stays the same as a sequential run).
/// Each file's YAML value and position index live only while that file is checked, so
/// memory holds one parsed file per thread rather than the whole spec; with more than
/// one core and a large spec, files are shared out to up to 4 scoped threads.
fn key_files_checked(files: Vec<(PathBuf, Vec<u8>)>, refs: &keys::Refs) -> Vec<CheckedFile> {
    let total: usize = files.iter().map(|(_, b)| b.len()).sum();
    let threads = std::thread::available_parallelism()
        .map(std::num::NonZeroUsize::get)
        .unwrap_or(1)
        .min(4)
        .min(files.len());
    if threads < 2 || total < PARALLEL_BYTES {
        return files
            .into_iter()
            .map(|(rel, bytes)| check_key_file(rel, bytes, refs))
            .collect();
    }
    let n = files.len();
    let queue = std::sync::Mutex::new(files.into_iter().enumerate());
    let mut done: Vec<(usize, CheckedFile)> = std::thread::scope(|sc| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                sc.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let next = queue
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .next();
                        let Some((i, (rel, bytes))) = next else { break };
                        out.push((i, check_key_file(rel, bytes, refs)));
                    }
                    out
                })
            })
            .collect();
        let mut all = Vec::with_capacity(n);
        for w in workers {
            // A worker only panics on a bug; surface it rather than lose its files.
            match w.join() {
                Ok(part) => all.extend(part),
                Err(p) => std::panic::resume_unwind(p),
            }
        }
        all
    });
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, f)| f).collect()
}

/// Read keyward.yaml, people.yaml and keys/**/*.y(a)ml under `root` (sorted).
fn read_tree(root: &Path) -> (BTreeMap<PathBuf, Vec<u8>>, Diagnostics) {
    let mut files = BTreeMap::new();
    let mut diags = Diagnostics::default();
    let canon_root = match root.canonicalize() {
        Ok(r) => r,
        Err(e) => {
            diags.push(
                Diagnostic::error(
                    codes::IO,
                    format!("cannot open the repository at {}: {e}", root.display()),
                )
                .hint("run keyward from the repository root or pass --root"),
            );
            return (files, diags);
        }
    };
    for name in [CONFIG_FILE, PEOPLE_FILE] {
        read_one(root, &canon_root, Path::new(name), &mut files, &mut diags);
    }
    let mut total: u64 = files.values().map(|b| b.len() as u64).sum();
    let keys_dir = root.join(KEYS_DIR);
    if keys_dir.symlink_metadata().is_err() {
        return (files, diags);
    }
    let mut it = walkdir::WalkDir::new(&keys_dir)
        .follow_links(true)
        .sort_by_file_name()
        .into_iter();
    while let Some(entry) = it.next() {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                let rel = e
                    .path()
                    .and_then(|p| p.strip_prefix(root).ok())
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| PathBuf::from(KEYS_DIR));
                diags.push(
                    Diagnostic::error(codes::IO, format!("cannot read {}: {e}", rel.display()))
                        .at(Location::new(rel, 1, 1))
                        .hint("check permissions and symlink loops under keys/"),
                );
                continue;
            }
        };
        let Ok(rel) = entry.path().strip_prefix(root).map(Path::to_path_buf) else {
            continue;
        };
        if entry.path_is_symlink() && !inside(entry.path(), &canon_root) {
            diags.push(outside(&rel));
            if entry.file_type().is_dir() {
                it.skip_current_dir();
            }
            continue;
        }
        if entry.file_type().is_file() && is_key_file(&rel) {
            read_one(root, &canon_root, &rel, &mut files, &mut diags);
            total += files.get(&rel).map_or(0, |b| b.len() as u64);
            if let Some(d) = over_limits(&rel, files.len(), total) {
                diags.push(d);
                break;
            }
        }
    }
    (files, diags)
}

/// The key files to check, in order, up to the spec-wide limits (files given in memory,
/// e.g. from a git revision, may be over them).
fn within_limits(
    files: BTreeMap<PathBuf, Vec<u8>>,
    sources: &Sources,
    diags: &mut Diagnostics,
) -> Vec<(PathBuf, Vec<u8>)> {
    let mut count = sources.len();
    let mut total: u64 = sources.values().map(|t| t.len() as u64).sum();
    let mut out = Vec::new();
    for (rel, bytes) in files.into_iter().filter(|(rel, _)| is_key_file(rel)) {
        count += 1;
        total += bytes.len() as u64;
        if let Some(d) = over_limits(&rel, count, total) {
            // Already reported when the files were read from disk.
            if !diags
                .iter()
                .any(|x| x.code == codes::TOO_LARGE && x.location == d.location)
            {
                diags.push(d);
            }
            break;
        }
        out.push((rel, bytes));
    }
    out
}

/// The spec-wide limits on files and bytes, crossed at file `rel`: the rest is not read.
pub fn over_limits(rel: &Path, files: usize, bytes: u64) -> Option<Diagnostic> {
    let msg = if files > MAX_SPEC_FILES {
        format!("more than {MAX_SPEC_FILES} spec files; the files after this one were not read")
    } else if bytes > MAX_SPEC_BYTES {
        format!(
            "the spec files together are larger than {} MiB at this file; the files after it were not read",
            MAX_SPEC_BYTES / 1024 / 1024
        )
    } else {
        return None;
    };
    Some(
        Diagnostic::error(codes::TOO_LARGE, msg)
            .at(Location::new(rel, 1, 1))
            .hint("keep fewer, smaller key files (or split the keys over several repositories)"),
    )
}

fn inside(path: &Path, canon_root: &Path) -> bool {
    path.canonicalize().is_ok_and(|t| t.starts_with(canon_root))
}

fn outside(rel: &Path) -> Diagnostic {
    Diagnostic::error(
        codes::SYMLINK_OUTSIDE,
        format!(
            "{} is a symlink pointing outside the repository",
            rel.display()
        ),
    )
    .at(Location::new(rel, 1, 1))
    .hint("spec files must live in the repository (and in its history); copy the file in instead")
}

fn read_one(
    root: &Path,
    canon_root: &Path,
    rel: &Path,
    files: &mut BTreeMap<PathBuf, Vec<u8>>,
    diags: &mut Diagnostics,
) {
    let full = root.join(rel);
    let io_err = |e: std::io::Error| {
        Diagnostic::error(codes::IO, format!("cannot read {}: {e}", rel.display()))
            .at(Location::new(rel, 1, 1))
            .hint("check that the file exists and is readable")
    };
    let meta = match full.symlink_metadata() {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => return diags.push(io_err(e)),
    };
    if meta.file_type().is_symlink() && !inside(&full, canon_root) {
        return diags.push(outside(rel));
    }
    match full.metadata() {
        Ok(m) if m.len() > yaml::MAX_FILE_BYTES as u64 => {
            return diags.push(
                Diagnostic::error(
                    codes::TOO_LARGE,
                    format!(
                        "{} is {} bytes, more than the 8 MiB limit",
                        rel.display(),
                        m.len()
                    ),
                )
                .at(Location::new(rel, 1, 1))
                .hint("split the keys into several files under keys/"),
            );
        }
        Ok(m) if !m.is_file() => {
            return diags.push(io_err(std::io::Error::other("not a regular file")));
        }
        Ok(_) => {}
        Err(e) => return diags.push(io_err(e)),
    }
    match std::fs::read(&full) {
        Ok(bytes) => {
            files.insert(rel.to_path_buf(), bytes);
        }
        Err(e) => diags.push(io_err(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_wide_limits_are_crossed_at_the_file_that_crosses_them() {
        let f = Path::new("keys/x.yaml");
        assert!(over_limits(f, MAX_SPEC_FILES, MAX_SPEC_BYTES).is_none());
        let d = over_limits(f, MAX_SPEC_FILES + 1, 10).unwrap();
        assert!(
            d.message.contains("more than 10000 spec files"),
            "{}",
            d.message
        );
        let d = over_limits(f, 3, MAX_SPEC_BYTES + 1).unwrap();
        assert!(d.message.contains("larger than 64 MiB"), "{}", d.message);
        assert_eq!(d.code, codes::TOO_LARGE);
        assert_eq!(d.location, Some(Location::new(f, 1, 1)));
        assert!(too_many_keys(MAX_KEYS).is_none() && too_many_keys(MAX_KEYS + 1).is_some());
    }

    const JDOE: &str = "age1jh9x549yr7atdz6a5j2kf0su0u8retq8fdhg8calalddvaeux44sm6lc49";
    const SVC: &str = "age1h7e98fheh2nhjnsy4eqa9qgjvrh7mxpthszgarpdcww8r2cw7ufq3pqs6s";

    fn repo(config: &str, keys: &str) -> BTreeMap<PathBuf, Vec<u8>> {
        let people = format!(
            "people:\n  jdoe: {{ recipients: [\"{JDOE}\"] }}\n  asmith: {{ recipients: [\"{JDOE}\"] }}\n\
             teams:\n  ill: {{ members: [asmith, svc] }}\nservices:\n  svc: {{ recipients: [\"{SVC}\"] }}\n"
        );
        BTreeMap::from([
            (PathBuf::from(CONFIG_FILE), config.as_bytes().to_vec()),
            (PathBuf::from(PEOPLE_FILE), people.into_bytes()),
            (PathBuf::from("keys/k.yaml"), keys.as_bytes().to_vec()),
            (
                PathBuf::from("README.md"),
                b"not a spec file: ignored \xff".to_vec(),
            ),
        ])
    }

    fn load_ok(config: &str, keys: &str) -> Loaded {
        match load_from_files(Path::new("/repo"), repo(config, keys)) {
            Ok(l) => l,
            Err(d) => panic!("{}", crate::diag::render(&d, &Sources::new(), false)),
        }
    }

    #[test]
    fn defaults_for_absent_sections() {
        let l = load_ok(
            "version: 1\nstores:\n  s: { kind: sqlite, environment: sandbox }\n",
            "keys:\n  - { name: a, store: s, owner: jdoe, scopes: [bibs:read] }\n",
        );
        let s = &l.spec;
        assert_eq!(s.root, Path::new("/repo"));
        assert_eq!(
            s.stores["s"].kind,
            StoreKind::Sqlite {
                path: PathBuf::from("/repo/.keyward/s.db")
            }
        );
        assert_eq!(s.delivery.outbox, Path::new("/repo/deliveries"));
        assert_eq!(s.delivery.retain, Span::days(7));
        assert_eq!(s.catalogue, ScopeCatalogue::default());
        assert_eq!(s.policy, Policy::default());
        let k = &s.keys[0];
        assert_eq!(k.expiry, Expiry::Never);
        assert_eq!(k.state, DesiredState::Active);
        assert_eq!(k.rotation, Rotation::default());
        assert_eq!(k.environment, "sandbox");
        assert!(!k.protected);
        assert_eq!(k.recipients, BTreeSet::from(["jdoe".to_string()]));
    }

    #[test]
    fn expiry_recipients_and_scopes_are_resolved() {
        let config = "version: 1\nstores:\n  s: { kind: http, url: \"https://k.example.edu\", environment: production }\n\
                      policy: { default_lifetime: 30d }\n";
        let keys = "\
keys:
  - name: defaulted
    store: s
    owner: jdoe
    scopes: [bibs:read, bibs:write, users:read]
  - name: never
    store: s
    owner: jdoe
    scopes: [users:read]
    expires: never
    recipients: [team:ill]
    include_owner: false
  - name: dated
    store: s
    owner: jdoe
    scopes: [users:read]
    lifetime: never
";
        let l = load_ok(config, keys);
        let s = &l.spec;
        assert_eq!(
            s.stores["s"].kind,
            StoreKind::Http {
                url: "https://k.example.edu".into(),
                token_env: None
            }
        );
        let names: Vec<&str> = s.keys.iter().map(|k| k.name.as_str()).collect();
        assert_eq!(names, ["dated", "defaulted", "never"]);
        let d = s.key("s", "defaulted").expect("defaulted");
        assert_eq!(d.expiry, Expiry::Lifetime(Span::days(30)));
        let scopes: Vec<String> = d.scopes.iter().map(Scope::to_string).collect();
        assert_eq!(scopes, ["bibs:write", "users:read"]);
        assert_eq!(d.field_location("scope:bibs").line, 5);
        assert_eq!(d.field_location("scopes").line, 5);
        assert_eq!(d.location.line, 2);
        let n = s.key("s", "never").expect("never");
        assert_eq!(n.expiry, Expiry::Never);
        assert_eq!(
            n.recipients,
            BTreeSet::from(["asmith".to_string(), "svc".to_string()])
        );
        assert_eq!(s.key("s", "dated").map(|k| k.expiry), Some(Expiry::Never));
        // The redundant bibs:read is a warning, not an error.
        assert_eq!(
            l.warnings.iter().map(|d| d.code).collect::<Vec<_>>(),
            [codes::REDUNDANT_SCOPE]
        );
        assert_eq!(s.principals["svc"].kind, PrincipalKind::Service);
        assert_eq!(s.teams["ill"].members, ["asmith", "svc"]);
        assert_eq!(l.sources.len(), 3);
    }

    #[test]
    fn private_material_in_a_comment_is_refused_once() {
        let keys = "# AGE-SECRET-KEY-1QYQSZQGPQYQSZQGPQYQSZQGP\n# a private key must never be pasted here\nkeys:\n  - { name: a, store: s, owner: jdoe, scopes: [bibs:read], recipients: [AGE-SECRET-KEY-1ABC] }\n";
        let files = repo(
            "version: 1\nstores:\n  s: { kind: sqlite, environment: sandbox }\n",
            keys,
        );
        let diags = load_from_files(Path::new("/repo"), files).expect_err("refused");
        let at: Vec<(&str, usize)> = diags
            .iter()
            .map(|d| (d.code, d.location.as_ref().map_or(0, |l| l.line)))
            .collect();
        assert_eq!(at, [(codes::PRIVATE_KEY, 1), (codes::PRIVATE_KEY, 4)]);
        let json = crate::diag::to_json(&diags);
        assert!(
            !json.contains("QYQSZQGP") && !json.contains("1ABC"),
            "{json}"
        );
    }

    #[test]
    fn forbid_rules_take_environments_and_refuse_unknown_ones() {
        let config = "version: 1\nstores:\n  p: { kind: sqlite, environment: production }\n  s: { kind: sqlite, environment: sandbox }\n\
                      policy:\n  forbid:\n    - { scope: users:write, reason: no, environments: [production] }\n";
        let keys = "keys:\n  - { name: a, store: s, owner: jdoe, scopes: [users:write] }\n";
        let l = load_ok(config, keys);
        let rule = &l.spec.policy.forbid[0];
        assert_eq!(rule.environments, ["production"]);
        assert!(rule.applies_to("p", "production"));
        assert!(!rule.applies_to("s", "sandbox"));

        let typo = config.replace("[production]", "[prodution]");
        let diags = load_from_files(Path::new("/repo"), repo(&typo, keys)).expect_err("typo");
        let d = diags.iter().next().expect("one diagnostic");
        assert_eq!(d.code, codes::INVALID_VALUE);
        assert!(d.message.contains("`prodution`"), "{}", d.message);
        assert!(
            d.hint.as_deref().is_some_and(|h| h.contains("production")),
            "{:?}",
            d.hint
        );
        assert_eq!(d.location.as_ref().map(|l| l.line), Some(7));
    }

    #[test]
    fn a_broken_config_does_not_cascade_into_unknown_stores() {
        let files = repo(
            "version: 1\nstores: [oops\n",
            "keys:\n  - { name: a, store: s, owner: jdoe, scopes: [bibs:read] }\n",
        );
        let diags = load_from_files(Path::new("/repo"), files).expect_err("broken");
        let codes: Vec<&str> = diags.iter().map(|d| d.code).collect();
        assert_eq!(codes, [codes::YAML_SYNTAX]);
    }
}
