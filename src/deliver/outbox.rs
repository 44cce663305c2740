//! The outbox: `deliveries/<store>/<key-name>/g<generation>/<principal>.age` + `manifest.json`,
//! written durably (temp + fsync + rename + directory fsync) and moved through the statuses
//! pending -> active -> superseded (or pending -> void).
//! Owns the layout and the status transitions (the manifest format is `manifest`). Must not decrypt except
//! through `open*` (which verify before decrypting), must not talk to a store, and only ever
//! writes ciphertext and manifests.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use super::DeliverError;
use super::envelope::{EnvelopeMeta, Opened};
use super::fsio::{
    MODE_PUBLIC, create_dir_durable, create_dir_unsynced, flush_dirs, flush_files, fsync_dir,
    remove_if_exists, rename, write_replace, write_temp_unsynced, write_unsynced,
};
use super::identity::Identities;
use super::manifest::{
    DeliveryStatus, MANIFEST_FILE, MANIFEST_VERSION, Manifest, ManifestRecipient, check_name,
    manifest_bytes, sha256_hex, write_json,
};
use super::seal::{SealedFile, decrypt_bytes, read_ciphertext};

impl Manifest {
    /// A pending manifest for `sealed` envelopes of `meta` (checksums computed here).
    pub fn pending(
        meta: &EnvelopeMeta,
        environment: &str,
        created_at: DateTime<Utc>,
        commit: Option<String>,
        sealed: &[SealedFile],
    ) -> Manifest {
        Manifest {
            manifest_version: MANIFEST_VERSION,
            key_id: meta.id.clone(),
            name: meta.key.clone(),
            store: meta.store.clone(),
            environment: environment.to_string(),
            generation: meta.generation,
            created_at,
            expires_at: meta.expires_at,
            previous_valid_until: meta.previous_valid_until,
            commit,
            status: DeliveryStatus::Pending,
            recipients: sealed
                .iter()
                .map(|s| ManifestRecipient {
                    id: s.principal_id.clone(),
                    kind: s.kind,
                    fingerprints: s.fingerprints.clone(),
                    file: format!("{}.age", s.principal_id),
                    sha256: sha256_hex(s.armored.as_bytes()),
                })
                .collect(),
        }
    }
}

/// Check that the file at `path` is the envelope `manifest` lists under its file name,
/// byte for byte (SHA-256).
pub fn verify_envelope(manifest: &Manifest, path: &Path) -> Result<(), DeliverError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let entry = manifest
        .recipients
        .iter()
        .find(|r| r.file == name)
        .ok_or_else(|| DeliverError::NotInManifest {
            path: path.to_path_buf(),
        })?;
    let bytes = fs::read(path).map_err(|e| DeliverError::io("read", path, e))?;
    if sha256_hex(&bytes) != entry.sha256 {
        return Err(DeliverError::Checksum {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

/// Check that a decrypted envelope is the one `manifest` describes (key id, generation,
/// store, name): a file copied from another key or generation is detected.
pub fn check_opened(manifest: &Manifest, opened: &Opened, path: &Path) -> Result<(), DeliverError> {
    let m = &opened.meta;
    let mismatch = |field, expected: String, found: String| {
        Err(DeliverError::Mismatch {
            path: path.to_path_buf(),
            field,
            expected,
            found,
        })
    };
    if m.id != manifest.key_id {
        return mismatch("key id", manifest.key_id.clone(), m.id.clone());
    }
    if m.generation != manifest.generation {
        return mismatch(
            "generation",
            manifest.generation.to_string(),
            m.generation.to_string(),
        );
    }
    if m.store != manifest.store {
        return mismatch("store", manifest.store.clone(), m.store.clone());
    }
    if m.key != manifest.name {
        return mismatch("key name", manifest.name.clone(), m.key.clone());
    }
    Ok(())
}

fn list_dir(dir: &Path) -> Result<Vec<(String, PathBuf, bool)>, DeliverError> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(DeliverError::io("list", dir, e)),
    };
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| DeliverError::io("list", dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_dir = entry
            .file_type()
            .map_err(|e| DeliverError::io("inspect", entry.path(), e))?
            .is_dir();
        out.push((name, entry.path(), is_dir));
    }
    out.sort();
    Ok(out)
}

fn parse_generation_dir(name: &str) -> Option<u32> {
    name.strip_prefix('g')?.parse().ok()
}

/// The `.gitattributes` keyward writes at the outbox's root.
const GITATTRIBUTES: &[u8] = b"# Written by keyward: deliveries are checksummed byte for byte; never convert line endings.\n\
                     *.age -text\n*.json -text\n";

/// A pending delivery written by [`Outbox::stage_pending`], not yet durable: give it to
/// [`Outbox::commit_pending`] (or drop it: its files are never read as a delivery).
#[derive(Debug)]
pub struct Staged {
    dir: PathBuf,
    /// Written, not yet flushed: the envelopes and the manifest's temp file.
    files: Vec<PathBuf>,
    /// Renamed onto `manifest.json` once `files` are durable; None when already durable.
    manifest_tmp: Option<PathBuf>,
    /// Directories whose entries changed (the `g<N>` directory and the parent of every
    /// directory created for it).
    dirs: Vec<PathBuf>,
}

impl Staged {
    /// A delivery `write_pending` already made durable.
    fn durable(dir: PathBuf) -> Staged {
        Staged {
            dir,
            files: Vec::new(),
            manifest_tmp: None,
            dirs: Vec::new(),
        }
    }

    /// Its `g<N>` directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn discard(&self) {
        if let Some(t) = &self.manifest_tmp {
            let _ = fs::remove_file(t);
        }
    }
}

/// The delivery outbox rooted at `root` (the spec's `delivery.outbox`).
#[derive(Debug, Clone)]
pub struct Outbox {
    root: PathBuf,
}

impl Outbox {
    pub fn new(root: PathBuf) -> Outbox {
        Outbox { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/<store>/<name>`.
    pub fn key_dir(&self, store: &str, name: &str) -> Result<PathBuf, DeliverError> {
        check_name("store name", store)?;
        check_name("key name", name)?;
        Ok(self.root.join(store).join(name))
    }

    /// `<root>/<store>/<name>/g<generation>`.
    pub fn dir_for(
        &self,
        store: &str,
        name: &str,
        generation: u32,
    ) -> Result<PathBuf, DeliverError> {
        Ok(self.key_dir(store, name)?.join(format!("g{generation}")))
    }

    /// Read the manifest in a `g<N>` directory.
    pub fn read(&self, dir: &Path) -> Result<Manifest, DeliverError> {
        Manifest::read(&dir.join(MANIFEST_FILE))
    }

    /// Durably write every envelope and then `manifest` with status `pending`; returns the
    /// `g<N>` directory. `sealed` must match `manifest.recipients` (as built by
    /// [`Manifest::pending`]).
    ///
    /// If the directory holds a manifest of a DIFFERENT key id (an older key of the same
    /// name), its envelopes are deleted and its manifest kept as `superseded-<old-id>.json`.
    /// If it holds this key id's pending or void delivery, it is overwritten (a retry).
    /// An active or superseded delivery of this key id is never overwritten.
    ///
    /// Resolve earlier pending deliveries first ([`Outbox::pending`], then `mark` active or
    /// `void` after asking the store): a pending delivery whose key did get registered
    /// before a crash holds the only copy of a live secret, and a retry would replace it.
    /// At least one envelope is required (a secret nobody can read must never exist).
    pub fn write_pending(
        &self,
        manifest: &Manifest,
        sealed: &[SealedFile],
    ) -> Result<PathBuf, DeliverError> {
        let dir = self.dir_for(&manifest.store, &manifest.name, manifest.generation)?;
        check_name("key id", &manifest.key_id)?;
        let mut m = manifest.clone();
        m.manifest_version = MANIFEST_VERSION;
        m.status = DeliveryStatus::Pending;
        self.check_files_match(&m, sealed)?;

        create_dir_durable(&dir)?;
        self.ensure_gitattributes()?;
        let manifest_path = dir.join(MANIFEST_FILE);
        let new_files: BTreeSet<&str> = m.recipients.iter().map(|r| r.file.as_str()).collect();
        if manifest_path.exists() {
            let old = Manifest::read(&manifest_path)?;
            if old.key_id != m.key_id {
                self.supersede_other_key(&dir, old)?;
            } else if !matches!(old.status, DeliveryStatus::Pending | DeliveryStatus::Void) {
                return Err(DeliverError::AlreadyDelivered {
                    dir,
                    key_id: old.key_id,
                    status: old.status.to_string(),
                });
            }
        }
        // Envelopes left by an abandoned attempt for principals no longer listed.
        for (name, path, is_dir) in list_dir(&dir)? {
            if !is_dir && name.ends_with(".age") && !new_files.contains(name.as_str()) {
                remove_if_exists(&path)?;
            }
        }
        // Every envelope and the manifest: each file fsynced before its rename, then ONE
        // directory fsync makes all the renames (and the removals above) durable together,
        // before the caller registers the key. A crash before that fsync leaves at worst
        // an unregistered delivery (no manifest: ignored; a pending one: voided on the
        // next run), never a registered key without its envelopes.
        for s in sealed {
            let path = dir.join(format!("{}.age", s.principal_id));
            write_replace(&path, s.armored.as_bytes(), MODE_PUBLIC)?;
        }
        write_replace(&dir.join(MANIFEST_FILE), &manifest_bytes(&m)?, MODE_PUBLIC)?;
        fsync_dir(&dir)?;
        Ok(dir)
    }

    /// The first half of [`Outbox::write_pending`] for a batch (apply's bulk creates): the
    /// envelopes written into a new `g<N>` directory and the manifest into a temp file
    /// beside it, nothing flushed yet, so a batch pays for its flushes once in
    /// [`Outbox::commit_pending`]. Until that returns, no `manifest.json` exists for it, so
    /// a crash leaves files every reader ignores. A directory that already holds a manifest
    /// (a retry, an older key of the same name) is written by `write_pending` itself, durable
    /// at once. Safe to call from several threads.
    pub fn stage_pending(
        &self,
        manifest: &Manifest,
        sealed: &[SealedFile],
    ) -> Result<Staged, DeliverError> {
        let dir = self.dir_for(&manifest.store, &manifest.name, manifest.generation)?;
        if dir.join(MANIFEST_FILE).exists() {
            return self.write_pending(manifest, sealed).map(Staged::durable);
        }
        check_name("key id", &manifest.key_id)?;
        let mut m = manifest.clone();
        m.manifest_version = MANIFEST_VERSION;
        m.status = DeliveryStatus::Pending;
        self.check_files_match(&m, sealed)?;
        let mut staged = Staged {
            dir: dir.clone(),
            files: Vec::with_capacity(sealed.len() + 1),
            manifest_tmp: None,
            dirs: vec![dir.clone()],
        };
        create_dir_unsynced(&dir, &mut staged.dirs)?;
        // Envelopes an abandoned attempt left (no manifest: never valid).
        let new_files: BTreeSet<String> = m.recipients.iter().map(|r| r.file.clone()).collect();
        for (name, path, is_dir) in list_dir(&dir)? {
            if !is_dir && name.ends_with(".age") && !new_files.contains(&name) {
                remove_if_exists(&path)?;
            }
        }
        for s in sealed {
            let path = dir.join(format!("{}.age", s.principal_id));
            write_unsynced(&path, s.armored.as_bytes(), MODE_PUBLIC)?;
            staged.files.push(path);
        }
        let tmp = write_temp_unsynced(&dir.join(MANIFEST_FILE), &manifest_bytes(&m)?, MODE_PUBLIC)?;
        staged.files.push(tmp.clone());
        staged.manifest_tmp = Some(tmp);
        Ok(staged)
    }

    /// The second half: make every staged file durable, then rename each manifest into
    /// place and make the renames (and the new directories) durable, with one flush of
    /// each kind for the whole batch (`fsio::flush_files`, `fsio::flush_dirs`). When this
    /// returns Ok, every delivery is as durable as `write_pending` leaves one; returns
    /// their `g<N>` directories in order. On an error the batch's temp files are removed
    /// and a manifest already renamed stays `pending` (never registered: the next apply
    /// voids it).
    pub fn commit_pending(&self, staged: Vec<Staged>) -> Result<Vec<PathBuf>, DeliverError> {
        self.ensure_gitattributes()?;
        let files: Vec<PathBuf> = staged.iter().flat_map(|s| s.files.clone()).collect();
        if let Err(e) = flush_files(&self.root, &files) {
            staged.iter().for_each(Staged::discard);
            return Err(e);
        }
        let mut dirs = Vec::new();
        for (i, s) in staged.iter().enumerate() {
            if let Some(tmp) = &s.manifest_tmp
                && let Err(e) = rename(tmp, &s.dir.join(MANIFEST_FILE))
            {
                staged[i + 1..].iter().for_each(Staged::discard);
                return Err(e);
            }
            dirs.extend(s.dirs.iter().cloned());
        }
        flush_dirs(&self.root, &dirs)?;
        Ok(staged.into_iter().map(|s| s.dir).collect())
    }

    /// [`Outbox::mark`] `active` for many pending deliveries at once (after their keys were
    /// registered together): each manifest checked and its envelopes verified as `mark`
    /// does, the new manifests written to temp files, ONE flush for all of them, then each
    /// renamed into place. As in `mark`, the renames need no directory flush: a crash
    /// leaves either the active manifest or the pending one, which recovery marks active
    /// again. Answers each directory in order.
    pub fn mark_active_batch(&self, dirs: &[PathBuf]) -> Vec<Result<(), DeliverError>> {
        let mut out: Vec<Result<(), DeliverError>> = Vec::with_capacity(dirs.len());
        let mut temps: Vec<(usize, PathBuf)> = Vec::new();
        for (i, dir) in dirs.iter().enumerate() {
            let staged = (|| {
                let mut m = self.read(dir)?;
                if m.status == DeliveryStatus::Active {
                    return Ok(None);
                }
                if m.status != DeliveryStatus::Pending {
                    return Err(DeliverError::InvalidTransition {
                        dir: dir.to_path_buf(),
                        from: m.status.to_string(),
                        to: DeliveryStatus::Active.to_string(),
                    });
                }
                for r in &m.recipients {
                    verify_envelope(&m, &dir.join(&r.file))?;
                }
                m.status = DeliveryStatus::Active;
                let bytes = manifest_bytes(&m)?;
                write_temp_unsynced(&dir.join(MANIFEST_FILE), &bytes, MODE_PUBLIC).map(Some)
            })();
            match staged {
                Ok(Some(tmp)) => temps.push((i, tmp)),
                Ok(None) => {}
                Err(e) => {
                    out.push(Err(e));
                    continue;
                }
            }
            out.push(Ok(()));
        }
        let files: Vec<PathBuf> = temps.iter().map(|(_, t)| t.clone()).collect();
        if let Err(e) = flush_files(&self.root, &files) {
            let msg = e.to_string();
            for (i, t) in &temps {
                let _ = std::fs::remove_file(t);
                out[*i] = Err(DeliverError::Internal(format!("marking active: {msg}")));
            }
            return out;
        }
        for (i, t) in temps {
            if let Err(e) = rename(&t, &dirs[i].join(MANIFEST_FILE)) {
                out[i] = Err(e);
            }
        }
        out
    }

    /// Envelopes are checked byte for byte (sha256), so git must never rewrite their line
    /// endings: write `<root>/.gitattributes` once (an existing one is left alone).
    fn ensure_gitattributes(&self) -> Result<(), DeliverError> {
        let path = self.root.join(".gitattributes");
        if path.exists() {
            return Ok(());
        }
        match super::fsio::create_new_atomic(&path, GITATTRIBUTES, MODE_PUBLIC) {
            Ok(()) | Err(DeliverError::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn check_files_match(&self, m: &Manifest, sealed: &[SealedFile]) -> Result<(), DeliverError> {
        if sealed.is_empty() {
            return Err(DeliverError::NoEnvelopes {
                key: m.name.clone(),
            });
        }
        if m.recipients.len() != sealed.len() {
            return Err(DeliverError::Internal(format!(
                "manifest for {} lists {} recipients but {} envelopes were given",
                m.name,
                m.recipients.len(),
                sealed.len()
            )));
        }
        let mut seen = BTreeSet::new();
        for s in sealed {
            check_name("principal id", &s.principal_id)?;
            if !seen.insert(s.principal_id.as_str()) {
                return Err(DeliverError::Internal(format!(
                    "principal `{}` given twice",
                    s.principal_id
                )));
            }
            let ok = m.recipient(&s.principal_id).is_some_and(|r| {
                r.file == format!("{}.age", s.principal_id)
                    && r.sha256 == sha256_hex(s.armored.as_bytes())
            });
            if !ok {
                return Err(DeliverError::Internal(format!(
                    "the envelope for `{}` does not match the manifest of {} (build it with Manifest::pending)",
                    s.principal_id, m.name
                )));
            }
        }
        Ok(())
    }

    /// Delete an older key's envelopes from `dir` and keep its manifest, marked superseded
    /// (or void, if it never became active), as `superseded-<old-id>.json`. Safe to repeat
    /// after a crash at any step.
    fn supersede_other_key(&self, dir: &Path, mut old: Manifest) -> Result<(), DeliverError> {
        check_name("key id", &old.key_id)?;
        for (name, path, is_dir) in list_dir(dir)? {
            if !is_dir && name.ends_with(".age") {
                remove_if_exists(&path)?;
            }
        }
        fsync_dir(dir)?;
        // An older key's delivery that never became active never worked: it is void.
        old.status = match old.status {
            DeliveryStatus::Pending | DeliveryStatus::Void => DeliveryStatus::Void,
            DeliveryStatus::Active | DeliveryStatus::Superseded => DeliveryStatus::Superseded,
            DeliveryStatus::Revoked => DeliveryStatus::Revoked,
        };
        write_json(&dir.join(format!("superseded-{}.json", old.key_id)), &old)?;
        remove_if_exists(&dir.join(MANIFEST_FILE))?;
        fsync_dir(dir)
    }

    /// Durably rewrite the manifest in `dir` with `status`. Allowed: pending -> active
    /// (only when every envelope is present and matches its SHA-256), pending -> void (use
    /// [`Outbox::void`], which this calls), active -> superseded, and re-marking the same
    /// status. Returns the updated manifest.
    pub fn mark(&self, dir: &Path, status: DeliveryStatus) -> Result<Manifest, DeliverError> {
        if status == DeliveryStatus::Void {
            return self.void(dir);
        }
        let mut m = self.read(dir)?;
        if !m.status.may_become(status) {
            return Err(DeliverError::InvalidTransition {
                dir: dir.to_path_buf(),
                from: m.status.to_string(),
                to: status.to_string(),
            });
        }
        if m.status == DeliveryStatus::Pending && status == DeliveryStatus::Active {
            // Only a complete, intact delivery may become the live secret's record.
            for r in &m.recipients {
                verify_envelope(&m, &dir.join(&r.file))?;
            }
        }
        if m.status != status {
            let from = m.status;
            m.status = status;
            if from == DeliveryStatus::Pending && status == DeliveryStatus::Active {
                // pending -> active needs no directory fsync: the new manifest's bytes are
                // fsynced before the atomic rename, so a crash leaves either this active
                // manifest or the pending one, and recovery marks a pending delivery
                // active again when the store has its key. One fsync saved per key.
                write_replace(&dir.join(MANIFEST_FILE), &manifest_bytes(&m)?, MODE_PUBLIC)?;
            } else {
                m.write(dir)?;
            }
        }
        Ok(m)
    }

    /// Check every envelope listed in `dir`'s manifest against its SHA-256 (e.g. before
    /// trusting a pending delivery found during recovery). Returns the manifest.
    pub fn verify(&self, dir: &Path) -> Result<Manifest, DeliverError> {
        let m = self.read(dir)?;
        for r in &m.recipients {
            verify_envelope(&m, &dir.join(&r.file))?;
        }
        Ok(m)
    }

    /// The key was never registered: delete the envelopes (they never worked) and mark the
    /// manifest `void`. Only a pending (or already void) delivery can be voided.
    pub fn void(&self, dir: &Path) -> Result<Manifest, DeliverError> {
        let mut m = self.read(dir)?;
        if !m.status.may_become(DeliveryStatus::Void) {
            return Err(DeliverError::InvalidTransition {
                dir: dir.to_path_buf(),
                from: m.status.to_string(),
                to: DeliveryStatus::Void.to_string(),
            });
        }
        for (name, path, is_dir) in list_dir(dir)? {
            if !is_dir && name.ends_with(".age") {
                remove_if_exists(&path)?;
            }
        }
        fsync_dir(dir)?;
        if m.status != DeliveryStatus::Void {
            m.status = DeliveryStatus::Void;
            m.write(dir)?;
        }
        Ok(m)
    }

    /// The files keyward wrote in the outbox, the only ones `apply --commit-deliveries`
    /// commits: each generation's `manifest.json`, the envelopes it lists whose bytes match
    /// its SHA-256, the older manifests kept as `superseded-<id>.json`, and the outbox's
    /// `.gitattributes` as keyward wrote it. Anything else
    /// under the outbox (a stray plaintext file, an editor's backup, a symlink, a file named
    /// like an envelope that no manifest vouches for) is not a delivery.
    pub fn delivery_files(&self) -> Result<Vec<PathBuf>, DeliverError> {
        let regular = |p: &Path| fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_file());
        let mut out = Vec::new();
        let attributes = self.root.join(".gitattributes");
        if regular(&attributes) && fs::read(&attributes).is_ok_and(|b| b == GITATTRIBUTES) {
            out.push(attributes);
        }
        for (dir, m) in self.list()? {
            if !regular(&dir.join(MANIFEST_FILE)) {
                continue;
            }
            out.push(dir.join(MANIFEST_FILE));
            for r in &m.recipients {
                let p = dir.join(&r.file);
                if regular(&p) && verify_envelope(&m, &p).is_ok() {
                    out.push(p);
                }
            }
            for (name, path, _) in list_dir(&dir)? {
                let kept = name.starts_with("superseded-") && name.ends_with(".json");
                if kept && regular(&path) && Manifest::read(&path).is_ok() {
                    out.push(path);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Every `manifest.json` in the outbox, ordered by store, key name, then generation.
    pub fn list(&self) -> Result<Vec<(PathBuf, Manifest)>, DeliverError> {
        let mut out = Vec::new();
        for (store, store_dir, is_dir) in list_dir(&self.root)? {
            if !is_dir || check_name("store name", &store).is_err() {
                continue;
            }
            for (name, key_dir, is_dir) in list_dir(&store_dir)? {
                if !is_dir || check_name("key name", &name).is_err() {
                    continue;
                }
                out.extend(self.generations_in(&key_dir)?);
            }
        }
        Ok(out)
    }

    fn generations_in(&self, key_dir: &Path) -> Result<Vec<(PathBuf, Manifest)>, DeliverError> {
        let mut gens = Vec::new();
        for (gname, gdir, is_dir) in list_dir(key_dir)? {
            let Some(g) = parse_generation_dir(&gname).filter(|_| is_dir) else {
                continue;
            };
            let mpath = gdir.join(MANIFEST_FILE);
            if !mpath.exists() {
                continue;
            }
            gens.push((g, gdir, Manifest::read(&mpath)?));
        }
        gens.sort_by_key(|(g, _, _)| *g);
        Ok(gens.into_iter().map(|(_, d, m)| (d, m)).collect())
    }

    /// Every generation of one key (by name) that has a manifest, by generation.
    pub fn generations(
        &self,
        store: &str,
        name: &str,
    ) -> Result<Vec<(PathBuf, Manifest)>, DeliverError> {
        self.generations_in(&self.key_dir(store, name)?)
    }

    /// All pending deliveries (to resolve at the start of an apply: mark active if the store
    /// has the key at that generation, otherwise void).
    pub fn pending(&self) -> Result<Vec<(PathBuf, Manifest)>, DeliverError> {
        Ok(self
            .list()?
            .into_iter()
            .filter(|(_, m)| m.status == DeliveryStatus::Pending)
            .collect())
    }

    /// The newest active delivery of a key: latest `created_at`, then highest generation
    /// (so a replacement key's g1 wins over the old key's g3).
    pub fn latest(
        &self,
        store: &str,
        name: &str,
    ) -> Result<Option<(PathBuf, Manifest)>, DeliverError> {
        Ok(self
            .generations(store, name)?
            .into_iter()
            .filter(|(_, m)| m.status == DeliveryStatus::Active)
            .max_by_key(|(_, m)| (m.created_at, m.generation)))
    }

    /// Mark every active or superseded generation of key `key_id` (named `name` in `store`)
    /// `revoked`: its secret no longer verifies. Returns how many were marked.
    pub fn mark_revoked(
        &self,
        store: &str,
        name: &str,
        key_id: &str,
    ) -> Result<usize, DeliverError> {
        let mut n = 0;
        for (dir, m) in self.generations(store, name)? {
            let current = matches!(
                m.status,
                DeliveryStatus::Active | DeliveryStatus::Superseded
            );
            if m.key_id == key_id && current {
                self.mark(&dir, DeliveryStatus::Revoked)?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// The delivery `keyward secret NAME` opens: the newest active one, else (with its
    /// status to warn about) the newest superseded or revoked one.
    fn current(
        &self,
        store: &str,
        name: &str,
    ) -> Result<Option<(PathBuf, Manifest)>, DeliverError> {
        if let Some(found) = self.latest(store, name)? {
            return Ok(Some(found));
        }
        Ok(self
            .generations(store, name)?
            .into_iter()
            .filter(|(_, m)| {
                matches!(
                    m.status,
                    DeliveryStatus::Superseded | DeliveryStatus::Revoked
                )
            })
            .max_by_key(|(_, m)| (m.created_at, m.generation)))
    }

    /// For every key: generations replaced by a newer active one are marked `superseded`;
    /// once `retain` has passed since the newer one was created, their envelopes are
    /// deleted (manifests stay, for audit). Returns the deleted envelope paths.
    pub fn prune(
        &self,
        retain: chrono::Duration,
        now: DateTime<Utc>,
    ) -> Result<Vec<PathBuf>, DeliverError> {
        let mut deleted = Vec::new();
        let mut by_key: Vec<(PathBuf, Manifest)> = self.list()?;
        by_key.sort_by(|(_, a), (_, b)| {
            (&a.store, &a.name, a.created_at, a.generation).cmp(&(
                &b.store,
                &b.name,
                b.created_at,
                b.generation,
            ))
        });
        for (i, (dir, m)) in by_key.iter().enumerate() {
            if !matches!(
                m.status,
                DeliveryStatus::Active | DeliveryStatus::Superseded
            ) {
                continue;
            }
            // The first newer active delivery of the same key name supersedes this one.
            let newer = by_key[i + 1..]
                .iter()
                .filter(|(_, n)| n.store == m.store && n.name == m.name)
                .find(|(_, n)| n.status == DeliveryStatus::Active);
            let Some((_, newer)) = newer else { continue };
            if m.status == DeliveryStatus::Active {
                self.mark(dir, DeliveryStatus::Superseded)?;
            }
            if now - newer.created_at >= retain {
                let mut any = false;
                for (name, path, is_dir) in list_dir(dir)? {
                    if !is_dir && name.ends_with(".age") && remove_if_exists(&path)? {
                        deleted.push(path);
                        any = true;
                    }
                }
                if any {
                    fsync_dir(dir)?;
                }
            }
        }
        Ok(deleted)
    }

    /// Open `principal_id`'s envelope in `dir`: check its SHA-256 against the manifest,
    /// decrypt it, and check the payload belongs to this manifest.
    pub fn open(
        &self,
        dir: &Path,
        principal_id: &str,
        identities: &Identities,
    ) -> Result<Opened, DeliverError> {
        let m = self.read(dir)?;
        let r = m
            .recipient(principal_id)
            .ok_or_else(|| DeliverError::NotInManifest {
                path: dir.join(format!("{principal_id}.age")),
            })?;
        open_entry(dir, &m, &r.file, identities)
    }

    /// Open the newest active delivery of a key (when none is active, the newest superseded
    /// or revoked one: the caller warns by its status) with whichever envelope `identities` can
    /// read (envelopes whose fingerprints match the identities are tried first).
    pub fn open_latest(
        &self,
        store: &str,
        name: &str,
        identities: &Identities,
    ) -> Result<(PathBuf, Manifest, Opened), DeliverError> {
        let Some((dir, m)) = self.current(store, name)? else {
            return Err(DeliverError::NoDelivery {
                key: format!("{store}/{name}"),
                dir: self.key_dir(store, name)?,
            });
        };
        let mine: BTreeSet<String> = identities.fingerprints().into_iter().collect();
        let mut order: Vec<&ManifestRecipient> = m.recipients.iter().collect();
        order.sort_by_key(|r| !r.fingerprints.iter().any(|f| mine.contains(f)));
        for r in &order {
            match open_entry(&dir, &m, &r.file, identities) {
                Ok(o) => return Ok((dir, m.clone(), o)),
                Err(DeliverError::NoMatchingIdentity { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(DeliverError::NoMatchingIdentity {
            path: dir.clone(),
            for_whom: format!(
                "{} (no envelope there is for you)",
                m.recipients
                    .iter()
                    .map(|r| format!("`{}`", r.id))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            fingerprints: m
                .recipients
                .iter()
                .flat_map(|r| r.fingerprints.iter().cloned())
                .collect(),
            tried: identities.describe(),
            notes: identities.notes.clone(),
        })
    }
}

fn open_entry(
    dir: &Path,
    m: &Manifest,
    file: &str,
    identities: &Identities,
) -> Result<Opened, DeliverError> {
    let path = dir.join(file);
    let bytes = read_ciphertext(&path)?;
    let entry_sha = m
        .recipients
        .iter()
        .find(|r| r.file == file)
        .map(|r| r.sha256.as_str());
    if entry_sha != Some(sha256_hex(&bytes).as_str()) {
        return Err(DeliverError::Checksum { path });
    }
    let opened =
        decrypt_bytes(&bytes, identities, &path.display().to_string()).map_err(|e| match e {
            // Name the principal the file is for, as decrypt_file does.
            DeliverError::NoMatchingIdentity {
                path, tried, notes, ..
            } => {
                let r = m.recipients.iter().find(|r| r.file == file);
                DeliverError::NoMatchingIdentity {
                    path,
                    for_whom: r
                        .map(|r| format!("`{}` ({})", r.id, r.kind.as_str()))
                        .unwrap_or_default(),
                    fingerprints: r.map(|r| r.fingerprints.clone()).unwrap_or_default(),
                    tried,
                    notes,
                }
            }
            other => other,
        })?;
    check_opened(m, &opened, &path)?;
    Ok(opened)
}

/// Decrypt a delivery file the way `keyward decrypt FILE` should: when a `manifest.json`
/// sits beside it, the file must be listed there, its SHA-256 must match and its payload
/// must belong to that manifest (returned, so the caller can show e.g. a `pending` or
/// `superseded` status); without a manifest (an age file from elsewhere) it is simply
/// decrypted.
pub fn decrypt_delivery(
    path: &Path,
    identities: &Identities,
) -> Result<(Option<Manifest>, Opened), DeliverError> {
    let manifest_path = path.parent().map(|d| d.join(MANIFEST_FILE));
    match manifest_path.filter(|p| p.exists()) {
        Some(mp) => {
            let m = Manifest::read(&mp)?;
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if !m.recipients.iter().any(|r| r.file == name) {
                return Err(DeliverError::NotInManifest {
                    path: path.to_path_buf(),
                });
            }
            let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
            let opened = open_entry(&dir, &m, &name, identities)?;
            Ok((Some(m), opened))
        }
        None => Ok((None, super::seal::decrypt_file(path, identities)?)),
    }
}
