//! Observe: open the stores a spec names and list what they hold. The only place that
//! turns a `StoreConfig` into a live `Store`; must not compare or change anything.

use crate::deliver::{DeliverError, DeliveryStatus, Outbox};
use crate::diff::{Delivered, DeliveredKey};
use crate::spec::{Spec, StoreConfig, StoreKind};
use crate::store::http::HttpStore;
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
    #[error("listing store `{store}`: {source}")]
    List {
        store: String,
        #[source]
        source: StoreError,
    },
}

/// Open one configured store.
pub fn open(cfg: &StoreConfig) -> Result<Arc<dyn Store>, ObserveError> {
    match &cfg.kind {
        StoreKind::Sqlite { path } => SqliteStore::open(&cfg.name, path)
            .map(|s| Arc::new(s) as Arc<dyn Store>)
            .map_err(|e| ObserveError::Open {
                store: cfg.name.clone(),
                location: path.display().to_string(),
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

/// Open every store of the spec (or only `only`, when given).
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

/// List every key (managed and unmanaged) of every opened store.
pub async fn list_stores(
    stores: &BTreeMap<String, Arc<dyn Store>>,
) -> Result<BTreeMap<String, Vec<LiveKey>>, ObserveError> {
    let mut out = BTreeMap::new();
    for (name, s) in stores {
        let keys = list_all(s.as_ref(), &ListFilter::default())
            .await
            .map_err(|e| ObserveError::List {
                store: name.clone(),
                source: e,
            })?;
        out.insert(name.clone(), keys);
    }
    Ok(out)
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
