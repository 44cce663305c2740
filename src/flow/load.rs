//! The load step of every command that reads the spec: load it (working tree or a git
//! revision), print its diagnostics to stderr, and the spec-only policy check that refuses
//! plan and apply. Must not observe or change a store.

use crate::diag::{self, Diagnostics};
use crate::git::GitRepo;
use crate::plan::{RepoIdentity, Revision, RevisionSource, short};
use crate::spec::{self, Loaded};
use anyhow::{Result, anyhow};
use std::path::Path;

/// The desired state and where it came from.
pub struct Desired {
    pub loaded: Loaded,
    pub revision: Revision,
    pub git: Option<GitRepo>,
    pub identity: RepoIdentity,
}

/// Load the spec; print diagnostics (warnings too) to stderr. None when it has errors.
pub fn load_or_report(dir: &Path, color: bool) -> Result<Option<Loaded>> {
    match spec::load(dir) {
        Ok(loaded) => {
            report_warnings(&loaded, color);
            Ok(Some(loaded))
        }
        Err(diags) => {
            let sources = read_sources(dir, &diags);
            eprint!("{}", diag::render(&diags, &sources, color));
            eprintln!(
                "\n{} error(s) in the spec under {}; nothing was changed.",
                diags.error_count(),
                dir.display()
            );
            Ok(None)
        }
    }
}

fn report_warnings(loaded: &Loaded, color: bool) {
    if !loaded.warnings.is_empty() {
        eprint!("{}", diag::render(&loaded.warnings, &loaded.sources, color));
    }
}

/// The texts of the files diagnostics point at (for caret rendering on failure): only
/// regular spec files inside the repository, under the size limit (never a symlink out of
/// it, a device or a 50 MB file).
pub fn read_sources(dir: &Path, diags: &Diagnostics) -> diag::Sources {
    spec::sources_for(dir, diags)
}

/// Load the spec from the working tree, or from git revision `rev` without checking it
/// out. Diagnostics go to stderr; None when the spec has errors.
pub fn load_desired(dir: &Path, rev: Option<&str>, color: bool) -> Result<Option<Desired>> {
    let git = GitRepo::discover(dir)?;
    let identity = git
        .as_ref()
        .map(GitRepo::identity)
        .unwrap_or_else(|| RepoIdentity::directory(dir));
    let loaded = match rev {
        Some(rev) => load_at_revision(dir, git.as_ref(), rev, color)?,
        None => load_working_tree(dir, git.as_ref(), color)?,
    };
    Ok(loaded.map(|(loaded, revision)| Desired {
        loaded,
        revision,
        git,
        identity,
    }))
}

/// The spec as git revision `rev` holds it.
fn load_at_revision(
    dir: &Path,
    git: Option<&GitRepo>,
    rev: &str,
    color: bool,
) -> Result<Option<(Loaded, Revision)>> {
    let g = git.ok_or_else(|| {
        anyhow!(
            "--rev needs a git repository, and {} is not in one",
            dir.display()
        )
    })?;
    let commit = g.resolve(rev)?;
    let files = g.spec_files_at(&commit)?;
    let sources: diag::Sources = files
        .iter()
        .map(|(p, b)| (p.clone(), String::from_utf8_lossy(b).into_owned()))
        .collect();
    let loaded = match spec::load_from_files(dir, files) {
        Ok(l) => l,
        Err(diags) => {
            eprint!("{}", diag::render(&diags, &sources, color));
            eprintln!(
                "\n{} error(s) in the spec at {rev} ({}); nothing was changed.",
                diags.error_count(),
                short(&commit)
            );
            return Ok(None);
        }
    };
    report_warnings(&loaded, color);
    let mut r = Revision::of_files(RevisionSource::GitRevision, Some(commit), &loaded.sources);
    r.rev = Some(rev.to_string());
    Ok(Some((loaded, r)))
}

/// The spec in the working tree, with the HEAD it is based on and whether it differs.
fn load_working_tree(
    dir: &Path,
    git: Option<&GitRepo>,
    color: bool,
) -> Result<Option<(Loaded, Revision)>> {
    let Some(loaded) = load_or_report(dir, color)? else {
        return Ok(None);
    };
    let head = git.and_then(GitRepo::head_commit);
    let mut r = Revision::of_files(RevisionSource::WorkingTree, head, &loaded.sources);
    if let Some(g) = git {
        r.dirty = !g.dirty_paths(None)?.is_empty();
    }
    Ok(Some((loaded, r)))
}

/// Policy violations refuse plan and apply (exit 3). Prints them.
pub fn policy_refuses(loaded: &Loaded, now: chrono::DateTime<chrono::Utc>, color: bool) -> bool {
    let found = crate::policy::check(&loaded.spec, now);
    if found.is_empty() {
        return false;
    }
    eprint!("{}", diag::render(&found, &loaded.sources, color));
    if found.has_errors() {
        eprintln!(
            "\nThe spec breaks policy ({} violation(s)); refusing. Fix the spec or the policy in keyward.yaml.",
            found.error_count()
        );
        return true;
    }
    false
}
