//! `ConsoleStore`: a vendor console seen through its ledger, behind the `Store` trait, so
//! plan, expiring, reminders and every guard read it as any store. Its writes record in
//! the ledger what an admin confirmed was done in the console. Must not talk to the admin
//! (the checklist does) nor see a secret: only `SecretHash` fingerprints reach it.

use super::ledger::{self, Confirmation, LedgerError, LedgerFile, LedgerKey, PendingStep};
use super::preset::{ExpiryRule, Preset, Vendor, preset};
use crate::spec::{ConsoleStoreConfig, StoreConfig};
use crate::store::{
    Actor, Capabilities, Event, KeyPatch, KeyStatus, KeyWrite, Lease, ListFilter, LiveKey,
    MANAGED_BY, NewKey, Page, PageAt, Rotate, Store, StoreError, StoreResult, Verdict, Writer,
};
use async_trait::async_trait;
use chrono::{DateTime, SubsecRound, Utc};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// A console store opened on its ledger.
pub struct ConsoleStore {
    name: String,
    environment: String,
    config: ConsoleStoreConfig,
    preset: &'static Preset,
    /// Serialises read-modify-write of the ledger within this process.
    guard: Mutex<()>,
}

impl std::fmt::Debug for ConsoleStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleStore")
            .field("name", &self.name)
            .field("vendor", &self.preset.vendor)
            .finish()
    }
}

fn ledger_err(e: LedgerError) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl ConsoleStore {
    /// Open store `cfg` (a `kind: console` store). Reads the ledger once, so a broken one is
    /// reported before anything is planned.
    pub fn open(
        cfg: &StoreConfig,
        console: &ConsoleStoreConfig,
    ) -> Result<ConsoleStore, LedgerError> {
        let vendor = Vendor::parse(&console.vendor).unwrap_or(Vendor::Generic);
        let s = ConsoleStore {
            name: cfg.name.clone(),
            environment: cfg.environment.clone(),
            config: console.clone(),
            preset: preset(vendor),
            guard: Mutex::new(()),
        };
        s.read()?;
        Ok(s)
    }

    pub fn preset(&self) -> &'static Preset {
        self.preset
    }
    pub fn config(&self) -> &ConsoleStoreConfig {
        &self.config
    }
    pub fn environment(&self) -> &str {
        &self.environment
    }

    /// The ledger as it is on disk now.
    pub fn read(&self) -> Result<LedgerFile, LedgerError> {
        ledger::read(
            &self.config.ledger,
            &self.config.ledger_rel,
            &self.name,
            self.preset.vendor.as_str(),
        )
    }

    /// Read, change and write the ledger under the in-process guard.
    fn change<T>(&self, f: impl FnOnce(&mut LedgerFile) -> StoreResult<T>) -> StoreResult<T> {
        let _g = self
            .guard
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut file = self.read().map_err(ledger_err)?;
        let out = f(&mut file)?;
        ledger::write(&self.config.ledger, &self.config.ledger_rel, &file).map_err(ledger_err)?;
        Ok(out)
    }

    /// Record that the admin began `step` in the console (made the key, or regenerated
    /// it), before its value is pasted: a crash from here on leaves the step pending.
    pub fn begin(&self, step: PendingStep) -> StoreResult<()> {
        self.change(|f| {
            f.pending.retain(|p| p.key != step.key);
            f.pending.push(step);
            Ok(())
        })
    }

    /// Drop the pending step of key `name` (the admin said it was not made).
    pub fn abandon(&self, name: &str) -> StoreResult<bool> {
        self.change(|f| {
            let before = f.pending.len();
            f.pending.retain(|p| p.key != name);
            Ok(f.pending.len() < before)
        })
    }

    /// Keep the client id typed for the pending step of `name` (recorded with the key).
    pub fn set_pending_client_id(&self, name: &str, client_id: &str) -> StoreResult<()> {
        self.change(|f| {
            let p = f
                .pending
                .iter_mut()
                .find(|p| p.key == name)
                .ok_or_else(|| StoreError::NotFound(name.to_string()))?;
            p.client_id = Some(client_id.to_string());
            Ok(())
        })
    }

    /// Record an audit of the whole console by `actor`.
    pub fn audited(&self, actor: &Actor, at: DateTime<Utc>) -> StoreResult<()> {
        self.change(|f| {
            f.audited = Some(confirmation("audit", actor, at));
            Ok(())
        })
    }

    /// Write the ledger's key `id` as an audit found it in the console (scopes, expiry,
    /// status), keeping `applied_digest`: the difference becomes drift in the next plan.
    pub fn record_found(
        &self,
        id: &str,
        found: impl FnOnce(&mut LedgerKey),
        actor: &Actor,
    ) -> StoreResult<LiveKey> {
        let now = now();
        self.change(|f| {
            let k = f
                .key_mut(id)
                .ok_or_else(|| StoreError::NotFound(id.to_string()))?;
            found(k);
            k.version += 1;
            k.updated = now;
            k.confirmed.push(confirmation("audit", actor, now));
            Ok(live(k))
        })
    }

    /// Finish a key `keyward import` recorded: `facts` writes what the console says (when it
    /// was made, its ids, its scopes, the import confirmation), then the state it was adopted
    /// in is recorded, so the next plan compares the spec with the console as it is.
    pub fn imported(&self, id: &str, facts: impl FnOnce(&mut LedgerKey)) -> StoreResult<()> {
        self.change(|f| {
            let k = f
                .key_mut(id)
                .ok_or_else(|| StoreError::NotFound(id.to_string()))?;
            facts(k);
            k.applied_digest = Some(live(k).state_digest());
            Ok(())
        })
    }

    /// Add keys adopted from the console (`keyward import --store`).
    pub fn adopt(&self, keys: Vec<LedgerKey>) -> StoreResult<()> {
        self.change(|f| {
            for k in keys {
                if f.keys
                    .iter()
                    .any(|have| have.name == k.name || have.id == k.id)
                {
                    return Err(StoreError::AlreadyExists(k.name));
                }
                f.keys.push(k);
            }
            Ok(())
        })
    }

    /// A key change goes ahead only under the live lease, or under none while none is
    /// live (`store::rules::check_lease`, judged on the lock file).
    fn check_lease(&self, lease: Option<&str>) -> StoreResult<()> {
        crate::store::rules::check_lease(
            self.held_lease().map(|l| (l.id, l.holder, l.expires_at)),
            lease,
            Utc::now(),
        )
    }

    fn held_lease(&self) -> Option<Lease> {
        std::fs::read(self.lock_path())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
    }

    fn lock_path(&self) -> PathBuf {
        let rel_depth = self.config.ledger_rel.components().count();
        let mut root: &Path = &self.config.ledger;
        for _ in 0..rel_depth {
            root = root.parent().unwrap_or(root);
        }
        root.join(".keyward")
            .join(format!("console-{}.lock", self.name))
    }
}

fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(0)
}

fn confirmation(step: &str, actor: &Actor, at: DateTime<Utc>) -> Confirmation {
    Confirmation {
        step: step.to_string(),
        by: if actor.who.is_empty() {
            "unknown".into()
        } else {
            actor.who.clone()
        },
        at,
        commit: actor.commit.clone(),
    }
}

/// The `sha256:` fingerprint a ledger keeps for a secret hash.
pub fn fingerprint_of(hash: &crate::store::SecretHash) -> String {
    format!("sha256:{}", hash.0)
}

/// A ledger entry as a live key.
pub fn live(k: &LedgerKey) -> LiveKey {
    LiveKey {
        id: k.id.clone(),
        name: k.name.clone(),
        environment: k.environment.clone(),
        owner: k.owner.clone(),
        purpose: k.purpose.clone(),
        scopes: k.scopes.clone(),
        labels: k.labels.clone(),
        status: k.status,
        issued_at: k.issued,
        created_at: k.created,
        updated_at: k.updated,
        expires_at: k.expires,
        lifetime: k.lifetime.clone(),
        version: k.version,
        generation: k.generation,
        spec_generation: k.spec_generation,
        previous_valid_until: k.previous_valid_until,
        recipients: k.recipients.clone(),
        quota_per_day: None,
        protected: k.protected,
        managed_by: Some(MANAGED_BY.to_string()),
        applied_digest: k.applied_digest.clone(),
    }
}

fn matches(filter: &ListFilter, k: &LiveKey) -> bool {
    filter.owner.as_ref().is_none_or(|o| *o == k.owner)
        && filter.status.is_none_or(|s| s == k.status)
        && filter
            .environment
            .as_ref()
            .is_none_or(|e| *e == k.environment)
        && filter
            .label
            .as_ref()
            .is_none_or(|(n, v)| k.labels.get(n) == Some(v))
        && filter.managed.is_none_or(|m| m == k.is_managed())
        && filter
            .expiring_before
            .is_none_or(|t| k.expires_at.is_some_and(|e| e < t))
        && (!filter.never_expires || k.expires_at.is_none())
}

fn checked<'a>(f: &'a mut LedgerFile, w: KeyWrite<'_>) -> StoreResult<&'a mut LedgerKey> {
    let k = f
        .key_mut(w.id)
        .ok_or_else(|| StoreError::NotFound(w.id.to_string()))?;
    if k.version != w.version {
        return Err(StoreError::Conflict {
            id: w.id.to_string(),
            expected: w.version,
            found: k.version,
        });
    }
    Ok(k)
}

fn patch_key(k: &mut LedgerKey, p: KeyPatch) {
    if let Some(v) = p.purpose {
        k.purpose = v;
    }
    if let Some(mut v) = p.scopes {
        v.sort();
        v.dedup();
        k.scopes = v;
    }
    if let Some(v) = p.labels {
        k.labels = v;
    }
    if let Some(v) = p.expires_at {
        k.expires = v;
    }
    if let Some(v) = p.lifetime {
        k.lifetime = v;
    }
    if let Some(v) = p.recipients {
        k.recipients = v;
    }
    if let Some(v) = p.protected {
        k.protected = v;
    }
    if let Some(v) = p.owner {
        k.owner = v;
    }
    if let Some(v) = p.applied_digest {
        k.applied_digest = Some(v);
    }
}

#[async_trait]
impl Store for ConsoleStore {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> Capabilities {
        let mut in_place: Vec<String> = ["purpose", "labels", "recipients", "protected"]
            .into_iter()
            .map(String::from)
            .collect();
        in_place.extend(self.preset.editable.iter().cloned());
        Capabilities {
            client_secret_hash: false,
            native_expiry: self.preset.expiry != ExpiryRule::None,
            in_place,
            // The console makes the secret; the admin pastes it.
            secret: crate::store::SecretMode::Server,
            expiry: None,
            // A console's regenerate (or new key, then delete the old) keeps no previous
            // value: the old one stops working at once (the preset's `old_value:`).
            rotation_overlap: crate::store::Overlap::None,
            disable: true,
            quota: false,
            // A vendor's console may show last use; keyward cannot see it.
            usage: false,
            // The console counts its own calls (Alma: a daily API budget); keyward does not.
            budget: false,
        }
    }

    async fn list(&self, filter: &ListFilter, _at: PageAt<'_>) -> StoreResult<Page<LiveKey>> {
        let file = self.read().map_err(ledger_err)?;
        let items = file
            .keys
            .iter()
            .map(live)
            .filter(|k| matches(filter, k))
            .collect();
        Ok(Page { items, next: None })
    }

    async fn get(&self, id: &str) -> StoreResult<Option<LiveKey>> {
        Ok(self.read().map_err(ledger_err)?.key(id).map(live))
    }

    async fn create(&self, key: NewKey, by: Writer<'_>) -> StoreResult<LiveKey> {
        self.create_with(key, None, by)
    }

    async fn update(&self, w: KeyWrite<'_>, patch: KeyPatch) -> StoreResult<LiveKey> {
        self.check_lease(w.lease)?;
        let now = now();
        self.change(|f| {
            let k = checked(f, w)?;
            let console_side =
                patch.scopes.is_some() || patch.expires_at.is_some() || patch.owner.is_some();
            patch_key(k, patch);
            k.version += 1;
            k.updated = now;
            if console_side {
                k.confirmed.push(confirmation("update", w.actor, now));
            }
            Ok(live(k))
        })
    }

    async fn rotate(&self, w: KeyWrite<'_>, rotate: Rotate) -> StoreResult<LiveKey> {
        self.check_lease(w.lease)?;
        let now = now();
        self.change(|f| {
            let k = checked(f, w)?;
            k.fingerprint = Some(fingerprint_of(&rotate.secret_hash));
            k.undelivered = false;
            k.previous_valid_until = rotate.previous_valid_until;
            k.issued = rotate.issued_at;
            k.expires = rotate.expires_at;
            k.generation = rotate.generation;
            k.spec_generation = rotate.spec_generation;
            k.recipients = rotate.recipients;
            k.status = KeyStatus::Active;
            k.version += 1;
            k.updated = now;
            k.confirmed.push(confirmation("rotate", w.actor, now));
            let name = k.name.clone();
            let out = live(k);
            f.pending.retain(|p| p.key != name);
            Ok(out)
        })
    }

    async fn set_status(&self, w: KeyWrite<'_>, to: KeyStatus) -> StoreResult<LiveKey> {
        self.check_lease(w.lease)?;
        let now = now();
        self.change(|f| {
            let k = checked(f, w)?;
            k.status = to;
            k.version += 1;
            k.updated = now;
            k.confirmed.push(confirmation(to.verb(), w.actor, now));
            Ok(live(k))
        })
    }

    async fn delete(&self, w: KeyWrite<'_>) -> StoreResult<()> {
        self.check_lease(w.lease)?;
        self.change(|f| {
            checked(f, w)?;
            f.keys.retain(|k| k.id != w.id);
            Ok(())
        })
    }

    async fn lock(&self, holder: &str, ttl: chrono::Duration) -> StoreResult<Lease> {
        let path = self.lock_path();
        let lease = Lease {
            id: crate::secret::new_key_id(),
            holder: holder.to_string(),
            expires_at: now() + ttl,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Backend(format!("{}: {e}", dir.display())))?;
        }
        let body = serde_json::to_vec(&lease).map_err(|e| StoreError::Backend(e.to_string()))?;
        for _ in 0..2 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut file) => {
                    use std::io::Write;
                    file.write_all(&body)
                        .map_err(|e| StoreError::Backend(e.to_string()))?;
                    return Ok(lease);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let held: Option<Lease> = std::fs::read(&path)
                        .ok()
                        .and_then(|b| serde_json::from_slice(&b).ok());
                    match held {
                        Some(h) if h.expires_at > Utc::now() => {
                            return Err(StoreError::Locked {
                                holder: h.holder,
                                id: h.id,
                                until: h.expires_at,
                            });
                        }
                        _ => {
                            let _ = std::fs::remove_file(&path);
                        }
                    }
                }
                Err(e) => return Err(StoreError::Backend(format!("{}: {e}", path.display()))),
            }
        }
        Err(StoreError::Backend(format!(
            "could not take the lock {}",
            path.display()
        )))
    }

    /// Rewrites the lock file with the new expiry (an expired lease is lost).
    async fn renew(&self, lease_id: &str, ttl: chrono::Duration) -> StoreResult<Lease> {
        let held = self.held_lease().map(|l| (l.id, l.holder, l.expires_at));
        let lease = crate::store::rules::renewed(held, lease_id, ttl, Utc::now())?;
        let body = serde_json::to_vec(&lease).map_err(|e| StoreError::Backend(e.to_string()))?;
        let path = self.lock_path();
        let tmp = path.with_extension(format!("renew-{}", std::process::id()));
        std::fs::write(&tmp, &body)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| StoreError::Backend(format!("{}: {e}", path.display())))?;
        Ok(lease)
    }

    async fn unlock(&self, lease_id: &str) -> StoreResult<()> {
        let path = self.lock_path();
        let held: Option<Lease> = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        if held.is_some_and(|h| h.id == lease_id) {
            std::fs::remove_file(&path).map_err(|e| StoreError::Backend(e.to_string()))?;
        }
        Ok(())
    }

    async fn verify(&self, _presented: &str, _now: DateTime<Utc>) -> StoreResult<Verdict> {
        Err(StoreError::Refused(format!(
            "store `{}` is a console store: {} checks its own keys",
            self.name, self.preset.title
        )))
    }

    async fn events(&self, _after: Option<i64>, _limit: usize) -> StoreResult<Vec<Event>> {
        Ok(Vec::new())
    }

    async fn record(&self, _action: &str, _detail: Value, _actor: &Actor) -> StoreResult<()> {
        Ok(())
    }
}

impl ConsoleStore {
    /// Record a key made in the console, with the client id that came with it (ALM).
    pub fn create_with(
        &self,
        key: NewKey,
        client_id: Option<String>,
        by: Writer<'_>,
    ) -> StoreResult<LiveKey> {
        let (now, actor) = (now(), by.actor);
        self.check_lease(by.lease)?;
        self.change(|f| {
            if f.keys.iter().any(|k| k.id == key.id) {
                return Err(StoreError::AlreadyExists(key.id.clone()));
            }
            let client_id = client_id.or_else(|| {
                f.pending_for(&key.name)
                    .filter(|p| p.id == key.id)
                    .and_then(|p| p.client_id.clone())
            });
            let mut scopes = key.scopes.clone();
            scopes.sort();
            scopes.dedup();
            let k = LedgerKey {
                name: key.name.clone(),
                id: key.id.clone(),
                console_id: None,
                client_id,
                environment: key.environment.clone(),
                owner: key.owner.clone(),
                purpose: key.purpose.clone(),
                scopes,
                labels: key.labels.clone(),
                status: key.status,
                created: key.issued_at,
                issued: key.issued_at,
                updated: now,
                expires: key.expires_at,
                lifetime: key.lifetime.clone(),
                generation: key.generation,
                spec_generation: key.spec_generation,
                previous_valid_until: None,
                recipients: key.recipients.clone(),
                protected: key.protected,
                fingerprint: Some(fingerprint_of(&key.secret_hash)),
                undelivered: false,
                applied_digest: key.applied_digest.clone(),
                version: 1,
                confirmed: vec![confirmation("create", actor, now)],
            };
            f.pending.retain(|p| p.key != key.name);
            let out = live(&k);
            f.keys.push(k);
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_console_rotation_keeps_no_previous_value() {
        // Every vendor of examples/consoles (Alma, Primo, OpenAthens): the old value stops
        // working at once (the preset's `old_value:`), so no console reports an overlap.
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/consoles");
        let loaded = crate::spec::load(&root).expect("the example loads");
        let mut seen = Vec::new();
        for (cfg, console, _) in super::super::rules::console_stores(&loaded.spec) {
            let s = ConsoleStore::open(cfg, console).expect("open");
            let caps = s.capabilities();
            assert_eq!(
                caps.rotation_overlap,
                crate::store::Overlap::None,
                "{}",
                cfg.name
            );
            assert_eq!(caps.secret, crate::store::SecretMode::Server);
            seen.push(console.vendor.clone());
        }
        seen.sort();
        seen.dedup();
        assert_eq!(seen, ["alma", "openathens", "primo"]);
    }
}
