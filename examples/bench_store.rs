//! Benchmark helper for `bench/verify.sh` (not a test): fills a store behind
//! `keyward serve` with keys and times listing them through the `http` store kind.
//!
//!   bench_store create URL N SECRETS_FILE   # token in KEYWARD_BENCH_TOKEN (write)
//!   bench_store list URL                    # prints "keys=N seconds=S"
//!
//! Secrets written to SECRETS_FILE are throwaway benchmark keys (one per line), for the
//! wrk script to present to /v1/verify.

use keyward::store::http::HttpStore;
use keyward::store::{Actor, KeyStatus, ListFilter, NewKey, Store, list_all};
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;

fn new_key(i: usize) -> (NewKey, String) {
    let id = keyward::secret::new_key_id();
    let secret = keyward::secret::generate("sandbox", &id);
    let now = chrono::Utc::now();
    let key = NewKey {
        id,
        name: format!("bench-{i}"),
        environment: "sandbox".into(),
        owner: "bench".into(),
        purpose: None,
        scopes: vec!["bibs:read".into()],
        labels: BTreeMap::new(),
        status: KeyStatus::Active,
        issued_at: now - chrono::Duration::minutes(1),
        expires_at: Some(now + chrono::Duration::days(30)),
        lifetime: None,
        generation: 1,
        spec_generation: 1,
        recipients: BTreeMap::new(),
        quota_per_day: Some(1_000_000_000),
        protected: false,
        managed_by: Some("keyward".into()),
        applied_digest: None,
        secret_hash: secret.hash(),
    };
    (key, secret.expose().to_string())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let token = std::env::var("KEYWARD_BENCH_TOKEN")
        .ok()
        .map(secrecy::SecretString::from);
    match args.get(1).map(String::as_str) {
        Some("create") if args.len() == 5 => {
            let store = Arc::new(HttpStore::new(
                "bench",
                &args[2],
                token,
                "$KEYWARD_BENCH_TOKEN",
            )?);
            let n: usize = args[3].parse()?;
            let mut out = std::fs::File::create(&args[4])?;
            let actor = Actor {
                who: "bench".into(),
                commit: None,
            };
            let started = std::time::Instant::now();
            let mut i = 0;
            while i < n {
                let batch: Vec<_> = (i..(i + 32).min(n)).map(new_key).collect();
                i += batch.len();
                let mut tasks = Vec::new();
                for (k, s) in batch {
                    let store = Arc::clone(&store);
                    let actor = actor.clone();
                    tasks.push(tokio::spawn(async move {
                        store
                            .create(k, keyward::store::Writer::new(&actor))
                            .await
                            .map(|_| s)
                    }));
                }
                for t in tasks {
                    writeln!(out, "{}", t.await??)?;
                }
            }
            eprintln!(
                "created {n} keys in {:.1}s",
                started.elapsed().as_secs_f64()
            );
        }
        Some("list") if args.len() == 3 => {
            let store = HttpStore::new("bench", &args[2], token, "$KEYWARD_BENCH_TOKEN")?;
            let started = std::time::Instant::now();
            let keys = list_all(&store, &ListFilter::default()).await?;
            println!(
                "keys={} seconds={:.2}",
                keys.len(),
                started.elapsed().as_secs_f64()
            );
        }
        _ => {
            eprintln!("usage: bench_store create URL N SECRETS_FILE | bench_store list URL");
            std::process::exit(2);
        }
    }
    Ok(())
}
