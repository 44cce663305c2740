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
//! * a graceful stop returns the unused calls (`Reservations::drain`);
//! * a process may reserve a key's next block *ahead*, in the background, once a quarter of
//!   a block is left (`start_refill_ahead` / `refill_ahead`, blocks of at least
//!   [`AHEAD_MIN_BLOCK`]), so a busy key's verifies do not wait for the database when its
//!   block runs out; it then holds at most a block and a quarter unused.

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

/// Blocks smaller than this are never reserved ahead: small quotas stay exact, reserved
/// only when a call needs one.
pub const AHEAD_MIN_BLOCK: u64 = 8;

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
    /// A reservation ahead of need is in flight for this key.
    ahead: bool,
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
        add_to(&mut slots, id, day, n);
    }

    /// Whether a block of `id`'s calls on `day` should be reserved ahead now: a quarter of
    /// `block` or less is left and no reservation ahead is in flight. True marks one in
    /// flight; the caller then runs [`Self::refill_ahead`] (in the background).
    pub fn start_refill_ahead(&self, id: &str, day: &str, block: u64) -> bool {
        if block < AHEAD_MIN_BLOCK {
            return false;
        }
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        match slots.get_mut(id) {
            Some(slot) if slot.day == day && !slot.ahead && slot.left <= block / 4 => {
                slot.ahead = true;
                true
            }
            _ => false,
        }
    }

    /// Reserve `block` calls of `id` on `day` ahead of need (after
    /// [`Self::start_refill_ahead`] said so), under the key's refill lock: a verify that
    /// runs out meanwhile waits for this reservation instead of making its own.
    pub async fn refill_ahead<F, Fut, E>(
        &self,
        id: &str,
        day: &str,
        block: u64,
        reserve: F,
    ) -> Result<(), E>
    where
        F: FnOnce(u64) -> Fut,
        Fut: std::future::Future<Output = Result<u64, E>>,
    {
        let _refilling = self.refill[shard(id)].lock().await;
        let granted = reserve(block).await;
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        // The slot moved on to the next day meanwhile: the old day's calls are of no use
        // (and that day's counter is closed), and the new day's must not be replaced.
        if slots.get(id).is_some_and(|slot| slot.day != day) {
            return granted.map(|_| ());
        }
        if let Ok(n) = granted {
            add_to(&mut slots, id, day, n);
        }
        // Nothing granted: the day's quota is reserved to the end, so no more reservations
        // ahead that day (the flag stays up until the slot moves to another day); the last
        // calls are reserved as needed, as for a small quota.
        if let (Some(slot), false) = (slots.get_mut(id), matches!(granted, Ok(0))) {
            slot.ahead = false;
        }
        granted.map(|_| ())
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

fn add_to(slots: &mut HashMap<String, Slot>, id: &str, day: &str, n: u64) {
    let slot = slots.entry(id.to_owned()).or_insert_with(|| Slot {
        day: day.to_owned(),
        left: 0,
        ahead: false,
    });
    if slot.day != day {
        slot.day = day.to_owned();
        slot.left = 0;
        slot.ahead = false;
    }
    slot.left += n;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_is_reserved_ahead_once_a_quarter_is_left_and_only_once() {
        let r = Reservations::default();
        let block = 100;
        r.add("k", "2027-01-01", 30);
        // 30 left of 100: not yet.
        assert!(!r.start_refill_ahead("k", "2027-01-01", block));
        for _ in 0..5 {
            assert!(r.take("k", "2027-01-01"));
        }
        // 25 left: one reservation ahead, and no second while it is in flight.
        assert!(r.start_refill_ahead("k", "2027-01-01", block));
        assert!(!r.start_refill_ahead("k", "2027-01-01", block));
        // Another day's slot, a small block, an unknown key: never.
        assert!(!r.start_refill_ahead("k", "2027-01-02", block));
        assert!(!r.start_refill_ahead("k", "2027-01-01", AHEAD_MIN_BLOCK - 1));
        assert!(!r.start_refill_ahead("other", "2027-01-01", block));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        // The database grants 60: they add up with what was left, the flag is cleared.
        rt.block_on(r.refill_ahead("k", "2027-01-01", block, |b| async move {
            assert_eq!(b, block);
            Ok::<u64, ()>(60)
        }))
        .unwrap();
        let mut n = 0;
        while r.take("k", "2027-01-01") {
            n += 1;
        }
        assert_eq!(n, 25 + 60);
        assert!(r.start_refill_ahead("k", "2027-01-01", block));
        // A failed reservation grants nothing and clears the flag for the next try.
        let e = rt.block_on(r.refill_ahead("k", "2027-01-01", block, |_| async {
            Err::<u64, &str>("database down")
        }));
        assert_eq!(e, Err("database down"));
        assert!(!r.take("k", "2027-01-01"));
        assert!(r.start_refill_ahead("k", "2027-01-01", block));
        // The quota is reserved to the end (0 granted): no more reservations ahead that
        // day, however many verifies follow; the next day starts afresh.
        rt.block_on(r.refill_ahead("k", "2027-01-01", block, |_| async { Ok::<u64, ()>(0) }))
            .unwrap();
        assert!(!r.start_refill_ahead("k", "2027-01-01", block));
        r.add("k", "2027-01-02", 10);
        assert!(r.start_refill_ahead("k", "2027-01-02", block));
        // A reservation ahead for a day that ended meanwhile leaves the new day's calls be.
        r.add("k", "2027-01-03", 5);
        rt.block_on(r.refill_ahead("k", "2027-01-02", block, |_| async { Ok::<u64, ()>(90) }))
            .unwrap();
        let mut n = 0;
        while r.take("k", "2027-01-03") {
            n += 1;
        }
        assert_eq!(n, 5);
    }

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
