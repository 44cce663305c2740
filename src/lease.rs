//! The apply leases while an apply runs: their ttl (15 minutes, `KEYWARD_LEASE_TTL` for
//! tests), the lease id of each store that every change names, a background task that
//! renews every lease each third of its ttl (so a slow apply keeps its stores), and the
//! stores whose lease was lost (expired while the process was stopped, or taken over), so
//! apply stops changing them. Must not decide what changes nor print anything.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

use crate::store::{Lease, Store, StoreError};

/// How long an apply lease lasts when it is not renewed.
pub const DEFAULT_TTL: chrono::Duration = chrono::Duration::minutes(15);

/// The lease ttl: `KEYWARD_LEASE_TTL` (seconds, or a number with `s`/`m`/`h`, 1s to 24h;
/// for tests that need a lease to expire quickly), else [`DEFAULT_TTL`]. A value that is
/// not one of those is an error naming the valid forms (never silently ignored).
pub fn ttl() -> Result<chrono::Duration, String> {
    match std::env::var("KEYWARD_LEASE_TTL") {
        Err(_) => Ok(DEFAULT_TTL),
        Ok(v) => parse_ttl(&v).ok_or_else(|| {
            let shown: String = v.chars().take(20).collect();
            format!(
                "KEYWARD_LEASE_TTL=`{shown}` is not a lease ttl: give seconds (90) or 30s, 15m, 1h (1s to 24h), or unset it"
            )
        }),
    }
}

fn parse_ttl(v: &str) -> Option<chrono::Duration> {
    let v = v.trim();
    let (n, unit) = match v.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => v.split_at(i),
        None => (v, "s"),
    };
    let n: i64 = n.parse().ok()?;
    let secs = match unit {
        "s" => n,
        "m" => n.checked_mul(60)?,
        "h" => n.checked_mul(3600)?,
        _ => return None,
    };
    (1..=86_400)
        .contains(&secs)
        .then(|| chrono::Duration::seconds(secs))
}

/// Stores whose lease is gone, with why (shared with the renewing task).
type Lost = Arc<Mutex<BTreeMap<String, String>>>;
/// Until when each store's lease is known to be held: the expiry its last successful
/// renewal answered (shared with the renewing task).
type Valid = Arc<Mutex<BTreeMap<String, DateTime<Utc>>>>;

/// The leases an apply holds, by store name.
pub struct Leases {
    held: BTreeMap<String, Lease>,
    lost: Lost,
    valid: Valid,
    stores: BTreeMap<String, Arc<dyn Store>>,
    ttl: chrono::Duration,
    renewer: Option<tokio::task::JoinHandle<()>>,
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Leases {
    /// No lease held (a context that takes none, e.g. a console import's deliveries).
    pub fn none() -> Leases {
        Leases {
            held: BTreeMap::new(),
            lost: Lost::default(),
            valid: Valid::default(),
            stores: BTreeMap::new(),
            ttl: DEFAULT_TTL,
            renewer: None,
        }
    }

    /// Hold `taken` and renew each one every third of `ttl` from a background task until
    /// [`Leases::release`].
    pub fn hold(
        stores: &BTreeMap<String, Arc<dyn Store>>,
        taken: Vec<(String, Lease)>,
        ttl: chrono::Duration,
    ) -> Leases {
        let (lost, valid) = (Lost::default(), Valid::default());
        let renewing: Vec<(Arc<dyn Store>, String, String)> = taken
            .iter()
            .filter_map(|(n, l)| stores.get(n).map(|s| (s.clone(), n.clone(), l.id.clone())))
            .collect();
        locked(&valid).extend(taken.iter().map(|(n, l)| (n.clone(), l.expires_at)));
        let every = (ttl / 3)
            .to_std()
            .unwrap_or(std::time::Duration::from_secs(1))
            .max(std::time::Duration::from_millis(100));
        let task = Renewing {
            ttl,
            lost: lost.clone(),
            valid: valid.clone(),
        };
        let renewer = tokio::spawn(task.every(renewing, every));
        Leases {
            stores: taken
                .iter()
                .filter_map(|(n, _)| stores.get(n).map(|s| (n.clone(), s.clone())))
                .collect(),
            held: taken.into_iter().collect(),
            lost,
            valid,
            ttl,
            renewer: Some(renewer),
        }
    }

    /// The lease id a change to `store` names (None: no lease held there).
    pub fn id(&self, store: &str) -> Option<&str> {
        self.held.get(store).map(|l| l.id.as_str())
    }

    /// Why `store`'s lease is gone, once the renewing task (or a refused change) found it so.
    pub fn lost(&self, store: &str) -> Option<String> {
        locked(&self.lost).get(store).cloned()
    }

    /// Record that a change to `store` was refused because its lease is gone.
    pub fn mark_lost(&self, store: &str, why: &str) {
        locked(&self.lost)
            .entry(store.to_owned())
            .or_insert_with(|| why.to_owned());
    }

    /// Every store whose lease was lost, with why.
    pub fn all_lost(&self) -> Vec<(String, String)> {
        locked(&self.lost)
            .iter()
            .map(|(s, w)| (s.clone(), w.clone()))
            .collect()
    }

    /// Is `store`'s lease still ours right now? Asked before apply writes a delivery (the
    /// outbox is shared with any apply that took the store over, and the store only judges
    /// the registration after it). Answered from the last renewal while that left more
    /// than a sixth of the ttl; else (the process was stopped, or renewals failed) the
    /// store is asked with a renewal. `Err(why)` when the lease is lost (recorded).
    pub async fn confirm(&self, store: &str) -> Result<(), String> {
        if let Some(why) = self.lost(store) {
            return Err(why);
        }
        let (Some(lease), Some(handle)) = (self.held.get(store), self.stores.get(store)) else {
            return Ok(());
        };
        let until = locked(&self.valid).get(store).copied();
        if until.is_some_and(|u| u - Utc::now() > self.ttl / 6) {
            return Ok(());
        }
        match handle.renew(&lease.id, self.ttl).await {
            Ok(l) => {
                locked(&self.valid).insert(store.to_owned(), l.expires_at);
                Ok(())
            }
            Err(StoreError::LeaseLost { why, .. }) => {
                self.mark_lost(store, &why);
                Err(why)
            }
            // Unreachable for a moment: the store still judges the registration.
            Err(e) => {
                tracing::warn!(store = %store, error = %e, "could not confirm the apply lease");
                Ok(())
            }
        }
    }

    /// The held leases, by store.
    pub fn held(&self) -> impl Iterator<Item = (&String, &Lease)> {
        self.held.iter()
    }

    /// Stop renewing and give every lease back (a lost one is no longer ours: unlocking
    /// by id removes nothing then).
    pub async fn release(mut self, stores: &BTreeMap<String, Arc<dyn Store>>) {
        if let Some(r) = self.renewer.take() {
            r.abort();
        }
        for (n, lease) in &self.held {
            if let Some(s) = stores.get(n)
                && let Err(e) = s.unlock(&lease.id).await
            {
                tracing::warn!(store = %n, error = %e, "could not release the apply lock");
            }
        }
    }
}

impl Drop for Leases {
    fn drop(&mut self) {
        if let Some(r) = self.renewer.take() {
            r.abort();
        }
    }
}

/// The renewing task's view of the leases.
struct Renewing {
    ttl: chrono::Duration,
    lost: Lost,
    valid: Valid,
}

impl Renewing {
    /// Renew each lease every `every`; a lease found lost is recorded and renewed no more.
    /// A failed renewal that is not a loss (the store unreachable for a moment, an adapter
    /// that cannot renew) is logged and tried again next time: the store still judges
    /// each change.
    async fn every(
        self,
        mut leases: Vec<(Arc<dyn Store>, String, String)>,
        every: std::time::Duration,
    ) {
        while !leases.is_empty() {
            tokio::time::sleep(every).await;
            let mut keep = Vec::with_capacity(leases.len());
            for (store, name, id) in leases {
                match store.renew(&id, self.ttl).await {
                    Ok(l) => {
                        tracing::debug!(store = %name, until = %l.expires_at, "renewed the apply lease");
                        locked(&self.valid).insert(name.clone(), l.expires_at);
                        keep.push((store, name, id));
                    }
                    Err(StoreError::LeaseLost { why, .. }) => {
                        tracing::warn!(store = %name, "the apply lease was lost: {why}");
                        locked(&self.lost).entry(name).or_insert(why);
                    }
                    Err(e) => {
                        tracing::warn!(store = %name, error = %e, "could not renew the apply lease");
                        keep.push((store, name, id));
                    }
                }
            }
            leases = keep;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_ttl;

    #[test]
    fn ttl_forms() {
        assert_eq!(parse_ttl("2"), Some(chrono::Duration::seconds(2)));
        assert_eq!(parse_ttl("2s"), Some(chrono::Duration::seconds(2)));
        assert_eq!(parse_ttl(" 15m "), Some(chrono::Duration::minutes(15)));
        assert_eq!(parse_ttl("24h"), Some(chrono::Duration::hours(24)));
        for bad in ["", "0", "0s", "25h", "2d", "-3", "1.5s", "s", "banana"] {
            assert_eq!(parse_ttl(bad), None, "{bad}");
        }
    }
}
