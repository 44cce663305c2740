//! Observe: open the stores a spec names and list what they hold. The only place that
//! turns a `StoreConfig` into a live `Store`; must not compare or change anything.

use crate::console::ConsoleStore;
use crate::deliver::{DeliverError, DeliveryStatus, Outbox};
use crate::diff::{Delivered, DeliveredKey};
use crate::spec::{ConnUrl, Spec, StoreConfig, StoreKind};
use crate::store::exec::{ExecOptions, ExecStore};
use crate::store::http::HttpStore;
use crate::store::pg_roles::{PgRolesOptions, PgRolesStore};
use crate::store::redis_acl::{RedisAclOptions, RedisAclStore};
use crate::store::sqlite::SqliteStore;
use crate::store::{ListFilter, LiveKey, Store, StoreError, list_all};
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    #[error("store `{store}` ({location}): {source}")]
    Open {
        store: String,
        location: String,
        #[source]
        source: StoreError,
    },
    #[error(
        "store `{store}` ({url}) needs a token in the environment variable {var}, which is not set\n  hint: on the server run `keyward token create NAME --role read` (plan) or `--role write` (apply), then `export {var}=...`"
    )]
    MissingToken {
        store: String,
        url: String,
        var: String,
    },
    #[error("console store `{store}`: {source}")]
    Ledger {
        store: String,
        #[source]
        source: crate::console::LedgerError,
    },
    #[error(
        "store `{store}` ({kind}) reads its URL from the environment variable {var}, which is not set\n  hint: `export {var}=...` (the URL of an account that may manage {what})"
    )]
    MissingUrl {
        store: String,
        kind: &'static str,
        var: String,
        what: &'static str,
    },
    #[error("reading the key usage of store `{store}`: {source}")]
    Usage {
        store: String,
        #[source]
        source: StoreError,
    },
    #[error("listing store `{store}`: {source}")]
    List {
        store: String,
        #[source]
        source: StoreError,
    },
}

/// The URL of a store that names it directly or through an environment variable.
fn conn_url(cfg: &StoreConfig, url: &ConnUrl, what: &'static str) -> Result<String, ObserveError> {
    match url {
        ConnUrl::Value(u) => Ok(u.clone()),
        ConnUrl::Env(var) => match std::env::var(var) {
            Ok(u) if !u.trim().is_empty() => Ok(u.trim().to_owned()),
            _ => Err(ObserveError::MissingUrl {
                store: cfg.name.clone(),
                kind: cfg.kind.name(),
                var: var.clone(),
                what,
            }),
        },
    }
}

/// Open a store keyward reaches but does not run.
fn open_adapter(cfg: &StoreConfig) -> Result<Arc<dyn Store>, ObserveError> {
    let failed = |location: String| {
        let store = cfg.name.clone();
        move |source| ObserveError::Open {
            store,
            location,
            source,
        }
    };
    let timeout = std::time::Duration::from_secs(10);
    match &cfg.kind {
        StoreKind::PostgresRoles {
            url,
            role_prefix,
            grants,
        } => {
            let url = conn_url(cfg, url, "roles")?;
            let opts = PgRolesOptions {
                url,
                role_prefix: role_prefix.clone(),
                grants: grants.clone(),
                timeout,
            };
            PgRolesStore::new(&cfg.name, opts)
                .map(|s| Arc::new(s) as Arc<dyn Store>)
                .map_err(failed(format!("postgres-roles {role_prefix}*")))
        }
        StoreKind::RedisAcl {
            url,
            user_prefix,
            grants,
        } => {
            let url = conn_url(cfg, url, "ACL users")?;
            let opts = RedisAclOptions {
                url,
                user_prefix: user_prefix.clone(),
                grants: grants.clone(),
                timeout,
            };
            RedisAclStore::new(&cfg.name, opts)
                .map(|s| Arc::new(s) as Arc<dyn Store>)
                .map_err(failed(format!("redis-acl {user_prefix}*")))
        }
        StoreKind::Exec {
            command,
            env,
            timeout_secs,
        } => {
            // Only the variables the store names reach the adapter (those that are set).
            let env = env
                .iter()
                .filter_map(|n| std::env::var(n).ok().map(|v| (n.clone(), v)))
                .collect();
            let opts = ExecOptions {
                command: command.clone(),
                env,
                timeout: std::time::Duration::from_secs(*timeout_secs),
            };
            ExecStore::open(&cfg.name, opts)
                .map(|s| Arc::new(s) as Arc<dyn Store>)
                .map_err(failed(format!("exec {}", command[0])))
        }
        StoreKind::Sqlite { .. } | StoreKind::Http { .. } | StoreKind::Console(_) => {
            Err(failed(String::new())(StoreError::Invalid(
                "not a store keyward reaches through an adapter".into(),
            )))
        }
    }
}

/// Open one configured store.
pub fn open(cfg: &StoreConfig) -> Result<Arc<dyn Store>, ObserveError> {
    match &cfg.kind {
        StoreKind::Exec { .. } | StoreKind::PostgresRoles { .. } | StoreKind::RedisAcl { .. } => {
            open_adapter(cfg)
        }
        StoreKind::Sqlite { path } => SqliteStore::open(&cfg.name, path)
            .map(|s| Arc::new(s) as Arc<dyn Store>)
            .map_err(|e| ObserveError::Open {
                store: cfg.name.clone(),
                location: path.display().to_string(),
                source: e,
            }),
        StoreKind::Console(console) => ConsoleStore::open(cfg, console)
            .map(|s| Arc::new(s) as Arc<dyn Store>)
            .map_err(|e| ObserveError::Ledger {
                store: cfg.name.clone(),
                source: e,
            }),
        StoreKind::Http { url, token_env } => {
            let token = match token_env {
                Some(var) => match std::env::var(var) {
                    Ok(t) if !t.trim().is_empty() => {
                        Some(secrecy::SecretString::from(t.trim().to_owned()))
                    }
                    _ => {
                        return Err(ObserveError::MissingToken {
                            store: cfg.name.clone(),
                            url: url.clone(),
                            var: var.clone(),
                        });
                    }
                },
                None => None,
            };
            let source = token_env
                .as_deref()
                .map(|v| format!("${v}"))
                .unwrap_or_else(|| "(no token_env configured)".into());
            HttpStore::new(&cfg.name, url, token, &source)
                .map(|s| Arc::new(s) as Arc<dyn Store>)
                .map_err(|e| ObserveError::Open {
                    store: cfg.name.clone(),
                    location: url.clone(),
                    source: e,
                })
        }
    }
}

/// Warnings for the store's own files whose mode lets other users read them (an embedded
/// store's database, `-wal`, `-shm` and pepper); the command prints them.
pub fn mode_warnings(cfg: &StoreConfig) -> Vec<String> {
    match &cfg.kind {
        StoreKind::Sqlite { path } => crate::private::loose(&crate::store::sqlite::files(path)),
        _ => Vec::new(),
    }
}

/// The opened stores, by name.
pub type Opened = BTreeMap<String, Arc<dyn Store>>;

/// The database file of an embedded store that does not exist (yet). Read-only commands
/// never create it: such a store is observed as empty.
pub fn missing_file(cfg: &StoreConfig) -> Option<&std::path::Path> {
    match &cfg.kind {
        StoreKind::Sqlite { path } if !path.exists() => Some(path.as_path()),
        _ => None,
    }
}

/// Open every store of the spec (or only `only`) that exists, for a read-only command
/// (plan, keys, expiring): an embedded store whose database file is missing is not created
/// but named in the second value (observe it as empty).
pub fn open_existing(
    spec: &Spec,
    only: Option<&str>,
) -> Result<(Opened, Vec<String>), ObserveError> {
    let mut opened = BTreeMap::new();
    let mut absent = Vec::new();
    for c in spec.stores.values() {
        if only.is_some_and(|o| o != c.name) {
            continue;
        }
        if missing_file(c).is_some() {
            absent.push(c.name.clone());
        } else {
            opened.insert(c.name.clone(), open(c)?);
        }
    }
    Ok((opened, absent))
}

/// Open every store of the spec (or only `only`, when given), creating embedded stores
/// whose file is missing (apply only: read-only commands use `open_existing`).
pub fn open_all(
    spec: &Spec,
    only: Option<&str>,
) -> Result<BTreeMap<String, Arc<dyn Store>>, ObserveError> {
    spec.stores
        .values()
        .filter(|c| only.is_none_or(|o| o == c.name))
        .map(|c| open(c).map(|s| (c.name.clone(), s)))
        .collect()
}

/// List every key (managed and unmanaged) of every opened store. The stores are listed
/// concurrently (each has its own connection or client), so a plan over several stores
/// waits for the slowest store rather than for the sum of them.
pub async fn list_stores(
    stores: &BTreeMap<String, Arc<dyn Store>>,
) -> Result<BTreeMap<String, Vec<LiveKey>>, ObserveError> {
    let lists = stores.iter().map(|(name, s)| async move {
        list_all(s.as_ref(), &ListFilter::default())
            .await
            .map(|keys| (name.clone(), keys))
            .map_err(|e| ObserveError::List {
                store: name.clone(),
                source: e,
            })
    });
    Ok(futures::future::try_join_all(lists)
        .await?
        .into_iter()
        .collect())
}

/// The usage every store keeps from `since` (a UTC day, YYYY-MM-DD) on; `None` for a
/// store that keeps none (a console, a native store, an adapter without the capability).
pub async fn usage_of(
    stores: &BTreeMap<String, Arc<dyn Store>>,
    since: &str,
) -> Result<BTreeMap<String, Option<crate::store::usage::Usage>>, ObserveError> {
    let reads = stores.iter().map(|(name, s)| async move {
        let u = if s.capabilities().usage {
            s.usage(since).await.map_err(|e| ObserveError::Usage {
                store: name.clone(),
                source: e,
            })?
        } else {
            None
        };
        Ok::<_, ObserveError>((name.clone(), u))
    });
    Ok(futures::future::try_join_all(reads)
        .await?
        .into_iter()
        .collect())
}

/// The newest active delivery of every key name in the outbox: what keyward has handed out,
/// for the diff to tell a key deleted by hand from one never created. Voided and pending
/// deliveries do not count (their secrets never became valid), nor superseded ones (apply
/// marks the delivery of a key it deletes superseded).
pub fn delivered(outbox: &Outbox) -> Result<Delivered, DeliverError> {
    let mut out = Delivered::new();
    if !outbox.root().exists() {
        return Ok(out);
    }
    for (_, m) in outbox.list()? {
        if m.status != DeliveryStatus::Active {
            continue;
        }
        let k = (m.store.clone(), m.name.clone());
        if out.get(&k).is_none_or(|d| d.generation < m.generation) {
            out.insert(
                k,
                DeliveredKey {
                    key_id: m.key_id.clone(),
                    generation: m.generation,
                },
            );
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Actor, KeyStatus, MANAGED_BY, NewKey};
    use chrono::Utc;

    fn new_key(name: &str) -> NewKey {
        let id = crate::secret::new_key_id();
        let s = crate::secret::generate("sandbox", &id);
        NewKey {
            id,
            name: name.into(),
            environment: "sandbox".into(),
            owner: "jdoe".into(),
            purpose: None,
            scopes: vec!["bibs:read".into()],
            labels: BTreeMap::new(),
            status: KeyStatus::Active,
            issued_at: Utc::now(),
            expires_at: None,
            lifetime: None,
            generation: 1,
            spec_generation: 1,
            recipients: BTreeMap::new(),
            quota_per_day: None,
            protected: false,
            managed_by: Some(MANAGED_BY.into()),
            applied_digest: None,
            secret_hash: s.hash(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_store_is_listed_under_its_own_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut stores: BTreeMap<String, Arc<dyn Store>> = BTreeMap::new();
        let actor = Actor::default();
        for (name, n) in [("a", 3usize), ("b", 0), ("c", 1205)] {
            let s = SqliteStore::open(name, &dir.path().join(format!("{name}.db"))).expect("open");
            let keys = (0..n).map(|i| new_key(&format!("{name}-{i}"))).collect();
            s.create_batch(keys, crate::store::Writer::new(&actor))
                .await
                .expect("seed");
            stores.insert(name.to_string(), Arc::new(s));
        }
        let listed = list_stores(&stores).await.expect("list");
        assert_eq!(listed.keys().collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(listed["a"].len(), 3);
        assert!(listed["b"].is_empty());
        assert_eq!(listed["c"].len(), 1205, "more than one page");
        for (name, keys) in &listed {
            assert!(keys.iter().all(|k| k.name.starts_with(&format!("{name}-"))));
        }
    }
}
