//! The store conformance kit (`keyward store check STORE`): the behaviours every store is
//! held to — create -> list -> rotate with grace -> disable -> enable -> revoke -> delete,
//! version conflicts, idempotent retries, unmanaged keys untouched, paging, expiry — run
//! the apply lease (changes only under the live lease; renewed, expired, foreign), usage
//! (read where the store keeps it; a verify counted at the time it was made), run
//! through the `Store` trait against any store, reported as one pass/fail row per
//! behaviour. Works on keys of its own (named `kwcheck-<run>-...`) and removes them; must
//! never print a secret (rows say what was expected and what was seen, never a value).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use chrono::{Duration, DurationRound, Utc};
use rand::RngCore;
use serde::Serialize;

use super::{
    Capabilities, ExpiryMode, KeyWrite, ListFilter, Overlap, PageAt, Store, StoreError,
    VerifyReason, Writer, list_all,
};
use crate::model::{Actor, KeyPatch, KeyStatus, LiveKey, MANAGED_BY, NewKey, Rotate};
use crate::secret::{self, Secret};

/// What the kit may assume about the store.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// The environment of the store (keys are created in it).
    pub environment: String,
    /// Scopes the store can give (for stores with a grants table: scopes it has grants for).
    pub scopes: Vec<String>,
    /// How many keys the paging check creates.
    pub paging_keys: usize,
}

/// One behaviour's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct CheckRow {
    pub check: &'static str,
    pub passed: bool,
    /// What was checked, or what went wrong (no secrets).
    pub detail: String,
    pub millis: u64,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub store: String,
    pub capabilities: Capabilities,
    pub checks: Vec<CheckRow>,
    /// Keys of this run that could not be removed afterwards (ids).
    pub left_behind: Vec<String>,
}

impl CheckReport {
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.passed) && self.left_behind.is_empty()
    }

    /// The table `keyward store check` prints.
    pub fn table(&self) -> String {
        let w = self
            .checks
            .iter()
            .map(|c| c.check.len())
            .max()
            .unwrap_or(5)
            .max(5);
        let mut out = format!(
            "store {}: secret {:?}, expiry {:?}, rotation overlap {:?}\n{:<w$}  {:<6}  {:>7}  detail\n",
            self.store,
            self.capabilities.secret,
            self.capabilities.expiry_mode(),
            self.capabilities.rotation_overlap,
            "check",
            "result",
            "ms",
        );
        for c in &self.checks {
            out.push_str(&format!(
                "{:<w$}  {:<6}  {:>7}  {}\n",
                c.check,
                if c.passed { "pass" } else { "FAIL" },
                c.millis,
                c.detail
            ));
        }
        let failed = self.checks.iter().filter(|c| !c.passed).count();
        out.push_str(&format!(
            "{} of {} checks passed{}\n",
            self.checks.len() - failed,
            self.checks.len(),
            if self.left_behind.is_empty() {
                String::new()
            } else {
                format!(
                    "; {} test key(s) could not be removed",
                    self.left_behind.len()
                )
            }
        ));
        out
    }
}

type Outcome = Result<String, String>;

/// Run every check against `store`.
pub async fn run(store: &dyn Store, opts: &CheckOptions) -> CheckReport {
    let mut run_id = [0u8; 3];
    rand::rngs::OsRng.fill_bytes(&mut run_id);
    let k = Kit {
        store,
        opts,
        caps: store.capabilities(),
        prefix: format!("kwcheck-{}", hex::encode(run_id)),
        actor: Actor {
            who: "keyward-store-check".into(),
            commit: None,
        },
    };
    let mut checks = Vec::new();
    macro_rules! check {
        ($name:literal, $f:expr) => {{
            let t = Instant::now();
            let r: Outcome = $f.await;
            checks.push(CheckRow {
                check: $name,
                passed: r.is_ok(),
                detail: r.unwrap_or_else(|e| e),
                millis: t.elapsed().as_millis() as u64,
            });
        }};
    }
    check!("create", k.create_list_get());
    check!("create-batch", k.create_batch());
    check!("rotate-with-grace", k.rotate_with_grace());
    check!("disable-enable", k.disable_enable());
    check!("revoke", k.revoke());
    check!("delete", k.delete());
    check!("version-conflicts", k.conflicts());
    check!("idempotent-retries", k.idempotent());
    check!("unmanaged-untouched", k.unmanaged());
    check!("paging", k.paging());
    check!("expiry", k.expiry());
    check!("apply-lease", k.lease());
    check!("usage", k.usage());
    let left_behind = k.cleanup().await;
    CheckReport {
        store: store.name().to_owned(),
        capabilities: k.caps.clone(),
        checks,
        left_behind,
    }
}

struct Kit<'a> {
    store: &'a dyn Store,
    opts: &'a CheckOptions,
    caps: Capabilities,
    prefix: String,
    actor: Actor,
}

fn fail(step: &str) -> impl Fn(StoreError) -> String + '_ {
    move |e| format!("{step}: {e}")
}

/// What a store answered, without any value: ok, or the error's kind and message.
fn said<T>(r: Result<T, StoreError>) -> String {
    match r {
        Ok(_) => "expected a refusal, it went ahead".into(),
        Err(e) => format!("expected a lease refusal, got: {e}"),
    }
}

fn ensure(ok: bool, what: impl Into<String>) -> Result<(), String> {
    if ok { Ok(()) } else { Err(what.into()) }
}

impl Kit<'_> {
    fn now(&self) -> chrono::DateTime<Utc> {
        Utc::now()
            .duration_trunc(Duration::seconds(1))
            .unwrap_or_else(|_| Utc::now())
    }

    /// A new key record of this run, with its secret.
    fn new_key(&self, name: &str, managed: bool) -> Result<(NewKey, Secret), String> {
        let id = secret::new_key_id();
        let s = secret::generate(&self.opts.environment, &id);
        let now = self.now();
        let key = NewKey {
            id,
            name: format!("{}-{name}", self.prefix),
            environment: self.opts.environment.clone(),
            owner: "kwcheck".into(),
            purpose: Some("keyward store check".into()),
            scopes: self.opts.scopes.iter().take(1).cloned().collect(),
            labels: BTreeMap::from([("kwcheck".into(), self.prefix.clone())]),
            status: KeyStatus::Active,
            issued_at: now - Duration::minutes(1),
            expires_at: Some(now + Duration::days(30)),
            lifetime: Some("30d".into()),
            generation: 1,
            spec_generation: 1,
            recipients: BTreeMap::from([("kwcheck".into(), "fingerprint".into())]),
            quota_per_day: None,
            protected: false,
            managed_by: managed.then(|| MANAGED_BY.to_owned()),
            applied_digest: None,
            secret_hash: self.store.secret_form(&s).map_err(fail("secret form"))?,
        };
        Ok((key, s))
    }

    async fn made(&self, name: &str) -> Result<(LiveKey, Secret), String> {
        let (nk, s) = self.new_key(name, true)?;
        let k = self
            .store
            .create(nk, Writer::new(&self.actor))
            .await
            .map_err(fail("create"))?;
        Ok((k, s))
    }

    async fn verdict(&self, s: &Secret) -> Result<(bool, VerifyReason), String> {
        let v = self
            .store
            .verify(s.expose(), Utc::now())
            .await
            .map_err(fail("verify"))?;
        Ok((v.valid, v.reason))
    }

    async fn expect_valid(&self, s: &Secret, when: &str) -> Result<(), String> {
        let (valid, reason) = self.verdict(s).await?;
        ensure(
            valid,
            format!("{when}: the secret was refused ({reason:?})"),
        )
    }

    /// Refused; when `reason` is given and the store can tell (keyward's own stores and
    /// any store whose check still accepts the password), with that reason.
    async fn expect_refused(
        &self,
        s: &Secret,
        when: &str,
        reason: Option<VerifyReason>,
    ) -> Result<(), String> {
        let (valid, got) = self.verdict(s).await?;
        ensure(!valid, format!("{when}: the secret still verifies"))?;
        if let Some(r) = reason
            && got != r
            && got != VerifyReason::Unknown
        {
            return Err(format!("{when}: refused as {got:?}, expected {r:?}"));
        }
        Ok(())
    }

    async fn create_list_get(&self) -> Outcome {
        let (k, s) = self.made("create").await?;
        let got = self.store.get(&k.id).await.map_err(fail("get"))?;
        ensure(
            got.as_ref() == Some(&k),
            "get does not return the key as created",
        )?;
        ensure(
            k.version >= 1 && k.is_managed(),
            "a new key has a version and the managed marker",
        )?;
        let listed = list_all(
            self.store,
            &ListFilter {
                managed: Some(true),
                ..Default::default()
            },
        )
        .await
        .map_err(fail("list"))?;
        ensure(
            listed.iter().any(|x| x.id == k.id),
            "the new key is not listed",
        )?;
        self.expect_valid(&s, "after create").await?;
        Ok("created, got, listed as managed, secret verifies".into())
    }

    /// Several keys in one `create_batch`: answered in order, each listed and verifying;
    /// a batch whose first key clashes with an existing id is refused as already-exists and
    /// registers nothing (stores that register one by one stop at the clash too).
    async fn create_batch(&self) -> Outcome {
        let mut made = Vec::new();
        for i in 0..3 {
            made.push(self.new_key(&format!("batch-{i}"), true)?);
        }
        let ids: Vec<String> = made.iter().map(|(k, _)| k.id.clone()).collect();
        let live = self
            .store
            .create_batch(
                made.iter().map(|(k, _)| k.clone()).collect(),
                Writer::new(&self.actor),
            )
            .await
            .map_err(fail("create_batch"))?;
        ensure(
            live.iter()
                .map(|k| k.id.as_str())
                .eq(ids.iter().map(String::as_str)),
            "create_batch answers each key, in order",
        )?;
        for (k, s) in &made {
            let got = self.store.get(&k.id).await.map_err(fail("get"))?;
            ensure(
                got.is_some_and(|g| g.is_managed() && g.name == k.name),
                "a batch key is not stored as sent",
            )?;
            self.expect_valid(s, "after create_batch").await?;
        }
        let (mut clash, _) = self.new_key("batch-clash", true)?;
        clash.id = ids[0].clone();
        let (fresh, fresh_secret) = self.new_key("batch-fresh", true)?;
        let r = self
            .store
            .create_batch(vec![clash, fresh.clone()], Writer::new(&self.actor))
            .await;
        ensure(
            matches!(r, Err(StoreError::AlreadyExists(_))),
            "a batch with an existing id: expected already-exists",
        )?;
        ensure(
            self.store
                .get(&fresh.id)
                .await
                .map_err(fail("get"))?
                .is_none(),
            "a refused batch registered a key",
        )?;
        self.expect_refused(&fresh_secret, "a refused batch's key", None)
            .await?;
        let first = self.store.get(&ids[0]).await.map_err(fail("get"))?;
        ensure(
            first.is_some_and(|k| k.name == made[0].0.name),
            "a refused batch changed the existing key",
        )?;
        Ok("three keys in one batch, each verifying; a clashing batch refused whole".into())
    }

    fn rotation(&self, k: &LiveKey, grace: Duration) -> Result<(Rotate, Secret), String> {
        let s = secret::generate(&self.opts.environment, &k.id);
        let now = self.now();
        Ok((
            Rotate {
                secret_hash: self.store.secret_form(&s).map_err(fail("secret form"))?,
                previous_valid_until: Some(now + grace),
                issued_at: now - Duration::seconds(1),
                expires_at: Some(now + Duration::days(30)),
                generation: k.generation + 1,
                spec_generation: k.spec_generation + 1,
                recipients: k.recipients.clone(),
            },
            s,
        ))
    }

    async fn rotate_with_grace(&self) -> Outcome {
        let (k, old) = self.made("rotate").await?;
        let (rot, new) = self.rotation(&k, Duration::hours(1))?;
        let r = self
            .store
            .rotate(KeyWrite::new(&k.id, k.version, &self.actor), rot)
            .await
            .map_err(fail("rotate"))?;
        ensure(
            r.id == k.id && r.generation == k.generation + 1,
            "rotation keeps the id and bumps the generation",
        )?;
        self.expect_valid(&new, "after rotate, the new secret")
            .await?;
        if self.caps.rotation_overlap == Overlap::None {
            self.expect_refused(&old, "no overlap: the old secret after rotate", None)
                .await?;
            return Ok("new secret verifies; no overlap: the old one stopped at once".into());
        }
        self.expect_valid(&old, "during the grace, the old secret")
            .await?;
        // A second rotation whose grace ends almost at once: afterwards only the newest works.
        let (rot, newest) = self.rotation(&r, Duration::seconds(1))?;
        self.store
            .rotate(KeyWrite::new(&r.id, r.version, &self.actor), rot)
            .await
            .map_err(fail("rotate again"))?;
        tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
        self.store
            .enforce(Utc::now())
            .await
            .map_err(fail("enforce"))?;
        self.expect_valid(&newest, "after the grace, the newest secret")
            .await?;
        self.expect_refused(&new, "after the grace, the previous secret", None)
            .await?;
        Ok("new secret verifies, old one during the grace, only the newest after it".into())
    }

    async fn disable_enable(&self) -> Outcome {
        let (k, s) = self.made("disable").await?;
        let d = self
            .store
            .set_status(
                KeyWrite::new(&k.id, k.version, &self.actor),
                KeyStatus::Disabled,
            )
            .await
            .map_err(fail("disable"))?;
        ensure(
            d.status == KeyStatus::Disabled && d.version > k.version,
            "disable sets the status and bumps the version",
        )?;
        self.expect_refused(&s, "disabled", Some(VerifyReason::Disabled))
            .await?;
        let e = self
            .store
            .set_status(
                KeyWrite::new(&k.id, d.version, &self.actor),
                KeyStatus::Active,
            )
            .await
            .map_err(fail("enable"))?;
        ensure(e.status == KeyStatus::Active, "enable makes it active")?;
        self.expect_valid(&s, "enabled again").await?;
        Ok("disabled key refused, enabled key verifies".into())
    }

    async fn revoke(&self) -> Outcome {
        let (k, s) = self.made("revoke").await?;
        let r = self
            .store
            .set_status(
                KeyWrite::new(&k.id, k.version, &self.actor),
                KeyStatus::Revoked,
            )
            .await
            .map_err(fail("revoke"))?;
        ensure(r.status == KeyStatus::Revoked, "revoke sets the status")?;
        self.expect_refused(&s, "revoked", Some(VerifyReason::Revoked))
            .await?;
        let again = self
            .store
            .set_status(
                KeyWrite::new(&k.id, r.version, &self.actor),
                KeyStatus::Active,
            )
            .await;
        ensure(
            matches!(again, Err(StoreError::Refused(_))),
            "enabling a revoked key is refused",
        )?;
        let listed = self.store.get(&k.id).await.map_err(fail("get"))?;
        ensure(
            listed.is_some_and(|x| x.status == KeyStatus::Revoked),
            "a revoked key stays listed (audit trail)",
        )?;
        Ok("revoked key refused, cannot be enabled, stays listed".into())
    }

    async fn delete(&self) -> Outcome {
        let (k, s) = self.made("delete").await?;
        self.store
            .delete(KeyWrite::new(&k.id, k.version, &self.actor))
            .await
            .map_err(fail("delete"))?;
        ensure(
            self.store.get(&k.id).await.map_err(fail("get"))?.is_none(),
            "a deleted key is gone",
        )?;
        self.expect_refused(&s, "deleted", Some(VerifyReason::Unknown))
            .await?;
        let again = self
            .store
            .delete(KeyWrite::new(&k.id, k.version, &self.actor))
            .await;
        ensure(
            matches!(again, Err(StoreError::NotFound(_))),
            "deleting it again is not_found",
        )?;
        Ok("deleted key gone, refused, second delete is not_found".into())
    }

    async fn conflicts(&self) -> Outcome {
        let (k, _) = self.made("conflict").await?;
        let patch = KeyPatch {
            purpose: Some(Some("first".into())),
            ..Default::default()
        };
        let u = self
            .store
            .update(KeyWrite::new(&k.id, k.version, &self.actor), patch)
            .await
            .map_err(fail("update"))?;
        ensure(u.version > k.version, "an update bumps the version")?;
        let stale = KeyPatch {
            purpose: Some(Some("second".into())),
            ..Default::default()
        };
        let r = self
            .store
            .update(KeyWrite::new(&k.id, k.version, &self.actor), stale)
            .await;
        ensure(
            matches!(r, Err(StoreError::Conflict { .. })),
            format!(
                "update with a stale version: expected a conflict, got {:?}",
                r.map(|k| k.version)
            ),
        )?;
        let r = self
            .store
            .set_status(
                KeyWrite::new(&k.id, k.version, &self.actor),
                KeyStatus::Disabled,
            )
            .await;
        ensure(
            matches!(r, Err(StoreError::Conflict { .. })),
            "disable with a stale version: expected a conflict",
        )?;
        let (rot, _) = self.rotation(&k, Duration::hours(1))?;
        let r = self
            .store
            .rotate(KeyWrite::new(&k.id, k.version, &self.actor), rot)
            .await;
        ensure(
            matches!(r, Err(StoreError::Conflict { .. })),
            "rotate with a stale version: expected a conflict",
        )?;
        let now = self.store.get(&k.id).await.map_err(fail("get"))?;
        ensure(
            now.is_some_and(|x| x.purpose.as_deref() == Some("first") && x.version == u.version),
            "a refused change changed nothing",
        )?;
        Ok("stale update, disable and rotate are conflicts and change nothing".into())
    }

    async fn idempotent(&self) -> Outcome {
        let (nk, _) = self.new_key("retry", true)?;
        let k = self
            .store
            .create(nk.clone(), Writer::new(&self.actor))
            .await
            .map_err(fail("create"))?;
        let r = self.store.create(nk, Writer::new(&self.actor)).await;
        ensure(
            matches!(r, Err(StoreError::AlreadyExists(_))),
            "creating the same id again: expected already-exists",
        )?;
        let patch = KeyPatch {
            labels: Some(BTreeMap::from([
                ("kwcheck".into(), self.prefix.clone()),
                ("x".into(), "1".into()),
            ])),
            ..Default::default()
        };
        let a = self
            .store
            .update(KeyWrite::new(&k.id, k.version, &self.actor), patch.clone())
            .await
            .map_err(fail("update"))?;
        let b = self
            .store
            .update(KeyWrite::new(&k.id, a.version, &self.actor), patch)
            .await
            .map_err(fail("repeat update"))?;
        ensure(
            b.version == a.version,
            "repeating an update changes nothing (same version)",
        )?;
        let d = self
            .store
            .set_status(
                KeyWrite::new(&k.id, b.version, &self.actor),
                KeyStatus::Disabled,
            )
            .await
            .map_err(fail("disable"))?;
        let d2 = self
            .store
            .set_status(
                KeyWrite::new(&k.id, d.version, &self.actor),
                KeyStatus::Disabled,
            )
            .await
            .map_err(fail("repeat disable"))?;
        ensure(
            d2.version == d.version,
            "repeating a disable changes nothing",
        )?;
        Ok("repeated create is already-exists; repeated update and disable are no-ops".into())
    }

    async fn unmanaged(&self) -> Outcome {
        let (nk, _) = self.new_key("unmanaged", false)?;
        let k = match self.store.create(nk, Writer::new(&self.actor)).await {
            Ok(k) => k,
            Err(StoreError::Refused(m)) | Err(StoreError::Invalid(m)) => {
                return Ok(format!("the store does not create unmanaged keys ({m})"));
            }
            Err(e) => return Err(format!("create an unmanaged key: {e}")),
        };
        ensure(!k.is_managed(), "the key is unmanaged")?;
        let patch = KeyPatch {
            purpose: Some(Some("changed".into())),
            ..Default::default()
        };
        let (rot, _) = self.rotation(&k, Duration::hours(1))?;
        let results = [
            (
                "update",
                self.store
                    .update(KeyWrite::new(&k.id, k.version, &self.actor), patch)
                    .await
                    .err(),
            ),
            (
                "rotate",
                self.store
                    .rotate(KeyWrite::new(&k.id, k.version, &self.actor), rot)
                    .await
                    .err(),
            ),
            (
                "disable",
                self.store
                    .set_status(
                        KeyWrite::new(&k.id, k.version, &self.actor),
                        KeyStatus::Disabled,
                    )
                    .await
                    .err(),
            ),
            (
                "revoke",
                self.store
                    .set_status(
                        KeyWrite::new(&k.id, k.version, &self.actor),
                        KeyStatus::Revoked,
                    )
                    .await
                    .err(),
            ),
            (
                "delete",
                self.store
                    .delete(KeyWrite::new(&k.id, k.version, &self.actor))
                    .await
                    .err(),
            ),
        ];
        for (what, r) in results {
            ensure(
                matches!(r, Some(StoreError::Refused(_))),
                format!("{what} of an unmanaged key was not refused"),
            )?;
        }
        let after = self.store.get(&k.id).await.map_err(fail("get"))?;
        ensure(after.as_ref() == Some(&k), "the unmanaged key changed")?;
        let listed = list_all(
            self.store,
            &ListFilter {
                managed: Some(false),
                ..Default::default()
            },
        )
        .await
        .map_err(fail("list unmanaged"))?;
        ensure(
            listed.iter().any(|x| x.id == k.id),
            "the unmanaged key is not listed as unmanaged",
        )?;
        Ok(
            "update, rotate, disable, revoke, delete refused; key unchanged; listed as unmanaged"
                .into(),
        )
    }

    async fn paging(&self) -> Outcome {
        let n = self.opts.paging_keys;
        let mut ids = BTreeSet::new();
        for i in 0..n {
            let (nk, _) = self.new_key(&format!("page-{i}"), true)?;
            ids.insert(
                self.store
                    .create(nk, Writer::new(&self.actor))
                    .await
                    .map_err(fail("create"))?
                    .id,
            );
        }
        let filter = ListFilter {
            label: Some(("kwcheck".into(), self.prefix.clone())),
            ..Default::default()
        };
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let page = self
                .store
                .list(
                    &filter,
                    PageAt {
                        cursor: cursor.as_deref(),
                        limit: 97,
                    },
                )
                .await
                .map_err(fail("list"))?;
            pages += 1;
            ensure(page.items.len() <= 97, "a page is longer than asked for")?;
            seen.extend(page.items.into_iter().map(|k| k.id));
            match page.next {
                Some(c) => cursor = Some(c),
                None => break,
            }
            ensure(pages <= n + 20, "the cursor does not end")?;
        }
        let unique: BTreeSet<&String> = seen.iter().collect();
        ensure(
            unique.len() == seen.len(),
            "a key was listed twice across pages",
        )?;
        ensure(
            ids.iter().all(|i| unique.contains(i)),
            "a key was missing from the pages",
        )?;
        Ok(format!(
            "{n} keys in {pages} pages of at most 97, each exactly once"
        ))
    }

    async fn expiry(&self) -> Outcome {
        let mode = self.caps.expiry_mode();
        let (mut nk, s) = self.new_key("expired", true)?;
        let now = self.now();
        nk.issued_at = now - Duration::hours(2);
        if mode == ExpiryMode::Emulated {
            // keyward switches the key off: it must work until then, and not after.
            nk.expires_at = Some(Utc::now() + Duration::seconds(2));
            let k = self
                .store
                .create(nk, Writer::new(&self.actor))
                .await
                .map_err(fail("create"))?;
            self.expect_valid(&s, "before it expires").await?;
            tokio::time::sleep(std::time::Duration::from_millis(2200)).await;
            let done = self
                .store
                .enforce(Utc::now())
                .await
                .map_err(fail("enforce"))?;
            ensure(
                done.iter().any(|l| l.contains(&k.name)),
                "emulated expiry: enforce did not switch the expired key off",
            )?;
            self.expect_refused(&s, "expired", Some(VerifyReason::Expired))
                .await?;
            return Ok("valid until it expired; enforce switched it off (expiry Emulated)".into());
        }
        nk.expires_at = Some(now - Duration::minutes(1));
        self.store
            .create(nk, Writer::new(&self.actor))
            .await
            .map_err(fail("create"))?;
        self.store
            .enforce(Utc::now())
            .await
            .map_err(fail("enforce"))?;
        self.expect_refused(&s, "expired", Some(VerifyReason::Expired))
            .await?;
        Ok(format!("an expired key is refused (expiry {mode:?})"))
    }

    /// A store that says it keeps usage answers it (for an adapter: the `usage` operation,
    /// every field as the protocol has it). A store that counts at verify (an adapter) has
    /// the kit's valid verify as the key's last use, at the time it was made; one counted
    /// elsewhere (`keyward serve` writes the embedded stores' usage) need not.
    async fn usage(&self) -> Outcome {
        if !self.caps.usage {
            return Ok("keeps no usage (capability usage: false): shown as not visible".into());
        }
        let (k, s) = self.made("usage").await?;
        let before = Utc::now() - Duration::seconds(1);
        self.expect_valid(&s, "before the usage is read").await?;
        let after = Utc::now() + Duration::seconds(1);
        let u = self
            .store
            .usage("0000-01-01") // every day kept
            .await
            .map_err(fail("usage"))?
            .ok_or("the store says it keeps usage but answered none")?;
        let last = super::usage::per_key(&u.rows)
            .remove(&k.id)
            .and_then(|x| x.last_used);
        match last {
            None => Ok(format!(
                "answers usage ({} rows); the kit's verify is not counted here (counted elsewhere, as keyward serve does)",
                u.rows.len()
            )),
            Some(t) if t >= before && t <= after => Ok(format!(
                "answers usage; the kit's verify is the key's last use{}",
                if u.last_use_only {
                    " (last uses only, no calls per day)"
                } else {
                    ""
                }
            )),
            Some(t) => Err(format!(
                "the kit's key shows a last use at {t}, not the verify just made ({before} to {after})"
            )),
        }
    }

    /// Every key change carries the apply lease: under the live one it goes ahead;
    /// without one while it is held it is `locked`; under a foreign one, or the lease once
    /// it expired, it is `lease_lost` and changes nothing (a create registers no key); a
    /// renewal extends the live lease and never revives an expired one. Takes the store's
    /// lease for about three seconds (a 2 s ttl, renewed once, then left to expire).
    async fn lease(&self) -> Outcome {
        let ttl = Duration::seconds(2);
        let lease = self
            .store
            .lock("keyward-store-check", ttl)
            .await
            .map_err(fail("lock"))?;
        let r = self.under_lease(&lease.id, ttl).await;
        let _ = self.store.unlock(&lease.id).await;
        r
    }

    async fn under_lease(&self, lease: &str, ttl: Duration) -> Outcome {
        let held = Writer::new(&self.actor).under(Some(lease));
        let (nk, _) = self.new_key("lease", true)?;
        let k = self
            .store
            .create(nk, held)
            .await
            .map_err(fail("create under the lease"))?;
        let patch = KeyPatch {
            purpose: Some(Some("keyward store check: lease".into())),
            ..Default::default()
        };
        let none = KeyWrite::new(&k.id, k.version, &self.actor);
        let foreign = none.under(Some("0123456789abcdef0123456789abcdef"));
        match self.store.update(none, patch.clone()).await {
            Err(StoreError::Locked { .. }) => {}
            other => return Err(format!("a change without the held lease: {}", said(other))),
        }
        match self.store.update(foreign, patch.clone()).await {
            Err(StoreError::LeaseLost { .. }) => {}
            other => return Err(format!("a change under another lease: {}", said(other))),
        }
        let k = self
            .store
            .update(held.key(&k.id, k.version), patch.clone())
            .await
            .map_err(fail("a change under the lease"))?;
        let renewed = self
            .store
            .renew(lease, ttl)
            .await
            .map_err(fail("renew the lease"))?;
        ensure(renewed.id == lease, "renewing gave another lease")?;
        tokio::time::sleep(
            (ttl + Duration::milliseconds(400))
                .to_std()
                .unwrap_or_default(),
        )
        .await;
        let late = KeyPatch {
            purpose: Some(Some("keyward store check: late".into())),
            ..Default::default()
        };
        match self.store.update(held.key(&k.id, k.version), late).await {
            Err(StoreError::LeaseLost { .. }) => {}
            other => return Err(format!("a change under the expired lease: {}", said(other))),
        }
        let (nk, _) = self.new_key("lease-late", true)?;
        let late_id = nk.id.clone();
        match self.store.create(nk, held).await {
            Err(StoreError::LeaseLost { .. }) => {}
            other => return Err(format!("a create under the expired lease: {}", said(other))),
        }
        let gone = self.store.get(&late_id).await.map_err(fail("get"))?;
        ensure(gone.is_none(), "a refused create registered its key")?;
        match self.store.renew(lease, ttl).await {
            Err(StoreError::LeaseLost { .. }) => {}
            other => return Err(format!("renewing the expired lease: {}", said(other))),
        }
        let now = self.store.get(&k.id).await.map_err(fail("get"))?;
        ensure(
            now.is_some_and(|n| n.version == k.version),
            "a refused change changed the key",
        )?;
        Ok("changes only under the live lease; renewed; expired and foreign leases refused".into())
    }

    /// Remove every key of this run (revoked ones too); returns the ids that stayed.
    async fn cleanup(&self) -> Vec<String> {
        let filter = ListFilter {
            label: Some(("kwcheck".into(), self.prefix.clone())),
            ..Default::default()
        };
        let mut left = Vec::new();
        let Ok(keys) = list_all(self.store, &filter).await else {
            return vec!["(the store could not be listed)".into()];
        };
        for k in keys {
            if !k.is_managed() {
                // Unmanaged keys cannot be deleted through keyward: adopt, then delete.
                let adopt = KeyPatch {
                    managed_by: Some(Some(MANAGED_BY.into())),
                    ..Default::default()
                };
                match self
                    .store
                    .update(KeyWrite::new(&k.id, k.version, &self.actor), adopt)
                    .await
                {
                    Ok(a)
                        if self
                            .store
                            .delete(KeyWrite::new(&a.id, a.version, &self.actor))
                            .await
                            .is_ok() =>
                    {
                        continue;
                    }
                    _ => {
                        left.push(k.id);
                        continue;
                    }
                }
            }
            if self
                .store
                .delete(KeyWrite::new(&k.id, k.version, &self.actor))
                .await
                .is_err()
            {
                left.push(k.id);
            }
        }
        left
    }
}
