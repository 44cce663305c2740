//! Budget alerts of `keyward serve`: every interval the thresholds of the served store's
//! budget that today's spending has reached are claimed in the store (so of all instances on
//! one database exactly one sends each), sent through the `notify:` channels of the
//! repository serve runs in (`-C DIR`, the keyward.yaml the web view reads), and recorded as
//! `budget.alert` events. A send that fails gives its claim back, so a later check sends it.
//! Must not count or refuse calls (the store does) and must not put a secret in a message.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::clock::Clock;
use crate::model::Actor;
use crate::notify::budget::{BudgetAlert, TopUser};
use crate::notify::compose::leaks_secret;
use crate::spec::Spec;
use crate::store::budget::{self, Alert, Budget, Scope};
use crate::store::{Store, StoreResult, usage};

/// At most this many keys are named as the top users of a budget.
const TOP: usize = 5;

/// Where the alerts go.
pub struct Channels {
    /// The spec whose `notify:` section names the channels (None: no repository, the
    /// alerts are only recorded as events).
    pub spec: Option<Arc<Spec>>,
}

/// One alert sent or recorded: its id and where it went (`recorded only` without channels).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Done {
    pub alert: BudgetAlert,
    pub sent_to: Vec<String>,
}

/// The keys of `scope` that spent the most today, from the usage the servers wrote.
async fn top_users(store: &dyn Store, scope: &Scope<'_>, b: &Budget, day: &str) -> Vec<TopUser> {
    let Ok(Some(used)) = store.usage(day).await else {
        return Vec::new();
    };
    let mut valid: Vec<(String, u64)> = usage::per_key(&used.rows)
        .into_iter()
        .filter(|(id, u)| id != usage::NO_KEY && u.valid > 0)
        .map(|(id, u)| (id, u.valid))
        .collect();
    valid.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let mut out = Vec::new();
    for (id, calls) in valid.into_iter().take(TOP * 10) {
        let Ok(Some(k)) = store.get(&id).await else {
            continue;
        };
        if !b.scopes_for(&k.labels).iter().any(|s| s.id == scope.id) {
            continue;
        }
        out.push(TopUser {
            key: k.name,
            key_id: k.id,
            owner: k.owner,
            calls,
        });
        if out.len() == TOP {
            break;
        }
    }
    out
}

/// Send one alert on every channel; the channels it reached, or the first error.
async fn send(channels: &Channels, a: &BudgetAlert) -> Result<Vec<String>, String> {
    let Some(spec) = &channels.spec else {
        return Ok(Vec::new());
    };
    let Some(cfg) = &spec.notify else {
        return Ok(Vec::new());
    };
    let messages = crate::notify::budget::outgoing(a, cfg.email.as_ref(), cfg.webhook.is_some());
    let mut reached = Vec::new();
    for t in crate::notify::transports(spec) {
        let t = t.map_err(|u| format!("{}: {}", u.target, u.error))?;
        for m in &messages {
            let fits = matches!(
                (m, t.channel()),
                (
                    crate::notify::compose::Outgoing::Email(_),
                    crate::notify::Channel::Email
                ) | (
                    crate::notify::compose::Outgoing::Webhook(_),
                    crate::notify::Channel::Webhook
                )
            );
            if !fits {
                continue;
            }
            if leaks_secret(m) {
                return Err("the message would contain a secret, so it was not sent".into());
            }
            t.send(m)
                .await
                .map_err(|e| format!("{}: {e}", t.target()))?;
            reached.push(t.target());
        }
    }
    Ok(reached)
}

/// Claim, send and record the alerts owed now.
pub async fn check(
    store: &dyn Store,
    channels: &Channels,
    now: DateTime<Utc>,
) -> StoreResult<Vec<Done>> {
    let Some(b) = store.budget().await? else {
        return Ok(Vec::new());
    };
    let day = usage::day_of(&now);
    let spent: BTreeMap<String, u64> = store
        .budget_spent(&day)
        .await?
        .into_iter()
        .map(|s| (s.scope, s.calls))
        .collect();
    let name = store_name(store, &b);
    let mut done = Vec::new();
    for scope in b.scopes() {
        let calls = spent.get(scope.id.as_ref()).copied().unwrap_or(0);
        for percent in budget::crossed(&scope, calls) {
            let claim = Alert {
                scope: scope.id.to_string(),
                day: day.clone(),
                percent,
            };
            if !store.claim_alert(&claim, true).await? {
                continue;
            }
            let alert = BudgetAlert {
                id: format!("budget/{name}/{}/{day}/{percent}", scope.id),
                store: name.clone(),
                scope: claim.scope.clone(),
                day: day.clone(),
                percent,
                spent: calls,
                daily: scope.daily,
                top: top_users(store, &scope, &b, &day).await,
            };
            match send(channels, &alert).await {
                Ok(sent_to) => {
                    record(store, &alert, &sent_to).await;
                    done.push(Done { alert, sent_to });
                }
                Err(e) => {
                    tracing::warn!(alert = %alert.id, error = %e, "budget alert not sent; it is tried again");
                    store.claim_alert(&claim, false).await?;
                }
            }
        }
    }
    Ok(done)
}

/// The name alerts give the store: the one apply wrote with the budget, or the store's own.
fn store_name(store: &dyn Store, b: &Budget) -> String {
    b.store.clone().unwrap_or_else(|| store.name().to_owned())
}

async fn record(store: &dyn Store, a: &BudgetAlert, sent_to: &[String]) {
    let actor = Actor {
        who: "keyward serve".into(),
        commit: None,
    };
    let detail = json!({
        "id": a.id, "scope": a.scope, "day": a.day, "percent": a.percent,
        "spent": a.spent, "daily": a.daily, "sent_to": sent_to,
    });
    if let Err(e) = store.record(budget::EVENT_ALERT, detail, &actor).await {
        tracing::warn!(alert = %a.id, error = %e, "budget alert sent but not recorded");
    }
}

/// Check for alerts every `every` until the process stops.
pub fn spawn(store: Arc<dyn Store>, channels: Channels, clock: Arc<dyn Clock>, every: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match check(store.as_ref(), &channels, clock.now()).await {
                Ok(done) => {
                    for d in done {
                        tracing::info!(alert = %d.alert.id, sent_to = ?d.sent_to, "budget alert");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "budget alerts not checked"),
            }
        }
    });
}
