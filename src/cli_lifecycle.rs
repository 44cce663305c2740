//! CLI commands of the key lifecycle: `keyward expiring` (the report a nightly job runs)
//! and its renderings. Part of the CLI layer (anyhow errors); the decisions about what is
//! due live in `lifecycle` (pure), sending lives in `notify`.

use crate::lifecycle::{DueItem, DueKind};
use crate::spec::{Span, Spec};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::BTreeMap;

/// Output formats of `keyward expiring`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    Text,
    Json,
    Markdown,
}

/// Version of the JSON expiry report.
pub const REPORT_FORMAT_VERSION: u32 = 1;

#[derive(Debug, Serialize)]
struct JsonReport<'a> {
    format_version: u32,
    generated_at: DateTime<Utc>,
    within: String,
    due: &'a [DueItem],
}

fn owner_label(spec: &Spec, owner: &str) -> String {
    match spec.principals.get(owner) {
        Some(p) => match (&p.name, &p.email) {
            (Some(n), Some(e)) if n != owner => format!("{owner} ({n} <{e}>)"),
            (_, Some(e)) => format!("{owner} <{e}>"),
            _ => owner.to_string(),
        },
        None => format!("{owner} (not in people.yaml)"),
    }
}

fn when(i: &DueItem) -> String {
    let date = i.at.format("%Y-%m-%d");
    match (i.kind, i.days_left) {
        (DueKind::Expired, _) => format!("expired on {date}"),
        (DueKind::Expiring, 0) => format!("expires today ({date})"),
        (DueKind::Expiring, d) => format!("expires in {d} day(s) ({date})"),
        (DueKind::RotationDue, d) if d <= 0 => format!("rotation overdue since {date}"),
        (DueKind::RotationDue, d) => format!("rotation due in {d} day(s) ({date})"),
    }
}

fn by_owner(items: &[DueItem]) -> BTreeMap<&str, Vec<&DueItem>> {
    let mut m: BTreeMap<&str, Vec<&DueItem>> = BTreeMap::new();
    for i in items {
        m.entry(i.owner.as_str()).or_default().push(i);
    }
    m
}

/// Render the report.
pub fn render(
    spec: &Spec,
    items: &[DueItem],
    within: Span,
    now: DateTime<Utc>,
    format: ReportFormat,
) -> String {
    match format {
        ReportFormat::Json => serde_json::to_string_pretty(&JsonReport {
            format_version: REPORT_FORMAT_VERSION,
            generated_at: now,
            within: within.to_string(),
            due: items,
        })
        .map(|s| s + "\n")
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}\n")),
        ReportFormat::Text => {
            if items.is_empty() {
                return format!("Nothing expires or is due for rotation within {within}.\n");
            }
            let mut out = format!("Keys that need attention within {within}:\n");
            for (owner, list) in by_owner(items) {
                out.push_str(&format!("\n{}\n", owner_label(spec, owner)));
                for i in list {
                    let at = i
                        .defined_at
                        .as_deref()
                        .map(|l| format!("  [{l}]"))
                        .unwrap_or_default();
                    out.push_str(&format!(
                        "  {} {}/{}: {}{at}\n      -> {}\n",
                        if i.kind == DueKind::Expired {
                            "✗"
                        } else {
                            "⚠"
                        },
                        i.store,
                        i.name,
                        when(i),
                        i.todo
                    ));
                }
            }
            out.push_str(&format!("\n{} key(s) need attention.\n", items.len()));
            out
        }
        ReportFormat::Markdown => {
            let mut out = format!("## keyward: keys due within {within}\n\n");
            if items.is_empty() {
                out.push_str("Nothing expires or is due for rotation.\n");
                return out;
            }
            for (owner, list) in by_owner(items) {
                out.push_str(&format!("### {}\n\n", md_escape(&owner_label(spec, owner))));
                out.push_str(
                    "| Key | Store | Due | Defined at | What to do |\n|---|---|---|---|---|\n",
                );
                for i in list {
                    out.push_str(&format!(
                        "| `{}` | {} | {} | {} | {} |\n",
                        i.name,
                        md_escape(&i.store),
                        md_escape(&when(i)),
                        i.defined_at
                            .as_deref()
                            .map(|l| format!("`{l}`"))
                            .unwrap_or_else(|| "—".into()),
                        md_escape(&i.todo)
                    ));
                }
                out.push('\n');
            }
            out.push_str(&format!(
                "_{} key(s) need attention (generated {})._\n",
                items.len(),
                now.format("%Y-%m-%d %H:%M UTC")
            ));
            out
        }
    }
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `keyward expiring [--notify]`: the report, and with `--notify` the reminders owed now
/// (plus retries of notices earlier runs could not send).
pub async fn expiring_cmd(
    dir: &std::path::Path,
    within: Option<&str>,
    format: ReportFormat,
    notify: bool,
    color: bool,
) -> anyhow::Result<i32> {
    use crate::cli::exit;
    use crate::clock::{Clock, SystemClock};
    use anyhow::anyhow;
    let Some(loaded) = crate::flow::load_or_report(dir, color)? else {
        return Ok(exit::ERROR);
    };
    let spec = &loaded.spec;
    if notify && spec.notify.is_none() {
        eprintln!(
            "error: --notify needs a `notify:` section in keyward.yaml (email and/or webhook; see the README, \"Notifications\"); nothing was sent."
        );
        return Ok(exit::ERROR);
    }
    let within = match within {
        Some(w) => {
            Span::parse(w).ok_or_else(|| anyhow!("`{w}` is not a duration (e.g. 30d, 12h, 2w)"))?
        }
        None => spec.policy.reminder_window(),
    };
    let now = SystemClock.now();
    let stores = crate::observe::open_all(spec, None)?;
    let observed = crate::observe::list_stores(&stores).await?;
    let items = crate::lifecycle::due(spec, &observed, now, within);
    print!("{}", render(spec, &items, within, now, format));
    let mut code = if items.is_empty() {
        exit::OK
    } else {
        exit::CHANGES
    };
    if notify {
        let owed = crate::notify::reminders(spec, &observed, now);
        let ok =
            crate::notify::run_and_report(spec, &stores, owed, &crate::flow::actor(), now).await;
        if !ok {
            code = exit::ERROR;
        }
    }
    Ok(code)
}

/// `keyward import`: write YAML for the unmanaged keys of `store`, check the spec still
/// loads, then adopt each key (the YAML is written first, so an interrupted import leaves
/// keys in the spec that the next import adopts, never adopted keys missing from the spec,
/// which the next apply would revoke).
pub async fn import_cmd(
    dir: &std::path::Path,
    store: &str,
    owner: Option<&str>,
    output: &std::path::Path,
    color: bool,
) -> anyhow::Result<i32> {
    use crate::cli::exit;
    use crate::import::{Decision, plan_import, render_file};
    use crate::store::{Actor, KeyPatch, ListFilter, MANAGED_BY, list_all};
    use anyhow::{Context as _, anyhow, bail};

    let Some(loaded) = crate::flow::load_or_report(dir, color)? else {
        return Ok(exit::ERROR);
    };
    let cfg = loaded.spec.stores.get(store).ok_or_else(|| {
        anyhow!(
            "store `{store}` is not in keyward.yaml (stores: {})",
            loaded
                .spec
                .stores
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        )
    })?;
    let rel = output.strip_prefix(dir).unwrap_or(output).to_path_buf();
    if rel.is_absolute()
        || !crate::spec::is_spec_file(&rel)
        || !rel.starts_with(crate::spec::KEYS_DIR)
    {
        bail!(
            "--output must be a .yaml file under keys/ (got {}), or the spec would not read it",
            rel.display()
        );
    }
    let path = dir.join(&rel);
    let s = crate::observe::open(cfg)?;
    let lives = list_all(s.as_ref(), &ListFilter::default()).await?;
    let candidates = plan_import(&loaded.spec, store, &lives, owner);
    let mut entries = Vec::new();
    let mut adopt = Vec::new();
    for c in &candidates {
        match &c.decision {
            Decision::Import(e) => {
                entries.push((**e).clone());
                adopt.push(&c.key);
            }
            Decision::AdoptOnly { defined_at } => {
                eprintln!(
                    "{}: already defined at {defined_at}; adopting it, the next plan reconciles it with the spec",
                    c.key.name
                );
                adopt.push(&c.key);
            }
            Decision::Skip(why) => eprintln!("skipped {} ({}): {why}", c.key.name, c.key.id),
        }
    }
    if adopt.is_empty() {
        eprintln!("Nothing to import from {store}.");
        return Ok(exit::OK);
    }
    let count = entries.len();
    if !entries.is_empty() {
        if path.exists() {
            bail!(
                "{} already exists; choose another file with --output",
                rel.display()
            );
        }
        let now = crate::clock::Clock::now(&crate::clock::SystemClock);
        let text = render_file(store, entries, &now.format("%Y-%m-%d").to_string())?;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", rel.display()))?;
        // The spec must still load with the new file; otherwise undo and adopt nothing.
        if let Err(d) = crate::spec::load(dir) {
            let sources = crate::diag::sources_from_files(
                &[(rel.clone(), std::fs::read(&path).unwrap_or_default())].into(),
            );
            eprint!("{}", crate::diag::render(&d, &sources, color));
            std::fs::remove_file(&path).ok();
            bail!(
                "the imported keys would make the spec invalid; {} was removed and nothing was adopted",
                rel.display()
            );
        }
        eprintln!("Wrote {count} key(s) to {}.", rel.display());
    }
    let actor = Actor {
        who: std::env::var("KEYWARD_ACTOR")
            .or_else(|_| std::env::var("USER"))
            .unwrap_or_else(|_| "unknown".into()),
        commit: None,
    };
    let mut failed = 0;
    for k in adopt {
        let patch = KeyPatch {
            managed_by: Some(Some(MANAGED_BY.to_string())),
            ..KeyPatch::default()
        };
        let adopted = match s.update(&k.id, k.version, patch, &actor).await {
            Ok(a) => a,
            Err(e) => {
                failed += 1;
                eprintln!("error: adopting {} ({}): {e}", k.name, k.id);
                continue;
            }
        };
        // Record the state keyward adopted it in, so later console edits show as drift.
        let record = KeyPatch {
            applied_digest: Some(adopted.state_digest()),
            ..KeyPatch::default()
        };
        if let Err(e) = s.update(&adopted.id, adopted.version, record, &actor).await {
            eprintln!(
                "warning: {} adopted, but its state was not recorded: {e}",
                k.name
            );
        }
        eprintln!("adopted {} ({})", k.name, k.id);
    }
    if failed > 0 {
        eprintln!("{failed} key(s) could not be adopted; run `keyward import` again to retry.");
        return Ok(exit::ERROR);
    }
    eprintln!(
        "Imported {count} key(s) from {store}. They keep their secrets; their owners receive a secret \
         through keyward at the first rotation. Next: `keyward plan` shows no changes."
    );
    Ok(exit::OK)
}
