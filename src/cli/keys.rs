//! `keyward keys`: list what the stores hold (no secrets, no hashes) as a table or JSON.
//! Reads the stores only; must not change one.

use super::common::known_store;
use anyhow::{Result, anyhow};
use clap::{Args, ValueEnum};
use keyward::clock::{Clock, SystemClock};
use keyward::flow::load_or_report;
use keyward::observe;
use keyward::outcome::Outcome;
use keyward::store::usage::{KeyUse, Usage, days_unused, per_key};
use keyward::store::{KeyStatus, ListFilter, LiveKey, list_all};
use std::collections::BTreeMap;
use std::path::Path;

/// A listed key with its store and what the store knows of its use (`None`: not visible,
/// `hidden` says why).
struct Row {
    store: String,
    key: LiveKey,
    used: Option<KeyUse>,
    hidden: &'static str,
}

/// The examples under `keyward keys --help`.
pub const AFTER_HELP: &str = "\
Examples:
  keyward keys --store alma-production --status active
  keyward keys --unmanaged --format json";

#[derive(Debug, Args)]
pub struct KeysArgs {
    #[arg(long)]
    pub store: Option<String>,
    #[arg(long)]
    pub owner: Option<String>,
    #[arg(long, value_enum)]
    pub status: Option<StatusArg>,
    /// YYYY-MM-DD
    #[arg(long, value_name = "DATE")]
    pub expiring_before: Option<String>,
    #[arg(long)]
    pub never_expires: bool,
    /// Only keys not managed by keyward (made in a console).
    #[arg(long)]
    pub unmanaged: bool,
    /// Only keys without a valid verify for at least this long (e.g. `90d`): since their
    /// last use, or, never used, since counting began or they were made. Keys of stores
    /// that keep no usage are left out (said on stderr).
    #[arg(long, value_name = "SPAN")]
    pub unused_for: Option<String>,
    #[arg(long, value_enum, default_value_t = ListFormat::Text)]
    pub format: ListFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum ListFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum StatusArg {
    Active,
    Disabled,
    Revoked,
}

fn parse_date(s: &str) -> Result<chrono::DateTime<chrono::Utc>> {
    let d = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map_err(|_| anyhow!("`{s}` is not a date (YYYY-MM-DD)"))?;
    d.and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc())
        .ok_or_else(|| anyhow!("bad date {s}"))
}

impl KeysArgs {
    fn filter(&self) -> Result<ListFilter> {
        Ok(ListFilter {
            owner: self.owner.clone(),
            status: self.status.map(|s| match s {
                StatusArg::Active => KeyStatus::Active,
                StatusArg::Disabled => KeyStatus::Disabled,
                StatusArg::Revoked => KeyStatus::Revoked,
            }),
            managed: self.unmanaged.then_some(false),
            expiring_before: self
                .expiring_before
                .as_deref()
                .map(parse_date)
                .transpose()?,
            never_expires: self.never_expires,
            ..ListFilter::default()
        })
    }
}

/// Run `keyward keys`.
pub async fn run(dir: &Path, args: &KeysArgs, color: bool) -> Result<Outcome> {
    let Some(loaded) = load_or_report(dir, color)? else {
        return Ok(Outcome::Error);
    };
    known_store(&loaded.spec, args.store.as_deref())?;
    let (stores, _absent) = observe::open_existing(&loaded.spec, args.store.as_deref())?;
    super::common::warn_modes(&loaded.spec, stores.keys());
    let filter = args.filter()?;
    let usage = observe::usage_of(&stores, "0000-01-01").await?;
    let mut rows: Vec<Row> = Vec::new();
    for (name, s) in &stores {
        let used = usage.get(name).cloned().flatten();
        let hidden = not_visible(&loaded.spec, name);
        let by_key = used.as_ref().map(|u| per_key(&u.rows));
        for k in list_all(s.as_ref(), &filter).await? {
            let u = by_key
                .as_ref()
                .map(|m| m.get(&k.id).cloned().unwrap_or_default());
            rows.push(Row {
                store: name.clone(),
                key: k,
                used: u,
                hidden,
            });
        }
    }
    if let Some(span) = &args.unused_for {
        rows = unused_for(rows, &usage, span, &loaded.spec)?;
    }
    if let Some(owner) = &args.owner
        && rows.is_empty()
    {
        check_owner(&loaded.spec, &stores, owner).await?;
    }
    match args.format {
        ListFormat::Json => print_json(&rows)?,
        ListFormat::Text => print_table(&rows),
    }
    Ok(Outcome::Ok)
}

/// `--owner` that matched nothing must at least be an owner keyward knows: a principal of
/// people.yaml or the owner of a key in the stores (console-made keys have owners of their
/// own). Otherwise it is a typo, and an empty list would hide it.
async fn check_owner(
    spec: &keyward::spec::Spec,
    stores: &observe::Opened,
    owner: &str,
) -> Result<()> {
    if spec.principals.contains_key(owner) {
        return Ok(());
    }
    let mut known: std::collections::BTreeSet<String> = spec.principals.keys().cloned().collect();
    for s in stores.values() {
        for k in list_all(s.as_ref(), &ListFilter::default()).await? {
            known.insert(k.owner);
        }
    }
    if known.contains(owner) {
        return Ok(());
    }
    let mean = keyward::spec::yaml::suggest(owner, known.iter().map(String::as_str))
        .map(|s| format!("did you mean `{s}`? "))
        .unwrap_or_default();
    let shown: Vec<&str> = known.iter().take(20).map(String::as_str).collect();
    let more = known.len().saturating_sub(shown.len());
    Err(anyhow!(
        "--owner {owner}: no person or service in people.yaml and no key in the stores has the owner `{owner}`\n  hint: {mean}(owners: {}{})",
        shown.join(", "),
        if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        }
    ))
}

/// The rows whose key has had no valid verify for at least `span`.
fn unused_for(
    rows: Vec<Row>,
    usage: &BTreeMap<String, Option<Usage>>,
    span: &str,
    spec: &keyward::spec::Spec,
) -> Result<Vec<Row>> {
    let days = super::usage::window_days(span)?;
    let now = SystemClock.now();
    for (store, u) in usage {
        if u.is_none() {
            eprintln!(
                "store `{store}`: {}, so its keys are not listed by --unused-for",
                not_visible(spec, store)
            );
        }
    }
    Ok(rows
        .into_iter()
        .filter(|r| {
            let Some(used) = &r.used else {
                return false;
            };
            let began = usage.get(&r.store).and_then(|u| u.as_ref()?.counting_since);
            days_unused(used.last_used, r.key.created_at, began, now)
                .is_some_and(|d| d >= i64::from(days))
        })
        .collect())
}

/// Why a store's usage is not visible, in the words `keys` and `usage` use.
fn not_visible(spec: &keyward::spec::Spec, store: &str) -> &'static str {
    keyward::usage_report::not_visible_why(spec.stores.get(store).map(|c| c.kind.name()))
}

/// The LAST USED cell: the day of the last valid verify, `never`, or why it is not
/// visible (`not visible in the console`, `not visible`).
fn last_used(r: &Row) -> String {
    match &r.used {
        None => r.hidden.trim_start_matches("usage ").into(),
        Some(u) => u
            .last_used
            .map(|t| t.format("%Y-%m-%d").to_string())
            .unwrap_or_else(|| "never".into()),
    }
}

fn print_json(rows: &[Row]) -> Result<()> {
    let v: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            let mut j = serde_json::to_value(&r.key).unwrap_or_default();
            if let Some(o) = j.as_object_mut() {
                o.insert("store".into(), serde_json::Value::String(r.store.clone()));
                o.insert("usage_visible".into(), r.used.is_some().into());
                if r.used.is_none() {
                    o.insert("usage_note".into(), r.hidden.into());
                }
                o.insert(
                    "last_used".into(),
                    serde_json::to_value(r.used.as_ref().and_then(|u| u.last_used))
                        .unwrap_or_default(),
                );
            }
            j
        })
        .collect();
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}

/// The text table: each column as wide as its widest cell (names and owners can be long).
fn print_table(rows: &[Row]) {
    let header = [
        "STORE",
        "NAME",
        "ID",
        "OWNER",
        "STATUS",
        "EXPIRES",
        "LAST USED",
        "GEN",
        "SCOPES",
    ];
    let cells: Vec<[String; 9]> = rows
        .iter()
        .map(|r| {
            let (s, k) = (&r.store, &r.key);
            let name = if k.is_managed() {
                k.name.clone()
            } else {
                format!("{} (unmanaged)", k.name)
            };
            [
                s.clone(),
                name,
                k.id.clone(),
                k.owner.clone(),
                k.status.as_str().to_string(),
                k.expires_at
                    .map(|t| t.format("%Y-%m-%d").to_string())
                    .unwrap_or_else(|| "never".into()),
                last_used(r),
                k.generation.to_string(),
                k.scopes.join(","),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    println!("{}", table_line(&header.map(String::from), &widths));
    for row in &cells {
        println!("{}", table_line(row, &widths));
    }
    eprintln!("{} key(s).", rows.len());
}

/// One line of the table: every cell but the last padded to its column's width.
fn table_line(cells: &[String; 9], widths: &[usize; 9]) -> String {
    let mut line = String::new();
    for (i, (c, w)) in cells.iter().zip(widths).enumerate() {
        if i + 1 == cells.len() {
            line.push_str(c);
        } else {
            let pad = w.saturating_sub(c.chars().count());
            line.push_str(&format!("{c}{} ", " ".repeat(pad)));
        }
    }
    line
}
