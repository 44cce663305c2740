//! The web view's pages by path, shared by the static site (`keyward report --html DIR`)
//! and the live view (`keyward serve`, under `/ui/`): which paths exist, the page for a
//! path, the embedded assets, and writing a whole site into a directory. Rendering itself is
//! in `html`; this file must not decide what a page shows.

use super::html::{self, Ctx};
use super::{KeyQuery, Mode, Report, RowStatus, Sort, seg};
use chrono::Duration;
use std::path::Path;

/// The stylesheet, embedded in the binary.
pub const CSS: &str = include_str!("assets/report.css");
/// The script (filtering and sorting the keys table in place), embedded in the binary.
pub const JS: &str = include_str!("assets/report.js");

/// The embedded asset at `path`, with its content type.
pub fn asset(path: &str) -> Option<(&'static str, &'static str)> {
    match path {
        "assets/report.css" => Some(("text/css; charset=utf-8", CSS)),
        "assets/report.js" => Some(("text/javascript; charset=utf-8", JS)),
        _ => None,
    }
}

/// The relative way back to the site root from `path`.
fn root_of(path: &str) -> String {
    "../".repeat(path.matches('/').count())
}

/// Every filtered list the static site pre-renders: (path, heading, query).
fn filters(r: &Report) -> Vec<(String, String, KeyQuery)> {
    use std::collections::BTreeSet;
    let mut out = Vec::new();
    let q = KeyQuery::default;
    for s in &r.stores {
        out.push((
            format!("filter/store-{}.html", seg(&s.name)),
            format!("Keys in {}", s.name),
            KeyQuery {
                store: Some(s.name.clone()),
                ..q()
            },
        ));
    }
    let owners: BTreeSet<&str> = r.keys.iter().map(|k| k.owner.as_str()).collect();
    for o in owners {
        out.push((
            format!("filter/owner-{}.html", seg(o)),
            format!("Keys owned by {o}"),
            KeyQuery {
                owner: Some(o.to_string()),
                ..q()
            },
        ));
    }
    for s in RowStatus::ALL {
        out.push((
            format!("filter/status-{}.html", s.as_str()),
            format!("Keys with status {}", s.as_str()),
            KeyQuery {
                status: Some(s),
                ..q()
            },
        ));
    }
    let scopes: BTreeSet<&str> = r
        .keys
        .iter()
        .flat_map(|k| k.scopes.iter().map(String::as_str))
        .collect();
    for s in scopes {
        out.push((
            format!("filter/scope-{}.html", seg(s)),
            format!("Keys with scope {s}"),
            KeyQuery {
                scope: Some(s.to_string()),
                ..q()
            },
        ));
    }
    let labels: BTreeSet<(&str, &str)> = r
        .keys
        .iter()
        .flat_map(|k| k.labels.iter().map(|(a, b)| (a.as_str(), b.as_str())))
        .collect();
    for (a, b) in labels {
        out.push((
            format!("filter/label-{}.html", seg(&format!("{a}={b}"))),
            format!("Keys labelled {a}={b}"),
            KeyQuery {
                label: Some((a.to_string(), b.to_string())),
                ..q()
            },
        ));
    }
    for days in [30, 60, 90, 365] {
        let before = (r.generated_at + Duration::days(days + 1)).date_naive();
        out.push((
            format!("filter/expiring-{days}d.html"),
            format!("Keys expiring within {days} days (before {before})"),
            KeyQuery {
                expiring_before: Some(before),
                ..q()
            },
        ));
    }
    out
}

/// Every page path of the site (assets excluded).
pub fn paths(r: &Report) -> Vec<String> {
    let mut out: Vec<String> = ["index.html", "keys.html", "people.html", "timeline.html"]
        .map(String::from)
        .to_vec();
    out.extend(
        Sort::ALL
            .iter()
            .filter(|s| **s != Sort::Name)
            .map(|s| format!("keys-by-{}.html", s.as_str())),
    );
    out.extend(filters(r).into_iter().map(|(p, _, _)| p));
    out.extend(r.keys.iter().map(|k| k.page()));
    out.extend(r.principals.iter().map(|p| p.page()));
    out
}

/// The page at `path` (`""` is the overview). `query` is the live keys page's filter; the
/// static site's filtered lists are pages of their own.
pub fn page(r: &Report, mode: Mode, path: &str, query: &KeyQuery) -> Option<String> {
    let root = root_of(path);
    let cx = Ctx {
        report: r,
        mode,
        root: &root,
    };
    let page = match path {
        "" | "index.html" => html::overview(&cx),
        "keys.html" => html::keys_page(&cx, query, "Keys"),
        "people.html" => html::people_index(&cx),
        "timeline.html" => html::timeline_page(&cx),
        p if p.starts_with("keys-by-") => {
            let s = p.strip_prefix("keys-by-")?.strip_suffix(".html")?;
            let sort = Sort::parse(s)?;
            html::keys_page(
                &cx,
                &KeyQuery {
                    sort,
                    ..KeyQuery::default()
                },
                &format!("Keys by {s}"),
            )
        }
        p if p.starts_with("filter/") => {
            let (_, heading, q) = filters(r).into_iter().find(|(fp, _, _)| fp == p)?;
            html::keys_page(&cx, &q, &heading)
        }
        p if p.starts_with("keys/") || p.starts_with("unmanaged/") => {
            html::key_page(&cx, r.keys.iter().find(|k| k.page() == p)?)
        }
        p if p.starts_with("people/") => {
            html::principal_page(&cx, r.principals.iter().find(|x| x.page() == p)?)
        }
        _ => return None,
    };
    Some(page)
}

/// Every file of the static site: (relative path, contents).
pub fn all_files(r: &Report) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = paths(r)
        .into_iter()
        .filter_map(|p| page(r, Mode::Static, &p, &KeyQuery::default()).map(|c| (p, c)))
        .collect();
    out.push(("assets/report.css".into(), CSS.into()));
    out.push(("assets/report.js".into(), JS.into()));
    out
}

/// Write the static site into `dir` (created if missing; files of an older report are
/// overwritten, others left alone). Returns the number of files written.
pub fn write(dir: &Path, r: &Report) -> std::io::Result<usize> {
    let files = all_files(r);
    for (rel, contents) in &files {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, contents)?;
    }
    Ok(files.len())
}
