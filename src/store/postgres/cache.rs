//! The key cache of a serving PostgreSQL store: verified key records kept in memory so a
//! verify of a known key needs no database round trip, kept current with LISTEN/NOTIFY.
//! Owns the cache and its listener task; must never serve a record after the listener has
//! lost its connection (nor before it listens again), and must never keep a record that a
//! change committed while it was being read (the epoch check in [`KeyCache::put`]).
//!
//! The schema's trigger (migration V4) notifies `schema::keys_channel` with the key id of
//! every inserted, updated or deleted row, at commit, whatever wrote it: another instance, or
//! SQL typed by hand. The listener is one dedicated connection (not from the pool) that
//! `LISTEN`s, forgets each notified id, and checks itself with a query every
//! [`HEARTBEAT`]; the cache is used only while the last answered check was *sent* less than
//! [`STALE_AFTER`] ago. A slow answer only pauses the cache (verifies read the database
//! until it comes); no answer within [`GIVE_UP`] ends the connection. On every (re)connect,
//! and whenever the listener stops, the whole cache is dropped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio_postgres::{AsyncMessage, NoTls};

use super::super::rules::StoredKey;

/// How often the listener checks its connection with a query.
pub const HEARTBEAT: Duration = Duration::from_millis(250);
/// The cache is not used when the last answered check was sent longer ago than this.
pub const STALE_AFTER: Duration = Duration::from_millis(750);
/// A check unanswered for this long ends the listener's connection (it reconnects, and the
/// cache starts empty). Shorter waits only pause the cache: an answer on the same
/// connection proves every notification committed before the check was sent has arrived.
pub const GIVE_UP: Duration = Duration::from_secs(5);
/// At most this many records; a full cache starts over (a verify then reads the database).
const MAX_ENTRIES: usize = 200_000;
/// The notification payload of "forget everything" (a TRUNCATE).
const ALL: &str = "*";

/// Key records by id, valid while the listener is up.
pub(crate) struct KeyCache {
    entries: RwLock<HashMap<String, Arc<StoredKey>>>,
    /// Bumped (under the write lock) by every forget and reset: a record read from the
    /// database is kept only if no change was notified since its read began.
    epoch: AtomicU64,
    listening: AtomicBool,
    /// Milliseconds since `born` at the listener's last successful check.
    checked_at: AtomicU64,
    born: Instant,
}

impl KeyCache {
    pub(crate) fn new() -> KeyCache {
        KeyCache {
            entries: RwLock::new(HashMap::new()),
            epoch: AtomicU64::new(0),
            listening: AtomicBool::new(false),
            checked_at: AtomicU64::new(0),
            born: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.born.elapsed().as_millis() as u64
    }

    /// Whether the listener is up and checked itself recently.
    fn usable(&self) -> bool {
        self.listening.load(Ordering::Acquire)
            && self
                .now_ms()
                .saturating_sub(self.checked_at.load(Ordering::Acquire))
                < STALE_AFTER.as_millis() as u64
    }

    /// The cached record of `id`, if the cache may be used.
    pub(crate) fn get(&self, id: &str) -> Option<Arc<StoredKey>> {
        if !self.usable() {
            return None;
        }
        self.read().get(id).cloned()
    }

    /// Taken before reading a record from the database, given back to [`KeyCache::put`].
    /// None: the cache is not in use, do not keep what is read.
    pub(crate) fn ticket(&self) -> Option<u64> {
        self.usable().then(|| self.epoch.load(Ordering::Acquire))
    }

    /// Keep a record read from the database since `ticket`, unless a change was notified
    /// (or the listener went down) meanwhile.
    pub(crate) fn put(&self, ticket: u64, s: Arc<StoredKey>) {
        let mut m = self.write();
        if self.epoch.load(Ordering::Acquire) != ticket || !self.usable() {
            return;
        }
        if m.len() >= MAX_ENTRIES {
            m.clear();
        }
        m.insert(s.key.id.clone(), s);
    }

    /// Forget one key (a notification, or this instance's own committed change).
    pub(crate) fn forget(&self, id: &str) {
        let mut m = self.write();
        self.epoch.fetch_add(1, Ordering::AcqRel);
        if id == ALL {
            m.clear();
        } else {
            m.remove(id);
        }
    }

    /// Drop everything and set whether the listener is up.
    fn reset(&self, listening: bool) {
        let mut m = self.write();
        self.epoch.fetch_add(1, Ordering::AcqRel);
        m.clear();
        self.checked_at.store(self.now_ms(), Ordering::Release);
        self.listening.store(listening, Ordering::Release);
    }

    /// A check sent at `sent_ms` (from [`KeyCache::now_ms`]) was answered: every change
    /// committed before then has been notified and forgotten.
    fn checked(&self, sent_ms: u64) {
        self.checked_at.fetch_max(sent_ms, Ordering::AcqRel);
    }

    /// How many records are held (for tests and logs).
    pub(crate) fn len(&self) -> usize {
        self.read().len()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<StoredKey>>> {
        self.entries.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<StoredKey>>> {
        self.entries.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// Stops the listener task when the store is dropped.
pub(crate) struct Listener(tokio::task::AbortHandle);

impl Drop for Listener {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Start the listener of `cache` on its own connection (`cfg`, search path set), listening
/// on `channel`; it reconnects (backing off up to 5 s) for as long as the store lives.
pub(crate) fn listen(
    cache: Arc<KeyCache>,
    mut cfg: tokio_postgres::Config,
    channel: String,
) -> Listener {
    // Named so an operator (or a test) can tell it in pg_stat_activity.
    let mut name = format!("keyward key cache {channel}");
    name.truncate(63);
    cfg.application_name(&name);
    let task = tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        loop {
            let started = Instant::now();
            let why = listen_once(&cache, &cfg, &channel).await;
            cache.reset(false);
            tracing::warn!(
                "key cache off until its PostgreSQL listener reconnects (verifies read the database meanwhile): {why}"
            );
            if started.elapsed() > Duration::from_secs(10) {
                backoff = Duration::from_millis(100);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    });
    Listener(task.abort_handle())
}

/// One connection's life: connect, LISTEN, start from an empty cache, forget what is
/// notified, check the connection every [`HEARTBEAT`]. Returns why it ended.
async fn listen_once(cache: &KeyCache, cfg: &tokio_postgres::Config, channel: &str) -> String {
    let (client, mut conn) = match cfg.connect(NoTls).await {
        Ok(c) => c,
        Err(e) => return format!("cannot connect: {e}"),
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let driver = tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(m) = messages.next().await {
            match m {
                Ok(AsyncMessage::Notification(n)) => {
                    if tx.send(n.payload().to_owned()).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => return format!("connection lost: {e}"),
            }
        }
        "connection closed".to_string()
    });
    let _stop = Listener(driver.abort_handle());
    let quoted = channel.replace('"', "\"\"");
    if let Err(e) = client.batch_execute(&format!("LISTEN \"{quoted}\"")).await {
        return format!("LISTEN failed: {e}");
    }
    cache.reset(true);
    tracing::debug!("key cache on: listening on {channel}");
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The check in flight, and when it was sent. Notifications keep being applied while it
    // is out (the old loop stopped reading them for as long as a check took).
    let mut check = None;
    let mut sent = (Instant::now(), 0u64);
    loop {
        tokio::select! {
            m = rx.recv() => match m {
                Some(id) => cache.forget(&id),
                None => break,
            },
            _ = tick.tick(), if check.is_none() => {
                sent = (Instant::now(), cache.now_ms());
                check = Some(Box::pin(client.simple_query("SELECT 1")));
            }
            r = async { check.as_mut().expect("guarded").await }, if check.is_some() => {
                check = None;
                if let Err(e) = r {
                    return format!("check failed: {e}");
                }
                // The driver forwarded every notification read before the answer: apply
                // them before the cache counts as checked.
                while let Ok(id) = rx.try_recv() {
                    cache.forget(&id);
                }
                cache.checked(sent.1);
                let late = sent.0.elapsed();
                if late >= STALE_AFTER - HEARTBEAT {
                    tracing::debug!(
                        "key cache paused: its check was answered after {} ms",
                        late.as_millis()
                    );
                }
            }
            _ = tokio::time::sleep_until((sent.0 + GIVE_UP).into()), if check.is_some() => {
                return format!("check unanswered for {} s", GIVE_UP.as_secs());
            }
        }
    }
    match driver.await {
        Ok(why) => why,
        Err(e) => format!("listener stopped: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::LiveKey;

    fn stored(id: &str) -> Arc<StoredKey> {
        let key: LiveKey = serde_json::from_value(serde_json::json!({
            "id": id, "name": "n", "environment": "production", "owner": "o",
            "scopes": [], "labels": {}, "status": "active",
            "issued_at": "2027-01-01T00:00:00Z", "created_at": "2027-01-01T00:00:00Z",
            "updated_at": "2027-01-01T00:00:00Z", "version": 1, "generation": 1,
            "spec_generation": 1, "recipients": {}, "protected": false
        }))
        .expect("a live key");
        Arc::new(StoredKey {
            key,
            mac: vec![1; 32],
            previous_mac: None,
        })
    }

    #[test]
    fn a_record_read_across_a_notified_change_is_not_kept() {
        let c = KeyCache::new();
        // Not listening: nothing is served or kept.
        assert!(c.ticket().is_none());
        c.reset(true);
        let t = c.ticket().expect("listening");
        c.put(t, stored("a"));
        assert!(c.get("a").is_some());
        // A read starts, a change of any key is notified, the read ends: not kept.
        let t = c.ticket().unwrap();
        c.forget("a");
        assert!(c.get("a").is_none());
        c.put(t, stored("a"));
        assert!(c.get("a").is_none(), "a stale record was kept");
        // A read with no change meanwhile is kept; `*` forgets everything.
        let t = c.ticket().unwrap();
        c.put(t, stored("b"));
        assert_eq!(c.len(), 1);
        c.forget(ALL);
        assert_eq!(c.len(), 0);
        // The listener goes down: nothing is served, even what was kept.
        let t = c.ticket().unwrap();
        c.put(t, stored("c"));
        c.reset(false);
        assert!(c.get("c").is_none() && c.ticket().is_none());
    }

    #[test]
    fn a_listener_that_stopped_checking_turns_the_cache_off() {
        let c = KeyCache::new();
        c.reset(true);
        let t = c.ticket().unwrap();
        c.put(t, stored("a"));
        assert!(c.get("a").is_some());
        let before = c.now_ms();
        std::thread::sleep(STALE_AFTER + Duration::from_millis(50));
        assert!(c.get("a").is_none(), "served past the last check");
        // A late answer to a check sent before the pause does not make it fresh again ...
        c.checked(before);
        assert!(
            c.get("a").is_none(),
            "a late answer counted from its arrival"
        );
        // ... an answer to a check sent now does, and the records were kept meanwhile.
        c.checked(c.now_ms());
        assert!(c.get("a").is_some());
    }
}
