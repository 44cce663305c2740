//! Benchmark floors and helpers (bench-only, kept out of the user CLI):
//!
//!   floor parse DIR     load and validate the spec only (`spec::load`): the YAML floor
//!   floor yaml DIR      read the same files and parse them into YAML values only: the
//!                       bare YAML floor (no position index, no validation)
//!   floor load-parts DIR  time reading, YAML parsing, the position index and the whole
//!                       spec::load separately
//!   floor list DIR      open the stores and list every key (`list_all`) only: the store floor
//!   floor phases DIR    time each phase of a no-change `keyward plan` in one process
//!   floor populate DIR  register every desired key of DIR in its store in one transaction
//!                       per store, without sealing or delivering (seeds a benchmark store
//!                       fast; the measured apply uses the real `keyward apply`)
//!
//! `list` reads only keyward.yaml (for the store paths): it does not parse the keys.

use keyward::store::sqlite::SqliteStore;
use keyward::store::{Actor, KeyStatus, ListFilter, MANAGED_BY, NewKey, Store, list_all};
use keyward::{diff, observe, plan, policy, secret, spec};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

type Res<T> = Result<T, String>;

fn load(dir: &Path) -> Res<spec::Loaded> {
    spec::load(dir).map_err(|d| {
        format!(
            "invalid spec ({} errors); first: {}",
            d.error_count(),
            d.iter()
                .next()
                .map(|x| x.message.clone())
                .unwrap_or_default()
        )
    })
}

fn rt() -> Res<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
}

fn parse(dir: &Path) -> Res<()> {
    let l = load(dir)?;
    println!("parsed {} keys", l.spec.keys.len());
    Ok(())
}

/// Every spec file under `dir` (keyward.yaml, people.yaml, keys/**/*.y(a)ml), read.
fn spec_files(dir: &Path) -> Res<Vec<(PathBuf, String)>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.join(spec::KEYS_DIR)];
    for f in [spec::CONFIG_FILE, spec::PEOPLE_FILE] {
        out.push(dir.join(f));
    }
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).map_err(|e| format!("{}: {e}", d.display()))? {
            let p = e.map_err(|e| e.to_string())?.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
                out.push(p);
            }
        }
    }
    out.into_iter()
        .map(|p| {
            std::fs::read_to_string(&p)
                .map(|t| (p.clone(), t))
                .map_err(|e| format!("{}: {e}", p.display()))
        })
        .collect()
}

/// The YAML floor: read the same files and parse them into `serde_yaml::Value`, nothing
/// else (no position index, no validation).
fn yaml(dir: &Path) -> Res<()> {
    let files = spec_files(dir)?;
    let mut n = 0;
    for (p, t) in &files {
        let v: serde_yaml::Value =
            serde_yaml::from_str(t).map_err(|e| format!("{}: {e}", p.display()))?;
        n += usize::from(!v.is_null());
    }
    println!("parsed {n} YAML documents");
    Ok(())
}

/// Time the parts of spec loading separately (stderr).
fn load_parts(dir: &Path) -> Res<()> {
    let t = Instant::now();
    let files = spec_files(dir)?;
    let read = t.elapsed();
    let t = Instant::now();
    let mut values = Vec::new();
    for (p, text) in &files {
        values.push(
            serde_yaml::from_str::<serde_yaml::Value>(text)
                .map_err(|e| format!("{}: {e}", p.display()))?,
        );
    }
    let yaml = t.elapsed();
    let t = Instant::now();
    let idx: Vec<_> = files
        .iter()
        .map(|(_, text)| spec::pos::PosIndex::build(text))
        .collect();
    let pos = t.elapsed();
    let t = Instant::now();
    let l = load(dir)?;
    let full = t.elapsed();
    eprintln!(
        "read {:.1} ms, yaml {:.1} ms, pos index {:.1} ms, full spec::load {:.1} ms ({} keys, {} files)",
        read.as_secs_f64() * 1e3,
        yaml.as_secs_f64() * 1e3,
        pos.as_secs_f64() * 1e3,
        full.as_secs_f64() * 1e3,
        l.spec.keys.len(),
        idx.len() + values.len() - files.len()
    );
    Ok(())
}

fn list(dir: &Path) -> Res<()> {
    // Only keyward.yaml and people.yaml: the store configuration, not the keys.
    let mut files = BTreeMap::new();
    for f in [spec::CONFIG_FILE, spec::PEOPLE_FILE] {
        let bytes = std::fs::read(dir.join(f)).map_err(|e| format!("reading {f}: {e}"))?;
        files.insert(PathBuf::from(f), bytes);
    }
    let l = spec::load_from_files(dir, files).map_err(|d| format!("{} errors", d.error_count()))?;
    let n = rt()?.block_on(async {
        let stores = observe::open_all(&l.spec, None).map_err(|e| e.to_string())?;
        let mut n = 0;
        for s in stores.values() {
            n += list_all(s.as_ref(), &ListFilter::default())
                .await
                .map_err(|e| e.to_string())?
                .len();
        }
        Ok::<_, String>(n)
    })?;
    println!("listed {n} keys");
    Ok(())
}

fn phases(dir: &Path) -> Res<()> {
    let t = Instant::now();
    let mut last = t;
    let mut lap = |what: &str| {
        let now = Instant::now();
        eprintln!(
            "{what:<10} {:>8.1} ms",
            now.duration_since(last).as_secs_f64() * 1e3
        );
        last = now;
    };
    let l = load(dir)?;
    lap("load");
    let now = chrono::Utc::now();
    let p = policy::check(&l.spec, now);
    lap("policy");
    let stores = observe::open_all(&l.spec, None).map_err(|e| e.to_string())?;
    lap("open");
    let rt = rt()?;
    let observed = rt
        .block_on(observe::list_stores(&stores))
        .map_err(|e| e.to_string())?;
    lap("list");
    let outbox = keyward::deliver::Outbox::new(l.spec.delivery.outbox.clone());
    let delivered = observe::delivered(&outbox).map_err(|e| e.to_string())?;
    lap("outbox");
    let result = diff::diff_with_deliveries(&l.spec, &observed, &delivered, now);
    lap("diff");
    let envs: BTreeMap<String, String> = l
        .spec
        .stores
        .iter()
        .map(|(n, s)| (n.clone(), s.environment.clone()))
        .collect();
    let revision = plan::Revision::of_files(plan::RevisionSource::WorkingTree, None, &l.sources);
    lap("revision");
    let pl = plan::Plan::new(
        result,
        &observed,
        &envs,
        plan::RepoIdentity::directory(&l.spec.root),
        revision,
        now,
    );
    lap("plan");
    let text = plan::render::text(&pl, plan::render::Style { color: false });
    lap("render");
    eprintln!(
        "total      {:>8.1} ms  ({} keys, {} actions, {} policy findings, {} bytes rendered)",
        t.elapsed().as_secs_f64() * 1e3,
        l.spec.keys.len(),
        pl.actions.len(),
        p.iter().count(),
        text.len()
    );
    Ok(())
}

fn populate(dir: &Path) -> Res<()> {
    let l = load(dir)?;
    let now = {
        use chrono::SubsecRound;
        chrono::Utc::now().trunc_subsecs(0)
    };
    let actor = Actor {
        who: "bench-populate".into(),
        commit: None,
    };
    let rt = rt()?;
    for (name, cfg) in &l.spec.stores {
        let spec::StoreKind::Sqlite { path } = &cfg.kind else {
            return Err(format!("store {name} is not sqlite"));
        };
        let store = SqliteStore::open(name, path).map_err(|e| e.to_string())?;
        let batch: Vec<NewKey> = l
            .spec
            .keys_in(name)
            .filter(|d| {
                matches!(
                    d.state,
                    spec::DesiredState::Active | spec::DesiredState::Disabled
                )
            })
            .map(|d| {
                let id = secret::new_key_id();
                let s = secret::generate(&d.environment, &id);
                let new = NewKey {
                    id,
                    name: d.name.clone(),
                    environment: d.environment.clone(),
                    owner: d.owner.clone(),
                    purpose: d.purpose.clone(),
                    scopes: diff::scope_strings(&d.scopes),
                    labels: d.labels.clone(),
                    status: if d.state == spec::DesiredState::Disabled {
                        KeyStatus::Disabled
                    } else {
                        KeyStatus::Active
                    },
                    issued_at: now,
                    expires_at: diff::expires_at(&d.expiry, now),
                    lifetime: diff::lifetime_string(&d.expiry),
                    generation: 1,
                    spec_generation: d.rotation.generation,
                    recipients: diff::recipient_map(&l.spec, d),
                    quota_per_day: d.quota.map(|q| q.per_day),
                    protected: d.protected,
                    managed_by: Some(MANAGED_BY.to_string()),
                    applied_digest: None,
                    secret_hash: s.hash(),
                };
                // As apply does: remember what was applied (drift detection).
                NewKey {
                    applied_digest: Some(new.state_digest()),
                    ..new
                }
            })
            .collect();
        let n = rt
            .block_on(store.create_batch(batch, keyward::store::Writer::new(&actor)))
            .map_err(|e| e.to_string())?
            .len();
        eprintln!("{name}: registered {n} keys");
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let r = match args.as_slice() {
        [cmd, dir] => {
            let dir = Path::new(dir);
            match cmd.as_str() {
                "parse" => parse(dir),
                "yaml" => yaml(dir),
                "load-parts" => load_parts(dir),
                "list" => list(dir),
                "phases" => phases(dir),
                "populate" => populate(dir),
                other => Err(format!("unknown subcommand {other}")),
            }
        }
        _ => Err("usage: floor parse|yaml|load-parts|list|phases|populate DIR".into()),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("floor: {e}");
            ExitCode::FAILURE
        }
    }
}
