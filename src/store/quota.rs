//! Quota reservations for a store that serves verifies (`keyward serve`): a process takes a
//! block of a key's daily calls from the database in one write and hands them out from
//! memory, so a valid verify is a read, not a write. It must never let a key exceed its
//! quota (the database stays the one counter every process reserves from) and knows nothing
//! about SQL; each backend does the reserving and the returning.
//!
//! Trade-offs, documented in `docs/store.md`:
//! * calls reserved by a process that is killed are counted as used (conservative: a key
//!   can be refused early by at most one block per killed process, never allowed more);
//! * with several processes serving one database, one may answer `quota_exceeded` while
//!   another still holds unused calls of the same key (fewer than one block each: only
//!   one reservation per process is in flight at a time);
//! * a graceful stop returns the unused calls (`Reservations::drain`).

use std::collections::HashMap;
use std::sync::Mutex;

/// Unused reserved calls, per key, for the UTC day they were reserved on.
#[derive(Debug)]
pub struct Reservations {
    slots: Mutex<HashMap<String, Slot>>,
    /// Held while reserving, so concurrent misses of one key wait for one reservation
    /// instead of each reserving a block (which would leave many blocks unused in one
    /// process). Sharded by key id: a cold start with many keys reserves for different keys
    /// at once (one global lock made their first verifies queue behind each other).
    refill: [tokio::sync::Mutex<()>; REFILL_SHARDS],
}

const REFILL_SHARDS: usize = 64;

impl Default for Reservations {
    fn default() -> Self {
        Reservations {
            slots: Mutex::default(),
            refill: std::array::from_fn(|_| tokio::sync::Mutex::new(())),
        }
    }
}

fn shard(id: &str) -> usize {
    // FNV-1a: cheap and stable; only spreads key ids over the shards.
    let h = id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    (h % REFILL_SHARDS as u64) as usize
}

#[derive(Debug)]
struct Slot {
    day: String,
    left: u64,
}

impl Reservations {
    /// How many calls to reserve at once for a key with `quota` calls per day: about 1% of
    /// the quota, at least 1 (small quotas stay exact), at most 1,000.
    pub fn block(quota: u64) -> u64 {
        (quota / 100).clamp(1, 1000)
    }

    /// Use one reserved call of `id` on `day`; false when none is left (reserve more).
    pub fn take(&self, id: &str, day: &str) -> bool {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        match slots.get_mut(id) {
            Some(slot) if slot.day == day && slot.left > 0 => {
                slot.left -= 1;
                true
            }
            _ => false,
        }
    }

    /// Use one reserved call, or reserve a block with `reserve` (called with the block size;
    /// returns how many calls the database granted) and use one of those. False when the
    /// quota is used up. Only one reservation per key (per shard of keys) and process is in
    /// flight at a time.
    pub async fn take_or_reserve<F, Fut, E>(
        &self,
        id: &str,
        day: &str,
        quota: u64,
        reserve: F,
    ) -> Result<bool, E>
    where
        F: FnOnce(u64) -> Fut,
        Fut: std::future::Future<Output = Result<u64, E>>,
    {
        self.take_or_reserve_block(id, day, Self::block(quota), reserve)
            .await
    }

    /// [`Self::take_or_reserve`] reserving `block` calls at once.
    pub async fn take_or_reserve_block<F, Fut, E>(
        &self,
        id: &str,
        day: &str,
        block: u64,
        reserve: F,
    ) -> Result<bool, E>
    where
        F: FnOnce(u64) -> Fut,
        Fut: std::future::Future<Output = Result<u64, E>>,
    {
        if self.take(id, day) {
            return Ok(true);
        }
        let _refilling = self.refill[shard(id)].lock().await;
        if self.take(id, day) {
            return Ok(true);
        }
        let granted = reserve(block).await?;
        if granted == 0 {
            return Ok(false);
        }
        self.add(id, day, granted - 1);
        Ok(true)
    }

    /// Keep `n` freshly reserved calls of `id` on `day` for later verifies. Calls left over
    /// from an earlier day are dropped (that day's counter is closed anyway); calls left
    /// over on the same day (two requests reserved at once) add up.
    pub fn add(&self, id: &str, day: &str, n: u64) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let slot = slots.entry(id.to_owned()).or_insert_with(|| Slot {
            day: day.to_owned(),
            left: 0,
        });
        if slot.day != day {
            slot.day = day.to_owned();
            slot.left = 0;
        }
        slot.left += n;
    }

    /// Take every unused reservation out, as `(key id, day, calls)`, for returning to the
    /// database when the process stops.
    pub fn drain(&self) -> Vec<(String, String, u64)> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots
            .drain()
            .filter(|(_, s)| s.left > 0)
            .map(|(id, s)| (id, s.day, s.left))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_is_a_percent_clamped() {
        assert_eq!(Reservations::block(3), 1);
        assert_eq!(Reservations::block(1000), 10);
        assert_eq!(Reservations::block(1_000_000_000), 1000);
    }

    #[test]
    fn take_uses_reserved_calls_of_the_same_day_only() {
        let r = Reservations::default();
        assert!(!r.take("k", "2026-11-22"));
        r.add("k", "2026-11-22", 2);
        assert!(r.take("k", "2026-11-22"));
        assert!(
            !r.take("k", "2026-11-23"),
            "a new day needs a new reservation"
        );
        assert!(r.take("k", "2026-11-22"));
        assert!(!r.take("k", "2026-11-22"));
        r.add("k", "2026-11-22", 1);
        r.add("k", "2026-11-23", 3);
        assert!(
            !r.take("k", "2026-11-22"),
            "the old day's calls were dropped"
        );
        assert_eq!(
            r.drain(),
            vec![("k".to_owned(), "2026-11-23".to_owned(), 3)]
        );
        assert!(r.drain().is_empty());
    }
}
