//! Rendering the web view to HTML: pure functions from a `Report` to page text. Every piece
//! of data goes through `esc` (names, purposes and labels may be hostile); no inline script
//! and no inline style (the live view's Content-Security-Policy forbids both). Must not read
//! files, the clock or the network.

pub use super::escape::esc;
use super::timeline;
use super::{KeyQuery, KeyRow, Mode, PrincipalKind, PrincipalView, Report, RowStatus, Sort};
use chrono::{DateTime, Utc};
use std::fmt::Write;

/// Which top-level section a page belongs to (for `aria-current`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Overview,
    Keys,
    People,
    Timeline,
    SignIn,
}

/// What every page needs: the report, how it is served, and the way back to the site root.
pub struct Ctx<'a> {
    pub report: &'a Report,
    pub mode: Mode,
    /// `""`, `"../"`, `"../../"`: the relative path from the page to the site root.
    pub root: &'a str,
}

fn date(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d").to_string()
}

fn opt_date(t: Option<DateTime<Utc>>) -> String {
    t.map(date).unwrap_or_else(|| "—".into())
}

fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

/// `<time>` with the full instant in `datetime` and the day as text.
fn time(t: DateTime<Utc>) -> String {
    format!(
        "<time datetime=\"{}\">{}</time>",
        esc(&t.to_rfc3339()),
        date(t)
    )
}

fn days_left(report: &Report, t: DateTime<Utc>) -> String {
    let d = (t - report.generated_at).num_days();
    match d {
        d if d < 0 => format!("{} days ago", -d),
        0 => "today".into(),
        1 => "in 1 day".into(),
        d => format!("in {d} days"),
    }
}

/// The page frame: head, skip link, navigation, main, the how-to-change footer.
pub fn layout(cx: &Ctx, title: &str, section: Section, body: &str) -> String {
    let r = cx.root;
    let mut nav = String::new();
    for (s, href, label) in [
        (Section::Overview, "index.html", "Overview"),
        (Section::Keys, "keys.html", "Keys"),
        (Section::People, "people.html", "People"),
        (Section::Timeline, "timeline.html", "Expiry timeline"),
    ] {
        let current = if s == section {
            " aria-current=\"page\""
        } else {
            ""
        };
        let _ = write!(nav, "<li><a href=\"{r}{href}\"{current}>{label}</a></li>");
    }
    let signout = if cx.mode == Mode::Live && section != Section::SignIn {
        format!(
            "<form class=\"signout\" method=\"post\" action=\"{r}signout\"><button type=\"submit\">Sign out</button></form>"
        )
    } else {
        String::new()
    };
    let how = match cx.mode {
        Mode::Static => "This is a read-only report",
        Mode::Live => "This view is read-only",
    };
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"referrer\" content=\"same-origin\">\n\
         <title>{title} — {site} — keyward</title>\n\
         <link rel=\"stylesheet\" href=\"{r}assets/report.css\">\n\
         <script src=\"{r}assets/report.js\" defer></script>\n</head>\n<body>\n\
         <a class=\"skip\" href=\"#main\">Skip to the content</a>\n\
         <header><p class=\"site\">keyward · {site}</p>\
         <nav aria-label=\"Sections\"><ul>{nav}</ul></nav>{signout}</header>\n\
         <main id=\"main\" tabindex=\"-1\">\n{body}</main>\n\
         <footer><p><strong>How to change things:</strong> {how}. Changes go through pull requests: \
         ask for a new key with <code>keyward request</code>, change a key by editing the YAML file and \
         line its page names, then open a pull request; CI posts the plan and applies it after review.</p>\
         <p>Generated {generated}{commit}. No secret, hash or public key is shown on any page.</p></footer>\n\
         </body>\n</html>\n",
        title = esc(title),
        site = esc(&cx.report.title),
        generated = time(cx.report.generated_at),
        commit = cx
            .report
            .commit
            .as_deref()
            .map(|c| format!(" from commit <code>{}</code>", esc(short(c))))
            .unwrap_or_default(),
    )
}

fn status_badge(s: RowStatus) -> String {
    format!(
        "<span class=\"badge status-{0}\">{0}</span>",
        esc(s.as_str())
    )
}

fn key_link(cx: &Ctx, k: &KeyRow) -> String {
    format!(
        "<a href=\"{}{}\">{}</a>",
        cx.root,
        esc(&k.page()),
        esc(&k.name)
    )
}

/// A principal id as a link to their page (plain text when people.yaml does not have them).
fn who_link(cx: &Ctx, id: &str) -> String {
    match cx.report.principal(id) {
        Some(p) => {
            let name = p
                .name
                .as_deref()
                .filter(|n| *n != id)
                .map(|n| format!(" ({})", esc(n)))
                .unwrap_or_default();
            format!(
                "<a href=\"{}{}\">{}</a>{name}",
                cx.root,
                esc(&p.page()),
                esc(id)
            )
        }
        None => esc(id),
    }
}

fn team_link(cx: &Ctx, id: &str) -> String {
    let page = PrincipalView {
        id: id.to_string(),
        kind: PrincipalKind::Team,
        name: None,
        email: None,
        members: Vec::new(),
        teams: Vec::new(),
        may_grant: None,
        defined_at: None,
    }
    .page();
    format!("<a href=\"{}{}\">team:{}</a>", cx.root, esc(&page), esc(id))
}

fn list_or_dash(items: Vec<String>) -> String {
    if items.is_empty() {
        "—".into()
    } else {
        items.join(", ")
    }
}

// ------------------------------------------------------------------ overview

/// The overview page (`index.html`).
pub fn overview(cx: &Ctx) -> String {
    let r = cx.report;
    let mut b = String::new();
    let _ = writeln!(b, "<h1>Overview</h1>");
    for s in r.stores.iter().filter(|s| s.error.is_some()) {
        let _ = writeln!(
            b,
            "<p class=\"alert\" role=\"alert\">Store <strong>{}</strong> could not be listed: {}. Its keys are missing below.</p>",
            esc(&s.name),
            esc(s.error.as_deref().unwrap_or_default())
        );
    }
    b.push_str(&store_counts(cx));
    b.push_str(&expiring_section(cx));
    b.push_str(&rotation_section(cx));
    b.push_str(&last_use_section(cx));
    b.push_str(&console_section(cx));
    b.push_str(&unmanaged_section(cx));
    let _ = writeln!(
        b,
        "<section aria-labelledby=\"tl\"><h2 id=\"tl\">Expiry timeline</h2>{}<p><a href=\"{}timeline.html\">The timeline with its numbers</a></p></section>",
        timeline::svg(r, "tl-overview"),
        cx.root
    );
    layout(cx, "Overview", Section::Overview, &b)
}

fn store_counts(cx: &Ctx) -> String {
    let r = cx.report;
    let mut b = String::from(
        "<section aria-labelledby=\"per-store\"><h2 id=\"per-store\">Keys per store and environment</h2>\n\
         <table><caption>Keys keyward manages, by status, and keys found in the store that it does not manage</caption>\n\
         <thead><tr><th scope=\"col\">Store</th><th scope=\"col\">Environment</th><th scope=\"col\">Kind</th>",
    );
    for s in RowStatus::ALL {
        let _ = write!(b, "<th scope=\"col\" class=\"num\">{}</th>", s.as_str());
    }
    b.push_str("<th scope=\"col\" class=\"num\">unmanaged</th></tr></thead><tbody>\n");
    for s in &r.stores {
        let mine: Vec<&KeyRow> = r.keys.iter().filter(|k| k.store == s.name).collect();
        let _ = write!(
            b,
            "<tr><th scope=\"row\"><a href=\"{}filter/store-{}.html\">{}</a></th><td>{}</td><td>{}</td>",
            cx.root,
            esc(&super::seg(&s.name)),
            esc(&s.name),
            esc(&s.environment),
            esc(&s.kind)
        );
        for st in RowStatus::ALL {
            let n = mine.iter().filter(|k| k.managed && k.status == st).count();
            let _ = write!(b, "<td class=\"num\">{n}</td>");
        }
        let n = mine.iter().filter(|k| !k.managed).count();
        let _ = writeln!(b, "<td class=\"num\">{n}</td></tr>");
    }
    b.push_str("</tbody></table></section>\n");
    b
}

fn key_list(cx: &Ctx, caption: &str, rows: &[&KeyRow], when: impl Fn(&KeyRow) -> String) -> String {
    let mut b = format!(
        "<table><caption>{}</caption><thead><tr><th scope=\"col\">Key</th><th scope=\"col\">Store</th>\
         <th scope=\"col\">Owner</th><th scope=\"col\">When</th></tr></thead><tbody>\n",
        esc(caption)
    );
    for k in rows {
        let _ = writeln!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            key_link(cx, k),
            esc(&k.store),
            who_link(cx, &k.owner),
            when(k)
        );
    }
    b.push_str("</tbody></table>\n");
    b
}

fn expiring_section(cx: &Ctx) -> String {
    let r = cx.report;
    let mut b = String::from(
        "<section aria-labelledby=\"expiring\"><h2 id=\"expiring\">Expiring soon</h2>\n<ul class=\"cards\">",
    );
    for days in [30, 60, 90] {
        let n = r.expiring_within(days).len();
        let _ = write!(
            b,
            "<li><a href=\"{}filter/expiring-{days}d.html\"><span class=\"big\">{n}</span> within {days} days</a></li>",
            cx.root
        );
    }
    b.push_str("</ul>\n");
    let rows = r.expiring_within(90);
    if rows.is_empty() {
        b.push_str("<p>No active key expires within 90 days.</p>\n");
    } else {
        b.push_str(&key_list(
            cx,
            "Active keys expiring within 90 days",
            &rows,
            |k| {
                k.expires_at
                    .map(|t| format!("{} ({})", time(t), days_left(r, t)))
                    .unwrap_or_default()
            },
        ));
    }
    b.push_str("</section>\n");
    b
}

fn rotation_section(cx: &Ctx) -> String {
    let r = cx.report;
    let rows = r.rotation_due();
    let mut b = format!(
        "<section aria-labelledby=\"rotation\"><h2 id=\"rotation\">Due for rotation</h2>\n\
         <p>Scheduled rotations (<code>rotation.every</code>) due within {} days or overdue; \
         <code>keyward apply</code> rotates them.</p>\n",
        r.due_window_days
    );
    if rows.is_empty() {
        b.push_str("<p>No rotation is due.</p>\n");
    } else {
        b.push_str(&key_list(cx, "Keys due for rotation", &rows, |k| {
            k.rotation_due
                .map(|t| format!("{} ({})", time(t), days_left(r, t)))
                .unwrap_or_default()
        }));
    }
    b.push_str("</section>\n");
    b
}

fn last_use_section(cx: &Ctx) -> String {
    let r = cx.report;
    let knowing: Vec<&str> = r
        .stores
        .iter()
        .filter(|s| s.knows_last_use)
        .map(|s| s.name.as_str())
        .collect();
    let mut b = String::from(
        "<section aria-labelledby=\"unused\"><h2 id=\"unused\">Without a recent use</h2>\n",
    );
    if knowing.is_empty() {
        b.push_str(
            "<p>None of these stores records when a key was last used, so this view cannot tell \
             which keys sit unused.</p>\n",
        );
    } else {
        let since = r.generated_at - chrono::Duration::days(90);
        let rows: Vec<&KeyRow> = r
            .keys
            .iter()
            .filter(|k| knowing.contains(&k.store.as_str()) && k.status == RowStatus::Active)
            .filter(|k| k.last_used.is_none_or(|t| t < since))
            .collect();
        b.push_str(&key_list(
            cx,
            "Active keys not used in 90 days",
            &rows,
            |k| {
                k.last_used
                    .map(|t| format!("last used {}", time(t)))
                    .unwrap_or_else(|| "never used".into())
            },
        ));
    }
    b.push_str("</section>\n");
    b
}

fn console_section(cx: &Ctx) -> String {
    let steps = &cx.report.console_steps;
    let mut b = String::from(
        "<section aria-labelledby=\"console\"><h2 id=\"console\">Pending console steps</h2>\n",
    );
    if steps.is_empty() {
        b.push_str("<p>No console step is waiting for an admin.</p>\n");
    } else {
        b.push_str(
            "<table><caption>Steps an admin does by hand in a vendor console (<code>keyward apply</code> guides them)</caption>\
             <thead><tr><th scope=\"col\">Store</th><th scope=\"col\">Key</th><th scope=\"col\">Step</th><th scope=\"col\">What to do</th></tr></thead><tbody>\n",
        );
        for s in steps {
            let _ = writeln!(
                b,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&s.store),
                esc(&s.key),
                esc(&s.action),
                esc(&s.detail)
            );
        }
        b.push_str("</tbody></table>\n");
    }
    b.push_str("</section>\n");
    b
}

fn unmanaged_section(cx: &Ctx) -> String {
    let rows: Vec<&KeyRow> = cx.report.keys.iter().filter(|k| !k.managed).collect();
    let mut b = String::from(
        "<section aria-labelledby=\"unmanaged\"><h2 id=\"unmanaged\">Unmanaged keys found in stores</h2>\n",
    );
    if rows.is_empty() {
        b.push_str("<p>Every key in the stores is managed by keyward.</p>\n");
    } else {
        b.push_str(
            "<p>Made outside keyward (in a console); keyward never touches them. Adopt them into YAML with \
             <code>keyward import --store STORE</code>.</p>\n",
        );
        b.push_str(&key_list(cx, "Unmanaged keys", &rows, |k| {
            format!(
                "{} · expires {}",
                esc(k.status.as_str()),
                opt_date(k.expires_at)
            )
        }));
    }
    b.push_str("</section>\n");
    b
}

// ------------------------------------------------------------------ keys table

/// Values offered by the keys table's filters (each sorted, deduplicated).
struct Choices {
    stores: Vec<String>,
    owners: Vec<String>,
    scopes: Vec<String>,
    labels: Vec<String>,
}

fn choices(r: &Report) -> Choices {
    use std::collections::BTreeSet;
    let set = |f: &dyn Fn(&KeyRow) -> Vec<String>| -> Vec<String> {
        r.keys
            .iter()
            .flat_map(f)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    };
    Choices {
        stores: r.stores.iter().map(|s| s.name.clone()).collect(),
        owners: set(&|k| vec![k.owner.clone()]),
        scopes: set(&|k| k.scopes.clone()),
        labels: set(&|k| k.labels.iter().map(|(a, b)| format!("{a}={b}")).collect()),
    }
}

fn select(name: &str, label: &str, values: &[String], chosen: Option<&str>) -> String {
    let mut b = format!(
        "<label for=\"f-{name}\">{label}</label><select id=\"f-{name}\" name=\"{name}\"><option value=\"\">any</option>"
    );
    for v in values {
        let sel = if chosen == Some(v.as_str()) {
            " selected"
        } else {
            ""
        };
        let _ = write!(b, "<option value=\"{0}\"{sel}>{0}</option>", esc(v));
    }
    b.push_str("</select>");
    b
}

/// The filter form. Live: a GET form the server answers. Static: the same form, hidden
/// until the script shows it and filters rows in place (a static site cannot answer queries).
fn filter_form(cx: &Ctx, q: &KeyQuery) -> String {
    let c = choices(cx.report);
    let statuses: Vec<String> = RowStatus::ALL.iter().map(|s| s.as_str().into()).collect();
    let label = q.label.as_ref().map(|(a, b)| format!("{a}={b}"));
    let hidden = if cx.mode == Mode::Static {
        " hidden"
    } else {
        ""
    };
    let mut b = format!(
        "<form id=\"filters\" class=\"filters\" method=\"get\" action=\"{}keys.html\" data-mode=\"{}\"{hidden}>\
         <fieldset><legend>Filter the keys</legend>",
        cx.root,
        if cx.mode == Mode::Static {
            "static"
        } else {
            "live"
        }
    );
    b.push_str(&select("store", "Store", &c.stores, q.store.as_deref()));
    b.push_str(&select("owner", "Owner", &c.owners, q.owner.as_deref()));
    b.push_str(&select(
        "status",
        "Status",
        &statuses,
        q.status.map(RowStatus::as_str),
    ));
    b.push_str(&select("scope", "Scope", &c.scopes, q.scope.as_deref()));
    b.push_str(&select("label", "Label", &c.labels, label.as_deref()));
    let _ = write!(
        b,
        "<label for=\"f-expiring_before\">Expiring before</label>\
         <input type=\"date\" id=\"f-expiring_before\" name=\"expiring_before\" value=\"{}\">\
         <input type=\"hidden\" name=\"sort\" value=\"{}\">\
         <button type=\"submit\">Apply filters</button> <a href=\"{}keys.html\">Clear</a></fieldset></form>",
        q.expiring_before.map(|d| d.to_string()).unwrap_or_default(),
        q.sort.as_str(),
        cx.root
    );
    b.push('\n');
    b
}

/// Without JavaScript on the static site: links to the pre-rendered filtered pages.
fn filter_links(cx: &Ctx) -> String {
    let c = choices(cx.report);
    let statuses: Vec<String> = RowStatus::ALL.iter().map(|s| s.as_str().into()).collect();
    let mut b = String::from(
        "<nav class=\"filter-links\" aria-label=\"Filtered lists\"><h2>Filtered lists</h2>\n<dl>",
    );
    let windows: Vec<String> = [30, 60, 90, 365].iter().map(|d| format!("{d}d")).collect();
    for (kind, title, values) in [
        ("store", "Store", &c.stores),
        ("owner", "Owner", &c.owners),
        ("status", "Status", &statuses),
        ("scope", "Scope", &c.scopes),
        ("label", "Label", &c.labels),
        ("expiring", "Expiring within", &windows),
    ] {
        let links: Vec<String> = values
            .iter()
            .map(|v| {
                format!(
                    "<a href=\"{}filter/{kind}-{}.html\">{}</a>",
                    cx.root,
                    esc(&super::seg(v)),
                    esc(v)
                )
            })
            .collect();
        let _ = write!(b, "<dt>{title}</dt><dd>{}</dd>", list_or_dash(links));
    }
    b.push_str("</dl></nav>\n");
    b
}

/// The href of a sort link: a pre-rendered page (static) or the same query sorted (live).
fn sort_href(cx: &Ctx, q: &KeyQuery, s: Sort) -> String {
    match cx.mode {
        Mode::Static if s == Sort::Name => format!("{}keys.html", cx.root),
        Mode::Static => format!("{}keys-by-{}.html", cx.root, s.as_str()),
        Mode::Live => {
            let mut parts = Vec::new();
            let mut push = |k: &str, v: Option<String>| {
                if let Some(v) = v {
                    parts.push(format!("{k}={}", query_escape(&v)));
                }
            };
            push("store", q.store.clone());
            push("owner", q.owner.clone());
            push("status", q.status.map(|s| s.as_str().to_string()));
            push("scope", q.scope.clone());
            push("label", q.label.as_ref().map(|(a, b)| format!("{a}={b}")));
            push("expiring_before", q.expiring_before.map(|d| d.to_string()));
            push("sort", Some(s.as_str().to_string()));
            format!("{}keys.html?{}", cx.root, parts.join("&"))
        }
    }
}

/// Percent-encode a query value (everything but unreserved characters).
pub fn query_escape(v: &str) -> String {
    let mut out = String::new();
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The keys table itself, with the data the script filters and sorts on.
pub fn keys_table(cx: &Ctx, q: &KeyQuery, rows: &[&KeyRow]) -> String {
    let mut b = format!(
        "<table id=\"keys\" class=\"keys\"><caption>{} of {} keys{}</caption><thead><tr>",
        rows.len(),
        cx.report.keys.len(),
        if q.is_filtered() { " (filtered)" } else { "" }
    );
    for (label, sort) in [
        ("Name", Some(Sort::Name)),
        ("Store", Some(Sort::Store)),
        ("Owner", Some(Sort::Owner)),
        ("Status", Some(Sort::Status)),
        ("Scopes", None),
        ("Expires", Some(Sort::Expires)),
        ("Rotation due", None),
        ("Last used", None),
        ("Labels", None),
    ] {
        match sort {
            Some(s) => {
                let aria = if q.sort == s {
                    " aria-sort=\"ascending\""
                } else {
                    ""
                };
                let _ = write!(
                    b,
                    "<th scope=\"col\"{aria} data-sort=\"{}\"><a href=\"{}\">{label}</a></th>",
                    s.as_str(),
                    esc(&sort_href(cx, q, s))
                );
            }
            None => {
                let _ = write!(b, "<th scope=\"col\">{label}</th>");
            }
        }
    }
    b.push_str("</tr></thead><tbody>\n");
    for k in rows {
        b.push_str(&key_tr(cx, k));
    }
    b.push_str("</tbody></table>\n<p id=\"no-match\" hidden>No key matches these filters.</p>\n");
    b
}

fn key_tr(cx: &Ctx, k: &KeyRow) -> String {
    let labels: Vec<String> = k.labels.iter().map(|(a, b)| format!("{a}={b}")).collect();
    let managed = if k.managed {
        String::new()
    } else {
        " <span class=\"badge unmanaged\">unmanaged</span>".into()
    };
    format!(
        "<tr data-name=\"{name}\" data-store=\"{store}\" data-owner=\"{owner}\" data-status=\"{status}\" \
         data-scopes=\"{scopes}\" data-labels=\"{labels_attr}\" data-expires=\"{expires}\">\
         <th scope=\"row\">{link}{managed}</th><td>{store}</td><td>{owner_link}</td><td>{badge}</td>\
         <td>{scopes}</td><td>{expires_cell}</td><td>{rot}</td><td>{last}</td><td>{labels_cell}</td></tr>\n",
        name = esc(&k.name),
        store = esc(&k.store),
        owner = esc(&k.owner),
        status = esc(k.status.as_str()),
        scopes = esc(&k.scopes.join(" ")),
        labels_attr = esc(&labels.join(" ")),
        expires = k.expires_at.map(date).unwrap_or_default(),
        link = key_link(cx, k),
        owner_link = who_link(cx, &k.owner),
        badge = status_badge(k.status),
        expires_cell = k.expires_at.map(time).unwrap_or_else(|| "never".into()),
        rot = k.rotation_due.map(time).unwrap_or_else(|| "—".into()),
        last = last_use_text(cx, k),
        labels_cell = esc(&list_or_dash(labels)),
    )
}

/// The keys page (`keys.html`, a filtered page, or the live page for a query).
pub fn keys_page(cx: &Ctx, q: &KeyQuery, heading: &str) -> String {
    let rows = q.apply(&cx.report.keys);
    let mut b = format!("<h1>{}</h1>\n", esc(heading));
    b.push_str(&filter_form(cx, q));
    if cx.mode == Mode::Static {
        b.push_str(&filter_links(cx));
    }
    b.push_str(&keys_table(cx, q, &rows));
    layout(cx, heading, Section::Keys, &b)
}

// ------------------------------------------------------------------ a key

/// The page of one key.
pub fn key_page(cx: &Ctx, k: &KeyRow) -> String {
    let mut b = format!(
        "<h1>{} <span class=\"sub\">in {}</span></h1>\n<p>{}{}{}</p>\n",
        esc(&k.name),
        esc(&k.store),
        status_badge(k.status),
        if k.managed {
            ""
        } else {
            " <span class=\"badge unmanaged\">unmanaged</span>"
        },
        if k.protected {
            " <span class=\"badge protected\">protected</span>"
        } else {
            ""
        }
    );
    b.push_str(&how_to_change_key(k));
    b.push_str(&key_facts(cx, k));
    b.push_str(&generations_table(k));
    b.push_str(&events_table(k));
    b.push_str(&commits_table(k));
    layout(cx, &k.name, Section::Keys, &b)
}

fn how_to_change_key(k: &KeyRow) -> String {
    let inner = match (&k.defined_at, k.managed) {
        (Some(d), _) => format!(
            "Defined in <code>{}</code> line {}: edit it there and open a pull request \
             (<code>keyward plan</code> shows what the change does).",
            esc(&d.file),
            d.line
        ),
        (None, true) => format!(
            "No longer in the spec: the next <code>keyward apply</code> revokes it. To keep it, add it back \
             to a file under <code>keys/</code> (<code>keyward request --store {}</code> scaffolds one).",
            esc(&k.store)
        ),
        (None, false) => format!(
            "Made outside keyward: adopt it into YAML with <code>keyward import --store {}</code>, \
             then change it through pull requests.",
            esc(&k.store)
        ),
    };
    format!("<p class=\"howto\"><strong>How to change this key:</strong> {inner}</p>\n")
}

/// A key's last valid use as the view shows it: the time, `never used` in a store that
/// keeps usage, or why it is not known (a console says so in its own words).
fn last_use_text(cx: &Ctx, k: &KeyRow) -> String {
    let view = cx.report.stores.iter().find(|s| s.name == k.store);
    match (k.last_used, view) {
        (Some(t), _) => time(t),
        (None, Some(v)) if v.knows_last_use => "never used".into(),
        (None, Some(v)) if v.kind == "console" => "not visible in the console".into(),
        _ => "not recorded by this store".into(),
    }
}

fn key_facts(cx: &Ctx, k: &KeyRow) -> String {
    let mut rows: Vec<(&str, String)> = vec![
        ("Store", esc(&k.store)),
        ("Environment", esc(&k.environment)),
        (
            "Key id",
            k.key_id
                .as_deref()
                .map(esc)
                .unwrap_or_else(|| "not created yet".into()),
        ),
        ("Owner", who_link(cx, &k.owner)),
        (
            "Purpose",
            k.purpose.as_deref().map(esc).unwrap_or_else(|| "—".into()),
        ),
        ("Scopes", esc(&list_or_dash(k.scopes.clone()))),
        (
            "Labels",
            esc(&list_or_dash(
                k.labels.iter().map(|(a, b)| format!("{a}={b}")).collect(),
            )),
        ),
        (
            "Expires",
            match k.expires_at {
                Some(t) => format!("{} ({})", time(t), days_left(cx.report, t)),
                None => "never".into(),
            } + &k
                .expiry_rule
                .as_deref()
                .map(|r| format!(" · <code>{}</code>", esc(r)))
                .unwrap_or_default(),
        ),
        ("Rotation", rotation_text(cx, k)),
        ("Issued", opt_date(k.issued_at)),
        (
            "Generation",
            k.generation
                .map(|g| g.to_string())
                .unwrap_or_else(|| "—".into()),
        ),
        (
            "Quota",
            k.quota_per_day
                .map(|q| format!("{q} calls a day"))
                .unwrap_or_else(|| "none".into()),
        ),
        (
            "Recipients",
            list_or_dash(k.recipients.iter().map(|r| who_link(cx, r)).collect()),
        ),
        ("Last used", last_use_text(cx, k)),
    ];
    if let Some(t) = k.previous_valid_until {
        rows.push(("Previous secret valid until", time(t)));
    }
    let mut b = String::from("<dl class=\"facts\">\n");
    for (dt, dd) in rows {
        let _ = writeln!(b, "<dt>{dt}</dt><dd>{dd}</dd>");
    }
    b.push_str("</dl>\n");
    b
}

fn rotation_text(cx: &Ctx, k: &KeyRow) -> String {
    let every = k
        .rotation_every
        .as_deref()
        .map(|e| format!("every {}", esc(e)))
        .unwrap_or_else(|| "on demand (bump <code>rotation.generation</code>)".into());
    let grace = k
        .rotation_grace
        .as_deref()
        .map(|g| format!(", grace {}", esc(g)))
        .unwrap_or_default();
    let due = k
        .rotation_due
        .map(|t| format!("; next due {} ({})", time(t), days_left(cx.report, t)))
        .unwrap_or_default();
    format!("{every}{grace}{due}")
}

fn generations_table(k: &KeyRow) -> String {
    let mut b =
        String::from("<section aria-labelledby=\"gens\"><h2 id=\"gens\">Generations</h2>\n");
    if k.generations.is_empty() {
        b.push_str("<p>No delivery manifest for this key in the outbox.</p></section>\n");
        return b;
    }
    b.push_str(
        "<table><caption>Each secret delivered, from <code>deliveries/</code> manifests</caption><thead><tr>\
         <th scope=\"col\">Generation</th><th scope=\"col\">Status</th><th scope=\"col\">Delivered</th>\
         <th scope=\"col\">Expires</th><th scope=\"col\">Previous valid until</th><th scope=\"col\">Commit</th>\
         <th scope=\"col\">Recipients</th></tr></thead><tbody>\n",
    );
    for g in &k.generations {
        let _ = writeln!(
            b,
            "<tr><td>g{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            g.generation,
            esc(&g.status),
            time(g.created_at),
            opt_date(g.expires_at),
            opt_date(g.previous_valid_until),
            g.commit
                .as_deref()
                .map(|c| format!("<code>{}</code>", esc(short(c))))
                .unwrap_or_else(|| "—".into()),
            esc(&list_or_dash(g.recipients.clone()))
        );
    }
    b.push_str("</tbody></table></section>\n");
    b
}

fn events_table(k: &KeyRow) -> String {
    let mut b = String::from("<section aria-labelledby=\"events\"><h2 id=\"events\">Events</h2>\n");
    if k.events.is_empty() {
        b.push_str("<p>The store has no event for this key.</p></section>\n");
        return b;
    }
    b.push_str(
        "<table id=\"key-events\"><caption>What happened to this key in the store, newest first</caption><thead><tr>\
         <th scope=\"col\">When</th><th scope=\"col\">Who</th><th scope=\"col\">What</th><th scope=\"col\">Commit</th>\
         </tr></thead><tbody>\n",
    );
    for e in &k.events {
        let _ = writeln!(
            b,
            "<tr><td><time datetime=\"{}\">{}</time></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&e.at.to_rfc3339()),
            e.at.format("%Y-%m-%d %H:%M UTC"),
            esc(&e.who),
            esc(&e.action),
            e.commit
                .as_deref()
                .map(|c| format!("<code>{}</code>", esc(short(c))))
                .unwrap_or_else(|| "—".into())
        );
    }
    b.push_str("</tbody></table></section>\n");
    b
}

fn commits_table(k: &KeyRow) -> String {
    let mut b = String::from(
        "<section aria-labelledby=\"commits\"><h2 id=\"commits\">Commits that changed its YAML</h2>\n",
    );
    let Some(d) = &k.defined_at else {
        b.push_str("<p>Not defined in the spec.</p></section>\n");
        return b;
    };
    if k.commits.is_empty() {
        let _ = writeln!(
            b,
            "<p>No commit of <code>{}</code> found (not in git, or not committed yet).</p></section>",
            esc(&d.file)
        );
        return b;
    }
    let _ = write!(
        b,
        "<table><caption>Commits of <code>{}</code>, newest first</caption><thead><tr><th scope=\"col\">Commit</th>\
         <th scope=\"col\">Date</th><th scope=\"col\">Author</th><th scope=\"col\">Summary</th></tr></thead><tbody>",
        esc(&d.file)
    );
    b.push('\n');
    for c in &k.commits {
        let _ = writeln!(
            b,
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(short(&c.id)),
            time(c.at),
            esc(&c.author),
            esc(&c.summary)
        );
    }
    b.push_str("</tbody></table></section>\n");
    b
}

// ------------------------------------------------------------------ people

/// The list of people, teams and services (`people.html`).
pub fn people_index(cx: &Ctx) -> String {
    let mut b = String::from("<h1>People, teams and services</h1>\n");
    if cx.report.principals.is_empty() {
        b.push_str("<p>No people.yaml was read for this view.</p>\n");
    }
    for kind in [
        PrincipalKind::Person,
        PrincipalKind::Team,
        PrincipalKind::Service,
    ] {
        let ps: Vec<&PrincipalView> = cx
            .report
            .principals
            .iter()
            .filter(|p| p.kind == kind)
            .collect();
        if ps.is_empty() {
            continue;
        }
        let _ = writeln!(
            b,
            "<h2>{}s</h2><ul class=\"people\">",
            capital(kind.as_str())
        );
        for p in ps {
            let owns = cx
                .report
                .keys
                .iter()
                .filter(|k| owned_by(cx.report, p, k))
                .count();
            let _ = writeln!(
                b,
                "<li><a href=\"{}{}\">{}</a>{} — owns {owns}</li>",
                cx.root,
                esc(&p.page()),
                esc(&p.id),
                p.name
                    .as_deref()
                    .map(|n| format!(" ({})", esc(n)))
                    .unwrap_or_default()
            );
        }
        b.push_str("</ul>\n");
    }
    layout(cx, "People", Section::People, &b)
}

fn capital(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

fn owned_by(r: &Report, p: &PrincipalView, k: &KeyRow) -> bool {
    match p.kind {
        PrincipalKind::Team => p.members.contains(&k.owner),
        _ => k.owner == p.id && r.principal(&k.owner).is_some(),
    }
}

fn received_by(p: &PrincipalView, k: &KeyRow) -> bool {
    match p.kind {
        PrincipalKind::Team => k.recipients.iter().any(|r| p.members.contains(r)),
        _ => k.recipients.contains(&p.id),
    }
}

/// The page of one person, team or service: what they own, receive and may grant.
pub fn principal_page(cx: &Ctx, p: &PrincipalView) -> String {
    let title = format!("{} {}", p.kind.as_str(), p.id);
    let mut b = format!(
        "<h1>{}{}</h1>\n<dl class=\"facts\">\n<dt>Kind</dt><dd>{}</dd>\n",
        esc(&p.id),
        p.name
            .as_deref()
            .map(|n| format!(" <span class=\"sub\">{}</span>", esc(n)))
            .unwrap_or_default(),
        p.kind.as_str()
    );
    if let Some(e) = &p.email {
        let _ = writeln!(b, "<dt>Email</dt><dd>{}</dd>", esc(e));
    }
    if p.kind == PrincipalKind::Team {
        let m: Vec<String> = p.members.iter().map(|m| who_link(cx, m)).collect();
        let _ = writeln!(b, "<dt>Members</dt><dd>{}</dd>", list_or_dash(m));
    } else {
        let t: Vec<String> = p.teams.iter().map(|t| team_link(cx, t)).collect();
        let _ = writeln!(b, "<dt>Teams</dt><dd>{}</dd>", list_or_dash(t));
    }
    if p.kind == PrincipalKind::Person {
        let grant = match &p.may_grant {
            Some(g) => esc(&list_or_dash(g.clone())),
            None => "any scope the catalogue has (no <code>may_grant</code> bound)".into(),
        };
        let _ = writeln!(b, "<dt>May grant</dt><dd>{grant}</dd>");
    }
    let howto = match &p.defined_at {
        Some(d) => format!("defined in <code>{}</code> line {}", esc(&d.file), d.line),
        None => "defined in <code>people.yaml</code>".into(),
    };
    let _ = writeln!(
        b,
        "<dt>Where</dt><dd>{howto}; edit it there and open a pull request</dd>\n</dl>"
    );
    let owns: Vec<&KeyRow> = cx
        .report
        .keys
        .iter()
        .filter(|k| owned_by(cx.report, p, k))
        .collect();
    let receives: Vec<&KeyRow> = cx
        .report
        .keys
        .iter()
        .filter(|k| received_by(p, k))
        .collect();
    let verb = if p.kind == PrincipalKind::Team {
        "Its members own"
    } else {
        "Owns"
    };
    let _ = writeln!(b, "<h2>{verb}</h2>");
    b.push_str(&small_keys(cx, &owns));
    let verb = if p.kind == PrincipalKind::Team {
        "Its members receive"
    } else {
        "Receives"
    };
    let _ = writeln!(b, "<h2>{verb}</h2>");
    b.push_str(&small_keys(cx, &receives));
    layout(cx, &title, Section::People, &b)
}

fn small_keys(cx: &Ctx, rows: &[&KeyRow]) -> String {
    if rows.is_empty() {
        return "<p>No key.</p>\n".into();
    }
    let mut b = String::from(
        "<table><thead><tr><th scope=\"col\">Key</th><th scope=\"col\">Store</th><th scope=\"col\">Status</th>\
         <th scope=\"col\">Scopes</th><th scope=\"col\">Expires</th></tr></thead><tbody>\n",
    );
    for k in rows {
        let _ = writeln!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            key_link(cx, k),
            esc(&k.store),
            status_badge(k.status),
            esc(&list_or_dash(k.scopes.clone())),
            opt_date(k.expires_at)
        );
    }
    b.push_str("</tbody></table>\n");
    b
}

// ------------------------------------------------------------------ timeline and sign-in

/// The expiry timeline page: the chart and the same numbers as a table.
pub fn timeline_page(cx: &Ctx) -> String {
    let mut b = String::from(
        "<h1>Expiry timeline</h1>\n<p>Active keys expiring per week over the next year, by store.</p>\n",
    );
    b.push_str(&timeline::svg(cx.report, "tl-page"));
    b.push_str(&timeline::table(cx.report));
    layout(cx, "Expiry timeline", Section::Timeline, &b)
}

/// The live view's sign-in form (POSTs the token; it never goes into a URL).
pub fn signin_page(cx: &Ctx, problem: Option<&str>) -> String {
    let mut b = String::from("<h1>Sign in</h1>\n");
    if let Some(p) = problem {
        let _ = writeln!(
            b,
            "<p class=\"alert\" role=\"alert\" id=\"signin-error\">{}</p>",
            esc(p)
        );
    }
    b.push_str(
        "<p>Sign in with a <strong>read</strong> token of this store (<code>keyward token create NAME --role read</code> \
         on the server). Verify-only tokens are refused.</p>\n\
         <form id=\"signin\" method=\"post\" action=\"signin\">\
         <label for=\"token\">Read token</label> \
         <input type=\"password\" id=\"token\" name=\"token\" autocomplete=\"current-password\" required> \
         <button type=\"submit\">Sign in</button></form>\n",
    );
    layout(cx, "Sign in", Section::SignIn, &b)
}
