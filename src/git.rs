//! Git, through libgit2 (no network: CI does the pushing): the spec files at a revision
//! without checking it out, the change under review (base..revision) and its authors, the
//! repository's identity, whether spec files or deliveries are uncommitted, committing
//! the delivery files of the outbox (only the paths given), and making a new repository
//! for `keyward init`. Must not push, fetch, or write the working tree's files.

use crate::plan::{RepoIdentity, RepoKind, Requester};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("{context}: {}", .source.message())]
    Git {
        context: String,
        #[source]
        source: git2::Error,
    },
    #[error("`{rev}` is not a revision of this repository ({message})")]
    UnknownRev { rev: String, message: String },
    #[error("{0} is not inside a git repository with a working tree")]
    NotARepo(PathBuf),
    #[error("{path} is a {what} at {rev}; spec files are read from git only as regular files")]
    NotAFile {
        path: String,
        what: &'static str,
        rev: String,
    },
    #[error(
        "the spec at {rev} is over keyward's limits at {path} (at most {} files and {} MiB \
         together); split the keys over fewer, smaller files",
        crate::spec::MAX_SPEC_FILES,
        crate::spec::MAX_SPEC_BYTES / 1024 / 1024
    )]
    TooLarge { path: String, rev: String },
}

fn ctx(context: impl Into<String>) -> impl FnOnce(git2::Error) -> GitError {
    let context = context.into();
    move |source| GitError::Git { context, source }
}

/// A git repository holding a key repository, possibly in a subdirectory of it.
pub struct GitRepo {
    repo: git2::Repository,
    /// The key repository's root relative to the work tree ("" when they coincide).
    prefix: PathBuf,
}

/// What changed between a base and a revision.
#[derive(Debug, Clone, Default)]
pub struct Range {
    /// The merge base of the base and the revision.
    pub merge_base: String,
    /// Commits in base..revision.
    pub commits: usize,
    /// Authors of commits that edit spec files (all authors when none does).
    pub requesters: Vec<Requester>,
    /// Spec files (relative to the key repository root) edited in the range, with the
    /// authors (`Name <email>`) of the commits that edited each.
    pub files: BTreeMap<PathBuf, BTreeSet<String>>,
}

impl GitRepo {
    /// The repository containing `root`, or None when `root` is not in one.
    pub fn discover(root: &Path) -> Result<Option<GitRepo>, GitError> {
        let abs = std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf());
        let repo = match git2::Repository::discover(&abs) {
            Ok(r) => r,
            Err(e) if e.code() == git2::ErrorCode::NotFound => return Ok(None),
            Err(e) => {
                return Err(ctx(format!(
                    "opening the git repository at {}",
                    abs.display()
                ))(e));
            }
        };
        let Some(workdir) = repo.workdir() else {
            return Err(GitError::NotARepo(abs));
        };
        let workdir = workdir
            .canonicalize()
            .unwrap_or_else(|_| workdir.to_path_buf());
        let canon = abs.canonicalize().unwrap_or(abs);
        let prefix = canon
            .strip_prefix(&workdir)
            .map(Path::to_path_buf)
            .map_err(|_| GitError::NotARepo(canon.clone()))?;
        Ok(Some(GitRepo { repo, prefix }))
    }

    /// Make `dir` a new git repository whose first branch is `branch` (nothing committed).
    pub fn init(dir: &Path, branch: &str) -> Result<GitRepo, GitError> {
        let mut opts = git2::RepositoryInitOptions::new();
        opts.initial_head(branch).mkdir(true);
        let repo = git2::Repository::init_opts(dir, &opts)
            .map_err(ctx(format!("making a git repository in {}", dir.display())))?;
        Ok(GitRepo {
            repo,
            prefix: PathBuf::new(),
        })
    }

    /// The work tree's root directory.
    pub fn workdir(&self) -> Option<&Path> {
        self.repo.workdir()
    }

    /// The repository's identity: its root commit (the same in every clone), plus the key
    /// repository's subdirectory when it is not at the top. A repository without commits
    /// is identified by its path.
    pub fn identity(&self) -> RepoIdentity {
        let root = (|| -> Result<Option<String>, git2::Error> {
            let mut walk = self.repo.revwalk()?;
            walk.push_head()?;
            let mut roots = Vec::new();
            for id in walk {
                let id = id?;
                if self.repo.find_commit(id)?.parent_count() == 0 {
                    roots.push(id.to_string());
                }
            }
            roots.sort();
            Ok(roots.into_iter().next())
        })();
        match root {
            Ok(Some(id)) => {
                let id = if self.prefix.as_os_str().is_empty() {
                    id
                } else {
                    format!("{id}:{}", slash(&self.prefix))
                };
                RepoIdentity {
                    kind: RepoKind::Git,
                    id,
                }
            }
            _ => RepoIdentity::directory(self.repo.workdir().unwrap_or(Path::new("."))),
        }
    }

    /// The commit HEAD points at, if any.
    pub fn head_commit(&self) -> Option<String> {
        let head = self.repo.head().ok()?.peel_to_commit().ok()?;
        Some(head.id().to_string())
    }

    /// The name of the checked-out branch, if HEAD is on one.
    pub fn current_branch(&self) -> Option<String> {
        let head = self.repo.head().ok()?;
        if !head.is_branch() {
            return None;
        }
        head.shorthand().ok().map(str::to_string)
    }

    /// The checked-out branch when it is a topic branch: not the default branch (the one
    /// `origin/HEAD` names, else `main`, `master` or `trunk`). None on the default branch,
    /// a detached HEAD or an unborn branch.
    pub fn topic_branch(&self) -> Option<String> {
        let current = self.current_branch()?;
        self.head_commit()?;
        let default = self
            .repo
            .find_reference("refs/remotes/origin/HEAD")
            .ok()
            .and_then(|r| r.symbolic_target().ok().flatten().map(str::to_string))
            .and_then(|t| t.strip_prefix("refs/remotes/origin/").map(str::to_string));
        let is_default = match default {
            Some(d) => d == current,
            None => ["main", "master", "trunk"].contains(&current.as_str()),
        };
        (!is_default).then_some(current)
    }

    /// Resolve a revision (`main`, `origin/main`, `HEAD~2`, a SHA) to a commit id.
    pub fn resolve(&self, rev: &str) -> Result<String, GitError> {
        let obj = self
            .repo
            .revparse_single(rev)
            .map_err(|e| GitError::UnknownRev {
                rev: rev.to_string(),
                message: e.message().to_string(),
            })?;
        let commit = obj.peel_to_commit().map_err(|e| GitError::UnknownRev {
            rev: rev.to_string(),
            message: e.message().to_string(),
        })?;
        Ok(commit.id().to_string())
    }

    fn commit(&self, id: &str) -> Result<git2::Commit<'_>, GitError> {
        let oid = git2::Oid::from_str(id).map_err(|e| GitError::UnknownRev {
            rev: id.to_string(),
            message: e.message().to_string(),
        })?;
        self.repo
            .find_commit(oid)
            .map_err(|e| GitError::UnknownRev {
                rev: id.to_string(),
                message: e.message().to_string(),
            })
    }

    /// The spec files (keyward.yaml, people.yaml, keys/**/*.y(a)ml) in commit `id`, with
    /// paths relative to the key repository root. Missing files are simply absent.
    pub fn spec_files_at(&self, id: &str) -> Result<BTreeMap<PathBuf, Vec<u8>>, GitError> {
        let commit = self.commit(id)?;
        let tree = commit
            .tree()
            .map_err(ctx(format!("reading the tree of {id}")))?;
        let mut files = BTreeMap::new();
        let root_tree = if self.prefix.as_os_str().is_empty() {
            tree
        } else {
            match tree.get_path(&self.prefix) {
                Ok(entry) => match entry.to_object(&self.repo).and_then(|o| o.peel_to_tree()) {
                    Ok(t) => t,
                    Err(_) => return Ok(files),
                },
                Err(_) => return Ok(files),
            }
        };
        let mut problem: Option<GitError> = None;
        let odb = self.repo.odb().ok();
        let mut total: u64 = 0;
        root_tree
            .walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
                let Ok(name) = entry.name() else {
                    return git2::TreeWalkResult::Ok;
                };
                let rel = PathBuf::from(format!("{dir}{name}"));
                if entry.kind() == Some(git2::ObjectType::Tree) {
                    // Only the top level and keys/ hold spec files.
                    return if dir.is_empty() && name != crate::spec::KEYS_DIR {
                        git2::TreeWalkResult::Skip
                    } else {
                        git2::TreeWalkResult::Ok
                    };
                }
                if !crate::spec::is_spec_file(&rel) {
                    return git2::TreeWalkResult::Ok;
                }
                let what = match entry.filemode() {
                    0o120000 => Some("symlink"),
                    0o160000 => Some("submodule"),
                    _ => None,
                };
                if let Some(what) = what {
                    problem = Some(GitError::NotAFile {
                        path: slash(&rel),
                        what,
                        rev: id.to_string(),
                    });
                    return git2::TreeWalkResult::Abort;
                }
                // The spec-wide limits (spec::load reports them): stop reading past them,
                // by the object's size, before its content is loaded.
                let size = odb
                    .as_ref()
                    .and_then(|o| o.read_header(entry.id()).ok())
                    .map_or(0, |(n, _)| n as u64);
                total += size;
                if files.len() >= crate::spec::MAX_SPEC_FILES || total > crate::spec::MAX_SPEC_BYTES
                {
                    problem = Some(GitError::TooLarge {
                        path: slash(&rel),
                        rev: id.to_string(),
                    });
                    return git2::TreeWalkResult::Abort;
                }
                match self.repo.find_blob(entry.id()) {
                    Ok(b) => {
                        files.insert(rel, b.content().to_vec());
                        git2::TreeWalkResult::Ok
                    }
                    Err(e) => {
                        problem = Some(ctx(format!("reading {}", slash(&rel)))(e));
                        git2::TreeWalkResult::Abort
                    }
                }
            })
            .or_else(|e| {
                if problem.is_some() {
                    Ok(())
                } else {
                    Err(ctx(format!("reading the tree of {id}"))(e))
                }
            })?;
        match problem {
            Some(p) => Err(p),
            None => Ok(files),
        }
    }

    /// Uncommitted changes (modified, staged, deleted, untracked) to spec files or under
    /// `outbox` (absolute), as paths relative to the key repository root.
    pub fn dirty_paths(&self, outbox: Option<&Path>) -> Result<Vec<String>, GitError> {
        let outbox_rel = outbox.and_then(|o| self.rel_to_root(o));
        let mut opts = git2::StatusOptions::new();
        opts.include_untracked(true)
            .recurse_untracked_dirs(true)
            .include_ignored(false)
            .exclude_submodules(true);
        let statuses = self
            .repo
            .statuses(Some(&mut opts))
            .map_err(ctx("reading the working tree's status"))?;
        let mut out = Vec::new();
        for s in statuses.iter() {
            if s.status() == git2::Status::CURRENT || s.status().contains(git2::Status::IGNORED) {
                continue;
            }
            let Ok(path) = s.path() else { continue };
            let Ok(rel) = Path::new(path).strip_prefix(&self.prefix) else {
                continue;
            };
            let in_outbox = outbox_rel
                .as_ref()
                .is_some_and(|o| !o.as_os_str().is_empty() && rel.starts_with(o));
            if crate::spec::is_spec_file(rel) || in_outbox {
                out.push(slash(rel));
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// `path` (absolute) relative to the key repository root, if inside it.
    fn rel_to_root(&self, path: &Path) -> Option<PathBuf> {
        let workdir = self.repo.workdir()?;
        let workdir = workdir
            .canonicalize()
            .unwrap_or_else(|_| workdir.to_path_buf());
        let root = workdir.join(&self.prefix);
        let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        // The outbox may not exist yet: canonicalize its closest existing ancestor.
        let mut existing = abs.clone();
        let mut tail = Vec::new();
        while !existing.exists() {
            let name = existing.file_name()?.to_os_string();
            tail.push(name);
            existing = existing.parent()?.to_path_buf();
        }
        let mut canon = existing.canonicalize().ok()?;
        for t in tail.into_iter().rev() {
            canon.push(t);
        }
        canon.strip_prefix(&root).ok().map(Path::to_path_buf)
    }

    /// The change from `base` to commit `head`: commits in merge-base..head, their authors,
    /// and the spec files each edited.
    pub fn range(&self, base: &str, head: &str) -> Result<Range, GitError> {
        let base_id = self.resolve(base)?;
        let head_commit = self.commit(head)?;
        let mb = self
            .repo
            .merge_base(
                git2::Oid::from_str(&base_id).map_err(ctx("parsing the base"))?,
                head_commit.id(),
            )
            .map_err(ctx(format!("finding the merge base of {base} and {head}")))?;
        let mut walk = self.repo.revwalk().map_err(ctx("walking history"))?;
        walk.push(head_commit.id())
            .map_err(ctx("walking history"))?;
        walk.hide(mb).map_err(ctx("walking history"))?;
        let mut range = Range {
            merge_base: mb.to_string(),
            ..Range::default()
        };
        let mut all_authors: BTreeMap<(String, String), usize> = BTreeMap::new();
        let mut spec_authors: BTreeMap<(String, String), usize> = BTreeMap::new();
        for id in walk {
            let id = id.map_err(ctx("walking history"))?;
            let c = self.repo.find_commit(id).map_err(ctx("reading a commit"))?;
            range.commits += 1;
            let author = c.author();
            let who = (
                String::from_utf8_lossy(author.name_bytes()).into_owned(),
                String::from_utf8_lossy(author.email_bytes()).into_owned(),
            );
            *all_authors.entry(who.clone()).or_default() += 1;
            let tree = c.tree().map_err(ctx("reading a commit's tree"))?;
            let parent_tree = match c.parents().next() {
                Some(p) => Some(p.tree().map_err(ctx("reading a parent tree"))?),
                None => None,
            };
            let diff = self
                .repo
                .diff_tree_to_tree(parent_tree.as_ref(), Some(&tree), None)
                .map_err(ctx("diffing a commit"))?;
            let mut touched_spec = false;
            for d in diff.deltas() {
                for f in [d.old_file().path(), d.new_file().path()]
                    .into_iter()
                    .flatten()
                {
                    let Ok(rel) = f.strip_prefix(&self.prefix) else {
                        continue;
                    };
                    if crate::spec::is_spec_file(rel) {
                        touched_spec = true;
                        range
                            .files
                            .entry(rel.to_path_buf())
                            .or_default()
                            .insert(person(&who));
                    }
                }
            }
            if touched_spec {
                *spec_authors.entry(who).or_default() += 1;
            }
        }
        let chosen = if spec_authors.is_empty() {
            all_authors
        } else {
            spec_authors
        };
        range.requesters = chosen
            .into_iter()
            .map(|((name, email), commits)| Requester {
                name,
                email,
                commits,
            })
            .collect();
        Ok(range)
    }

    /// Commit `files` (absolute paths of regular files under the directory `dir`, which is
    /// inside the key repository), and nothing else: only paths under `dir` change in the
    /// commit, and of those only `files` are added or updated, so a stray file in `dir`
    /// (git-ignored or not) is never committed. On the checked-out branch (HEAD), committed
    /// files under `dir` that are gone from disk are deleted from the commit. On another
    /// `branch` (created from HEAD when missing; the working tree is not touched), `files`
    /// are laid over the branch's copy of `dir` and the files and directories in `removed`
    /// (pruned envelopes) are deleted from it, so deliveries kept only on that branch
    /// survive. `also` are single files elsewhere in the repository committed as they are
    /// on disk (the console ledgers apply wrote). Returns the new commit id, or None when
    /// nothing changed.
    pub fn commit_files(
        &self,
        (dir, files): (&Path, &[PathBuf]),
        also: &[PathBuf],
        branch: Option<&str>,
        message: &str,
        removed: &[PathBuf],
    ) -> Result<Option<String>, GitError> {
        let rel_root = self
            .rel_to_root(dir)
            .ok_or_else(|| GitError::NotARepo(dir.to_path_buf()))?;
        let rel_s = slash(&self.prefix.join(&rel_root));
        let on_head = match branch {
            None => true,
            Some(b) => self.current_branch().as_deref() == Some(b),
        };
        let refname = match branch {
            Some(b) if !on_head => format!("refs/heads/{b}"),
            _ => "HEAD".to_string(),
        };
        let parent = self.parent_of(&refname)?;
        let mut index = git2::Index::new().map_err(ctx("creating an index"))?;
        if let Some(p) = &parent {
            let t = p.tree().map_err(ctx("reading the parent tree"))?;
            index
                .read_tree(&t)
                .map_err(ctx("reading the parent tree"))?;
        }
        let gone = if refname == "HEAD" {
            self.unindex_gone(&mut index, &rel_s)?
        } else {
            self.unindex(&mut index, removed)?;
            Vec::new()
        };
        let mut entries = self.index_files(&mut index, dir, files, &rel_s)?;
        for f in also {
            let parent = f.parent().unwrap_or(Path::new("."));
            let rel = self
                .rel_to_root(parent)
                .ok_or_else(|| GitError::NotARepo(f.to_path_buf()))?;
            let rel_parent = slash(&self.prefix.join(rel));
            entries.extend(self.index_files(
                &mut index,
                parent,
                std::slice::from_ref(f),
                &rel_parent,
            )?);
        }
        let tree_id = index
            .write_tree_to(&self.repo)
            .map_err(ctx("writing the tree"))?;
        if parent.as_ref().is_some_and(|p| p.tree_id() == tree_id) {
            return Ok(None);
        }
        let id = self.commit_tree(tree_id, parent.as_ref(), message)?;
        if refname == "HEAD" {
            self.advance_head(id, &gone, &entries)?;
        } else {
            self.repo
                .reference(&refname, id, true, "keyward: commit deliveries")
                .map_err(ctx(format!("updating {refname}")))?;
        }
        Ok(Some(id.to_string()))
    }

    /// The commit `refname` points at; a branch that does not exist yet starts from HEAD.
    fn parent_of(&self, refname: &str) -> Result<Option<git2::Commit<'_>>, GitError> {
        let head = || self.repo.head().ok().and_then(|h| h.peel_to_commit().ok());
        if refname == "HEAD" {
            return Ok(head());
        }
        match self.repo.find_reference(refname) {
            Ok(r) => r
                .peel_to_commit()
                .map(Some)
                .map_err(ctx(format!("reading branch {refname}"))),
            Err(_) => Ok(head()),
        }
    }

    /// Takes the files and directories in `removed` (paths on disk) out of `index`.
    fn unindex(&self, index: &mut git2::Index, removed: &[PathBuf]) -> Result<(), GitError> {
        for r in removed {
            if let Some(rr) = self.rel_to_root(r) {
                let p = slash(&self.prefix.join(rr));
                index
                    .remove_dir(Path::new(&p), 0)
                    .and_then(|()| index.remove_path(Path::new(&p)).or(Ok(())))
                    .map_err(ctx(format!("removing {p} from the index")))?;
            }
        }
        Ok(())
    }

    /// Takes out of `index` the entries under `rel_s` (a directory, relative to the work
    /// tree) whose file is gone from disk; returns their paths.
    fn unindex_gone(&self, index: &mut git2::Index, rel_s: &str) -> Result<Vec<String>, GitError> {
        let workdir = self.repo.workdir().unwrap_or(Path::new("."));
        let prefix = format!("{rel_s}/");
        let gone: Vec<String> = index
            .iter()
            .map(|e| String::from_utf8_lossy(&e.path).into_owned())
            .filter(|p| p.starts_with(&prefix))
            .filter(|p| std::fs::symlink_metadata(workdir.join(p)).is_err())
            .collect();
        for p in &gone {
            index
                .remove_path(Path::new(p))
                .map_err(ctx(format!("removing {p} from the index")))?;
        }
        Ok(gone)
    }

    /// Stores each of `files` (on disk, under `dir`) as a blob and adds it to `index` below
    /// `rel_s`; returns the entries added, in path order. A path outside `dir` or that is
    /// not a regular file (a symlink, a directory) is refused.
    fn index_files(
        &self,
        index: &mut git2::Index,
        dir: &Path,
        files: &[PathBuf],
        rel_s: &str,
    ) -> Result<Vec<git2::IndexEntry>, GitError> {
        let plain = |context: String, e: &dyn std::fmt::Display| GitError::Git {
            context,
            source: git2::Error::from_str(&e.to_string()),
        };
        let mut sorted: Vec<&PathBuf> = files.iter().collect();
        sorted.sort();
        sorted.dedup();
        let mut entries = Vec::new();
        for f in sorted {
            let inner = f
                .strip_prefix(dir)
                .ok()
                .filter(|i| {
                    i.components()
                        .all(|c| matches!(c, std::path::Component::Normal(_)))
                })
                .ok_or_else(|| {
                    plain(
                        format!("committing {}", f.display()),
                        &"not inside the outbox",
                    )
                })?;
            let meta = std::fs::symlink_metadata(f)
                .map_err(|io| plain(format!("reading {}", f.display()), &io))?;
            if !meta.file_type().is_file() {
                return Err(plain(
                    format!("committing {}", f.display()),
                    &"not a regular file",
                ));
            }
            let path = format!("{rel_s}/{}", slash(inner));
            let bytes =
                std::fs::read(f).map_err(|io| plain(format!("reading {}", f.display()), &io))?;
            let id = self
                .repo
                .blob(&bytes)
                .map_err(ctx(format!("storing {path}")))?;
            let entry = index_entry(&path, id, bytes.len());
            index
                .add(&entry)
                .map_err(ctx(format!("adding {path} to the index")))?;
            entries.push(entry);
        }
        Ok(entries)
    }

    /// Writes the commit object for `tree_id` on `parent` (no reference moves yet).
    fn commit_tree(
        &self,
        tree_id: git2::Oid,
        parent: Option<&git2::Commit<'_>>,
        message: &str,
    ) -> Result<git2::Oid, GitError> {
        let tree = self
            .repo
            .find_tree(tree_id)
            .map_err(ctx("reading the new tree"))?;
        let sig = self.signature()?;
        let parents: Vec<&git2::Commit> = parent.into_iter().collect();
        let id = self
            .repo
            .commit(None, &sig, &sig, message, &tree, &parents)
            .map_err(ctx("committing the deliveries"))?;
        crate::apply::failpoint::hit(crate::apply::failpoint::COMMIT_AFTER_OBJECT).map_err(
            |e| GitError::Git {
                context: "committing the deliveries".into(),
                source: git2::Error::from_str(&e.to_string()),
            },
        )?;
        Ok(id)
    }

    /// Moves the checked-out branch (or a detached HEAD) to `id` and keeps the index in
    /// step, so `git status` stays clean for the committed files.
    fn advance_head(
        &self,
        id: git2::Oid,
        gone: &[String],
        entries: &[git2::IndexEntry],
    ) -> Result<(), GitError> {
        match self.repo.head() {
            Ok(h) if h.is_branch() => {
                let name = String::from_utf8_lossy(h.name_bytes()).into_owned();
                self.repo
                    .reference(&name, id, true, "keyward: commit deliveries")
                    .map_err(ctx(format!("moving {name}")))?;
            }
            _ => {
                self.repo
                    .set_head_detached(id)
                    .map_err(ctx("moving HEAD"))?;
            }
        }
        let mut real = self.repo.index().map_err(ctx("opening the index"))?;
        for p in gone {
            // Absent from the real index already (never staged) is fine.
            let _ = real.remove_path(Path::new(p));
        }
        for e in entries {
            real.add(e).map_err(ctx("updating the index"))?;
        }
        real.write().map_err(ctx("writing the index"))?;
        Ok(())
    }

    /// Author of keyward's commits: GIT_AUTHOR_NAME/EMAIL, else the repository's
    /// configuration, else `keyward <keyward@localhost>`.
    fn signature(&self) -> Result<git2::Signature<'static>, GitError> {
        let name = std::env::var("GIT_AUTHOR_NAME")
            .ok()
            .filter(|s| !s.is_empty());
        let email = std::env::var("GIT_AUTHOR_EMAIL")
            .ok()
            .filter(|s| !s.is_empty());
        if let (Some(n), Some(e)) = (&name, &email) {
            return git2::Signature::now(n, e).map_err(ctx("making the commit signature"));
        }
        if let Ok(s) = self.repo.signature() {
            return Ok(s.to_owned());
        }
        git2::Signature::now(
            name.as_deref().unwrap_or("keyward"),
            email.as_deref().unwrap_or("keyward@localhost"),
        )
        .map_err(ctx("making the commit signature"))
    }
}

fn index_entry(path: &str, id: git2::Oid, len: usize) -> git2::IndexEntry {
    let zero = git2::IndexTime::new(0, 0);
    git2::IndexEntry {
        ctime: zero,
        mtime: zero,
        dev: 0,
        ino: 0,
        mode: 0o100644,
        uid: 0,
        gid: 0,
        file_size: u32::try_from(len).unwrap_or(u32::MAX),
        id,
        flags: u16::try_from(path.len().min(0xfff)).unwrap_or(0xfff),
        flags_extended: 0,
        path: path.as_bytes().to_vec(),
    }
}

/// `Name <email>`.
pub fn person(who: &(String, String)) -> String {
    if who.1.is_empty() {
        who.0.clone()
    } else {
        format!("{} <{}>", who.0, who.1)
    }
}

/// A relative path with `/` separators.
fn slash(p: &Path) -> String {
    p.components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

/// One commit that changed a file (for the web view's key pages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileCommit {
    pub id: String,
    pub time: chrono::DateTime<chrono::Utc>,
    /// The author's name (the web view shows no addresses).
    pub author: String,
    pub summary: String,
}

impl GitRepo {
    /// For each of `files` (relative to the key repository root, with `/`): the commits
    /// reachable from HEAD that changed it (added, edited or removed), newest first, at most
    /// `per_file` each, looking at no more than `max_commits` commits.
    pub fn file_history(
        &self,
        files: &[String],
        per_file: usize,
        max_commits: usize,
    ) -> Result<BTreeMap<String, Vec<FileCommit>>, GitError> {
        let mut out: BTreeMap<String, Vec<FileCommit>> = BTreeMap::new();
        if files.is_empty() || self.head_commit().is_none() {
            return Ok(out);
        }
        let mut walk = self.repo.revwalk().map_err(ctx("walking history"))?;
        walk.set_sorting(git2::Sort::TIME)
            .map_err(ctx("walking history"))?;
        walk.push_head().map_err(ctx("walking history"))?;
        let blob = |tree: Option<&git2::Tree<'_>>, f: &str| {
            tree.and_then(|t| t.get_path(&self.prefix.join(f)).ok())
                .map(|e| e.id())
        };
        for id in walk.take(max_commits) {
            let id = id.map_err(ctx("walking history"))?;
            let c = self.repo.find_commit(id).map_err(ctx("reading a commit"))?;
            let tree = c.tree().map_err(ctx("reading a commit's tree"))?;
            let parent = match c.parents().next() {
                Some(p) => Some(p.tree().map_err(ctx("reading a parent tree"))?),
                None => None,
            };
            for f in files {
                let seen = out.get(f).map_or(0, Vec::len);
                if seen >= per_file || blob(Some(&tree), f) == blob(parent.as_ref(), f) {
                    continue;
                }
                out.entry(f.clone()).or_default().push(FileCommit {
                    id: id.to_string(),
                    time: chrono::DateTime::from_timestamp(c.time().seconds(), 0)
                        .unwrap_or_default(),
                    author: String::from_utf8_lossy(c.author().name_bytes()).into_owned(),
                    summary: c
                        .summary()
                        .ok()
                        .flatten()
                        .unwrap_or_default()
                        .chars()
                        .take(200)
                        .collect(),
                });
            }
        }
        Ok(out)
    }
}
