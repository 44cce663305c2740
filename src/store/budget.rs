//! A shared daily budget of valid verify calls: for a whole store (`daily`) and for groups of
//! its keys chosen by a label (`groups`), written into the store by apply (keyward.yaml
//! `budget:`) and enforced by the store's verify with the reason `budget_exceeded`; each
//! key's own quota still applies inside it. Owns the budget's shape, which counters (scopes)
//! a key spends from, how many calls a process reserves at once, and the cache of the budget
//! in force. Knows no SQL (each backend counts in its own tables) and must not notify (the
//! server sends the alerts).
//!
//! Exactness (docs/usage.md): every process reserves calls from the database counter in
//! blocks (`super::quota::Reservations`), so the budget is never exceeded by any number of
//! processes, one process refuses exactly after N valid calls, and with several processes
//! one may refuse while another still holds reserved calls (at most one block each: 1% of
//! the budget, at most 1,000, and never more than half of what was left when reserved).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::StoreResult;
use super::quota::Reservations;

/// The meta entry holding the budget (JSON).
pub const META_KEY: &str = "budget";
/// The scope of the store-wide budget.
pub const STORE_SCOPE: &str = "store";
/// How long a process uses the budget it read before reading it again (a budget changed by
/// apply is in force on every instance within this time and one database read).
pub const REFRESH: Duration = Duration::from_secs(2);
/// A budget read longer ago than [`REFRESH`] but less than this is still used by every
/// verify but one while that one reads it again; older (or never read), all wait for it.
pub const STALE_LIMIT: Duration = Duration::from_secs(20);
/// The event a store records when its budget is set or removed.
pub const EVENT_SET: &str = "budget.set";
/// The event the server records when a threshold is crossed.
pub const EVENT_ALERT: &str = "budget.alert";

/// A shared daily budget (UTC days).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    /// The store's name in keyward.yaml (apply writes it; alerts name the store by it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    /// Valid calls per UTC day for every key of the store together (absent: only groups).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily: Option<u64>,
    /// Percentages of `daily` at which an alert goes out; 100 (spent) always does.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alert_at: Vec<u8>,
    /// Budgets of the keys carrying a label, each inside the store's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<GroupBudget>,
}

/// The budget of the keys carrying one label.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupBudget {
    /// `name=value`: the keys whose labels hold it.
    pub label: String,
    pub daily: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alert_at: Vec<u8>,
}

/// One counter of a budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope<'a> {
    /// `store`, or `label:name=value`.
    pub id: Cow<'a, str>,
    pub daily: u64,
    /// The alert thresholds in percent, ascending, 100 last.
    pub alert_at: Vec<u8>,
}

fn thresholds(at: &[u8]) -> Vec<u8> {
    let mut t: Vec<u8> = at
        .iter()
        .copied()
        .filter(|p| (1..100).contains(p))
        .collect();
    t.push(100);
    t.sort_unstable();
    t.dedup();
    t
}

fn percents(at: &[u8]) -> String {
    let t: Vec<String> = at.iter().map(|p| format!("{p}%")).collect();
    t.join(", ")
}

impl Budget {
    /// Every counter of the budget.
    pub fn scopes(&self) -> Vec<Scope<'_>> {
        let mut out = Vec::new();
        if let Some(daily) = self.daily {
            out.push(Scope {
                id: Cow::Borrowed(STORE_SCOPE),
                daily,
                alert_at: thresholds(&self.alert_at),
            });
        }
        for g in &self.groups {
            out.push(Scope {
                id: Cow::Owned(format!("label:{}", g.label)),
                daily: g.daily,
                alert_at: thresholds(&g.alert_at),
            });
        }
        out
    }

    /// The counters a key with `labels` spends from.
    pub fn scopes_for(&self, labels: &BTreeMap<String, String>) -> Vec<Scope<'_>> {
        let holds = |label: &str| {
            label
                .split_once('=')
                .is_some_and(|(k, v)| labels.get(k).is_some_and(|have| have == v))
        };
        let mut out = self.scopes();
        out.retain(|s| match s.id.strip_prefix("label:") {
            Some(label) => holds(label),
            None => true,
        });
        out
    }

    /// One line for the plan and reports: `daily 50000, alerts at 80%, 95%; label team=ill:
    /// daily 1000`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(d) = self.daily {
            let mut s = format!("daily {d}");
            if !self.alert_at.is_empty() {
                s.push_str(&format!(", alerts at {}", percents(&self.alert_at)));
            }
            parts.push(s);
        }
        for g in &self.groups {
            let mut s = format!("label {}: daily {}", g.label, g.daily);
            if !g.alert_at.is_empty() {
                s.push_str(&format!(", alerts at {}", percents(&g.alert_at)));
            }
            parts.push(s);
        }
        if parts.is_empty() {
            return "none".into();
        }
        parts.join("; ")
    }
}

/// What changes when `live` (what the store holds) becomes `desired` (keyward.yaml): `None`
/// when they are the same, else the new and the old description (`none` when absent).
pub fn change(desired: Option<&Budget>, live: Option<&Budget>) -> Option<(String, String)> {
    fn set(b: Option<&Budget>) -> Option<&Budget> {
        b.filter(|b| b.daily.is_some() || !b.groups.is_empty())
    }
    let say = |b: Option<&Budget>| set(b).map_or_else(|| "none".to_owned(), Budget::describe);
    let (desired, live) = (say(desired), say(live));
    (desired != live).then_some((desired, live))
}

/// The calls reserved of one scope on one day (what every process together took from it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spent {
    pub scope: String,
    pub calls: u64,
}

/// `GET /v1/budget`: the budget in force and what each scope spent on `day` (today, UTC).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BudgetPage {
    pub budget: Option<Budget>,
    pub day: String,
    pub spent: Vec<Spent>,
}

/// `PUT /v1/budget`: the budget to enforce (`null` removes it).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetBudget {
    pub budget: Option<Budget>,
}

/// A threshold of a scope crossed on a day: what one alert is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    pub scope: String,
    pub day: String,
    pub percent: u8,
}

/// The thresholds of `scope` that `calls` has reached.
pub fn crossed(scope: &Scope<'_>, calls: u64) -> Vec<u8> {
    scope
        .alert_at
        .iter()
        .copied()
        .filter(|p| calls.saturating_mul(100) >= scope.daily.saturating_mul(u64::from(*p)))
        .collect()
}

/// How many calls a reservation of up to `block` gets when `used` of `daily` are reserved:
/// never past `daily`, and at most half of what is left (at least one), so near the end
/// the processes sharing a budget hold few calls each.
pub fn grant(daily: u64, used: u64, block: u64) -> u64 {
    let left = daily.saturating_sub(used);
    block.min(left.div_ceil(2)).min(left)
}

#[derive(Debug, Default)]
struct Cached {
    at: Option<Instant>,
    budget: Option<Arc<Budget>>,
}

/// The budget a store enforces, as one process sees it: the budget in force (read from the
/// store at most every `REFRESH`) and the calls reserved from each scope's counter.
#[derive(Debug)]
pub struct Gate {
    cached: Mutex<Cached>,
    reloading: tokio::sync::Mutex<()>,
    reservations: Reservations,
    /// Serving processes reserve blocks; others reserve one call at a time.
    serving: bool,
}

impl Gate {
    pub fn new(serving: bool) -> Gate {
        Gate {
            cached: Mutex::default(),
            reloading: tokio::sync::Mutex::new(()),
            reservations: Reservations::default(),
            serving,
        }
    }

    fn fresh(&self) -> Option<Option<Arc<Budget>>> {
        self.read_within(REFRESH)
    }

    /// The budget read less than `within` ago, if any.
    fn read_within(&self, within: Duration) -> Option<Option<Arc<Budget>>> {
        let c = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        c.at.filter(|at| at.elapsed() < within)
            .map(|_| c.budget.clone())
    }

    /// The budget in force: the one read less than `REFRESH` ago, or read again with `load`.
    /// Once it is older, one verify reads it again while the others go on with the one read
    /// before (up to [`STALE_LIMIT`]): every verify of the process waiting on that read, every
    /// 2 s, stalled them all whenever the database was slow to answer.
    pub async fn current<F, Fut>(&self, load: F) -> StoreResult<Option<Arc<Budget>>>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = StoreResult<Option<Budget>>>,
    {
        if let Some(b) = self.fresh() {
            return Ok(b);
        }
        let _one = match (self.read_within(STALE_LIMIT), self.reloading.try_lock()) {
            (Some(b), Err(_)) => return Ok(b),
            (_, Ok(one)) => one,
            (None, Err(_)) => self.reloading.lock().await,
        };
        if let Some(b) = self.fresh() {
            return Ok(b);
        }
        let budget = load()
            .await?
            .filter(|b| b.daily.is_some() || !b.groups.is_empty())
            .map(Arc::new);
        let mut c = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        *c = Cached {
            at: Some(Instant::now()),
            budget: budget.clone(),
        };
        Ok(budget)
    }

    /// Read the budget again at the next verify (this process just wrote it).
    pub fn forget(&self) {
        self.cached.lock().unwrap_or_else(|p| p.into_inner()).at = None;
    }

    /// Spend one call of every scope in `scopes` on `day`, reserving more with `reserve(scope,
    /// daily, block)` (returns the calls the database granted). False when one of them is
    /// spent; the calls taken from the others are put back.
    pub async fn spend<F, Fut>(
        &self,
        scopes: &[Scope<'_>],
        day: &str,
        reserve: F,
    ) -> StoreResult<bool>
    where
        F: Fn(String, u64, u64) -> Fut,
        Fut: std::future::Future<Output = StoreResult<u64>>,
    {
        for (i, s) in scopes.iter().enumerate() {
            let block = if self.serving {
                Reservations::block(s.daily)
            } else {
                1
            };
            let got = self
                .reservations
                .take_or_reserve_block(&s.id, day, block, |block| {
                    reserve(s.id.to_string(), s.daily, block)
                })
                .await?;
            if !got {
                self.put_back(&scopes[..i], day);
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Give one call back to each of `scopes` (the verify was refused after all).
    pub fn put_back(&self, scopes: &[Scope<'_>], day: &str) {
        for s in scopes {
            self.reservations.add(&s.id, day, 1);
        }
    }

    /// The calls reserved but not used, as `(scope, day, calls)`, for returning to the
    /// database when the process stops.
    pub fn drain(&self) -> Vec<(String, String, u64)> {
        self.reservations.drain()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// While one verify reads a stale budget again, the others go on with the last one read
    /// instead of waiting; with none read yet, they wait.
    #[test]
    fn a_stale_budget_is_read_again_by_one_verify_while_the_others_go_on() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let gate = Gate::new(true);
            let first = gate.current(|| async { Ok(Some(budget())) }).await.unwrap();
            assert_eq!(first.unwrap().daily, Some(1000));
            // Make it stale, then start a reload that does not finish until told.
            gate.cached.lock().unwrap().at = Some(Instant::now() - REFRESH);
            let (tell, told) = tokio::sync::oneshot::channel::<()>();
            let slow = async {
                gate.current(|| async {
                    told.await.ok();
                    let mut b = budget();
                    b.daily = Some(2000);
                    Ok(Some(b))
                })
                .await
            };
            let others = async {
                tokio::task::yield_now().await;
                // The reload is in flight: the others get the last budget at once.
                let b = gate
                    .current(|| async { panic!("a second reload while one is in flight") })
                    .await
                    .unwrap();
                assert_eq!(b.unwrap().daily, Some(1000));
                tell.send(()).unwrap();
            };
            let (slow, ()) = tokio::join!(slow, others);
            assert_eq!(slow.unwrap().unwrap().daily, Some(2000));
            // Read again just now: fresh for everyone.
            let b = gate
                .current(|| async { panic!("read while fresh") })
                .await
                .unwrap();
            assert_eq!(b.unwrap().daily, Some(2000));
        });
    }

    fn budget() -> Budget {
        Budget {
            store: None,
            daily: Some(1000),
            alert_at: vec![95, 80],
            groups: vec![GroupBudget {
                label: "team=ill".into(),
                daily: 100,
                alert_at: vec![],
            }],
        }
    }

    #[test]
    fn a_key_spends_from_the_store_and_from_the_groups_its_labels_hold() {
        let b = budget();
        let ill = BTreeMap::from([("team".to_owned(), "ill".to_owned())]);
        let other = BTreeMap::from([("team".to_owned(), "acq".to_owned())]);
        let ids = |l| {
            b.scopes_for(l)
                .iter()
                .map(|s| s.id.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(&ill), vec!["store", "label:team=ill"]);
        assert_eq!(ids(&other), vec!["store"]);
        assert_eq!(b.scopes()[0].alert_at, vec![80, 95, 100]);
        assert_eq!(b.scopes()[1].alert_at, vec![100]);
    }

    #[test]
    fn thresholds_are_crossed_at_their_percent_of_the_daily_calls() {
        let b = budget();
        let s = &b.scopes()[0];
        assert!(crossed(s, 799).is_empty());
        assert_eq!(crossed(s, 800), vec![80]);
        assert_eq!(crossed(s, 1000), vec![80, 95, 100]);
    }

    #[test]
    fn grants_never_pass_the_budget_and_shrink_near_its_end() {
        assert_eq!(grant(50_000, 0, 500), 500);
        assert_eq!(grant(50_000, 49_900, 500), 50);
        assert_eq!(grant(50_000, 49_999, 500), 1);
        assert_eq!(grant(50_000, 50_000, 500), 0);
        assert_eq!(grant(10, 20, 1), 0);
    }

    #[test]
    fn the_plan_says_what_changes() {
        let b = budget();
        assert_eq!(
            change(Some(&b), None),
            Some((
                "daily 1000, alerts at 95%, 80%; label team=ill: daily 100".into(),
                "none".into()
            ))
        );
        assert_eq!(change(Some(&b), Some(&b)), None);
        assert_eq!(change(Some(&Budget::default()), None), None);
        assert_eq!(change(None, Some(&b)).map(|c| c.0), Some("none".to_owned()));
    }

    #[tokio::test]
    async fn a_refusal_puts_back_the_calls_taken_from_other_scopes() {
        let g = Gate::new(true);
        let b = Budget {
            store: None,
            daily: Some(10),
            alert_at: vec![],
            groups: vec![GroupBudget {
                label: "t=a".into(),
                daily: 1,
                alert_at: vec![],
            }],
        };
        let scopes = b.scopes();
        let db = Mutex::new(BTreeMap::<String, u64>::new());
        let reserve = |scope: String, daily: u64, block: u64| {
            let mut m = db.lock().unwrap();
            let used = m.entry(scope).or_default();
            let n = grant(daily, *used, block);
            *used += n;
            async move { Ok(n) }
        };
        assert!(g.spend(&scopes, "d", reserve).await.unwrap());
        assert!(!g.spend(&scopes, "d", reserve).await.unwrap());
        // Only the store scope is left: its calls were put back, none were lost.
        let store_only = &scopes[..1];
        for _ in 0..9 {
            assert!(g.spend(store_only, "d", reserve).await.unwrap());
        }
        assert!(!g.spend(store_only, "d", reserve).await.unwrap());
    }
}
