//! Unit tests of the web view model and its HTML (snapshots with a fixed clock).

use super::html::esc;
use super::*;
use crate::diff::tests::{key, live_from, now, spec};
use crate::spec::{Expiry, Span};
use chrono::Duration;

/// A report over two stores: a few managed keys with events and a manifest, a planned key,
/// and a hostile unmanaged key made "in a console".
pub(crate) fn fixture() -> Report {
    let mut ill = key("prod", "ill-lookup", &["bibs:read", "users:read"]);
    ill.expiry = Expiry::At(now() + Duration::days(20));
    ill.rotation.every = Some(Span::days(90));
    ill.labels.insert("ticket".into(), "LSIS-1234".into());
    ill.recipients.insert("svc".into());
    ill.location = crate::diag::Location::new("keys/ill.yaml", 4, 5);
    let mut reports = key("sbx", "reports", &["analytics:read"]);
    reports.owner = "asmith".into();
    reports.expiry = Expiry::At(now() + Duration::days(75));
    let mut later = key("prod", "course-feed", &["courses:read"]);
    later.expiry = Expiry::At(now() + Duration::days(200));
    let planned = key("sbx", "new-one", &["bibs:read"]);
    let s = spec(vec![ill.clone(), reports.clone(), later.clone(), planned]);
    let issued = now() - Duration::days(80);
    let mut hostile = live_from(&s, &later, "CONSOLE1", issued);
    hostile.name = "<script>alert(1)</script>".into();
    hostile.owner = "<b>mallory</b>".into();
    hostile.purpose = Some("\"><img src=x onerror=alert(2)>".into());
    hostile.labels = [("x'y".to_string(), "<i>".to_string())].into();
    hostile.managed_by = None;
    hostile.expires_at = Some(now() + Duration::days(40));
    let prod = vec![
        live_from(&s, &ill, "ID1", issued),
        live_from(&s, &later, "ID3", issued),
        hostile,
    ];
    let sbx = vec![live_from(&s, &reports, "ID2", now() - Duration::days(3))];
    let view = |n: &str, env: &str| StoreView {
        name: n.into(),
        environment: env.into(),
        kind: "sqlite".into(),
        error: None,
        // prod keeps usage (what `keyward serve` counted), sbx does not.
        knows_last_use: n == "prod",
    };
    let event = |seq: i64, action: &str, id: &str, name: &str| Event {
        seq,
        at: issued + Duration::minutes(seq),
        who: "ci@example.edu".into(),
        action: action.into(),
        key_id: Some(id.into()),
        key_name: Some(name.into()),
        commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
        detail: serde_json::json!({}),
    };
    let manifest: crate::deliver::Manifest = serde_json::from_value(serde_json::json!({
        "manifest_version": 1, "key_id": "ID1", "name": "ill-lookup", "store": "prod",
        "environment": "production", "generation": 1, "created_at": issued,
        "expires_at": now() + Duration::days(20), "previous_valid_until": null,
        "commit": "0123456789abcdef0123456789abcdef01234567", "status": "active",
        "recipients": [{"id": "jdoe", "kind": "person", "fingerprints": ["sha256:feedfacefeedface"],
                        "file": "jdoe.age", "sha256": "ab".repeat(32)}]
    }))
    .expect("manifest");
    let inputs = Inputs {
        title: "library".into(),
        commit: Some("89abcdef0123456789abcdef0123456789abcdef".into()),
        stores: vec![
            (view("prod", "production"), prod),
            (view("sbx", "sandbox"), sbx),
        ],
        events: [
            (
                "prod".to_string(),
                vec![
                    event(1, "create", "ID1", "ill-lookup"),
                    event(2, "create", "ID3", "course-feed"),
                ],
            ),
            (
                "sbx".to_string(),
                vec![event(3, "create", "ID2", "reports")],
            ),
        ]
        .into(),
        manifests: vec![manifest],
        history: [(
            "keys/ill.yaml".to_string(),
            vec![CommitInfo {
                id: "fedcba9876543210fedcba9876543210fedcba98".into(),
                at: issued - Duration::days(1),
                author: "Jane <Doe>".into(),
                summary: "ill-lookup: ask for users:read".into(),
            }],
        )]
        .into(),
        console_steps: vec![ConsoleStep {
            store: "openathens".into(),
            key: "ezproxy-auth".into(),
            action: "create".into(),
            detail: "the next keyward apply guides it (new key)".into(),
        }],
        last_used: [(
            "prod".to_string(),
            [("ID1".to_string(), now() - Duration::days(2))].into(),
        )]
        .into(),
    };
    build(Some(&s), inputs, now())
}

fn all_pages(r: &Report) -> Vec<(String, String)> {
    site::all_files(r)
}

#[test]
fn escaping_covers_the_five_characters() {
    assert_eq!(
        esc(r#"<a href="x">'&'</a>"#),
        "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
    );
    assert_eq!(esc("plain-text"), "plain-text");
}

#[test]
fn hostile_names_are_escaped_on_every_page_and_paths_stay_safe() {
    let r = fixture();
    let pages = all_pages(&r);
    assert!(pages.len() > 20, "{}", pages.len());
    for (path, html) in &pages {
        assert!(!path.contains(".."), "{path}");
        assert!(!path.contains('<') && !path.contains('\''), "{path}");
        if path.ends_with(".js") || path.ends_with(".css") {
            continue;
        }
        assert!(!html.contains("<script>alert"), "{path}");
        assert!(!html.contains("<img"), "{path}");
        assert!(!html.contains("<b>mallory"), "{path}");
        assert!(!html.contains("<i>"), "{path}");
        // The only scripts are the embedded file.
        assert_eq!(html.matches("<script").count(), 1, "{path}");
        assert!(!html.contains(" style="), "{path}");
    }
    let overview = &pages.iter().find(|(p, _)| p == "index.html").unwrap().1;
    assert!(overview.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    let page = pages
        .iter()
        .find(|(p, _)| p.starts_with("unmanaged/prod/"))
        .expect("the unmanaged key's page");
    assert_eq!(page.0, "unmanaged/prod/CONSOLE1.html");
    assert!(
        page.1
            .contains("&quot;&gt;&lt;img src=x onerror=alert(2)&gt;")
    );
    assert!(page.1.contains("keyward import --store prod"));
    assert_eq!(seg("../x/<y>"), "~2E~2E~2Fx~2F~3Cy~3E");
}

#[test]
fn no_public_key_fingerprint_or_hash_on_any_page() {
    let r = fixture();
    for (path, html) in all_pages(&r) {
        for needle in [
            "age1jdoe",
            "age1svc",
            "feedface",
            &"ab".repeat(32),
            "sha256:",
        ] {
            assert!(!html.contains(needle), "{needle} on {path}");
        }
    }
}

#[test]
fn filters_and_sorts_narrow_and_order_the_table() {
    let r = fixture();
    let names = |q: &KeyQuery| -> Vec<String> {
        q.apply(&r.keys)
            .iter()
            .map(|k| format!("{}/{}", k.store, k.name))
            .collect()
    };
    let all = KeyQuery::default();
    assert_eq!(names(&all).len(), 5);
    let q = KeyQuery {
        store: Some("sbx".into()),
        ..KeyQuery::default()
    };
    assert_eq!(names(&q), ["sbx/new-one", "sbx/reports"]);
    let q = KeyQuery {
        owner: Some("asmith".into()),
        ..KeyQuery::default()
    };
    assert_eq!(names(&q), ["sbx/reports"]);
    let q = KeyQuery {
        status: Some(RowStatus::Planned),
        ..KeyQuery::default()
    };
    assert_eq!(names(&q), ["sbx/new-one"]);
    let q = KeyQuery {
        scope: Some("users:read".into()),
        ..KeyQuery::default()
    };
    assert_eq!(names(&q), ["prod/ill-lookup"]);
    let q = KeyQuery::from_pairs([("label", "ticket=LSIS-1234"), ("bogus", "1"), ("owner", "")]);
    assert_eq!(names(&q), ["prod/ill-lookup"]);
    let before = (now() + Duration::days(50)).date_naive().to_string();
    let q = KeyQuery::from_pairs([("expiring_before", before.as_str()), ("sort", "expires")]);
    assert_eq!(
        names(&q),
        ["prod/ill-lookup", "prod/<script>alert(1)</script>"]
    );
    let q = KeyQuery::from_pairs([("sort", "expires")]);
    let sorted = names(&q);
    assert_eq!(sorted.first().map(String::as_str), Some("prod/ill-lookup"));
    assert_eq!(
        sorted.last().map(String::as_str),
        Some("prod/course-feed"),
        "{sorted:?}"
    );
    assert!(!KeyQuery::from_pairs([("sort", "owner")]).is_filtered());
}

#[test]
fn the_model_merges_spec_store_manifests_events_and_history() {
    let r = fixture();
    let ill = r.keys.iter().find(|k| k.name == "ill-lookup").unwrap();
    assert_eq!(ill.status, RowStatus::Active);
    assert_eq!(ill.recipients, ["jdoe", "svc"]);
    assert_eq!(ill.generations.len(), 1);
    assert_eq!(ill.generations[0].recipients, ["jdoe"]);
    assert_eq!(ill.events.len(), 1);
    assert_eq!(ill.commits.len(), 1);
    assert_eq!(ill.defined_at.as_ref().map(|d| d.line), Some(4));
    assert_eq!(r.expiring_within(30).len(), 1);
    assert_eq!(r.expiring_within(60).len(), 2);
    assert_eq!(r.expiring_within(90).len(), 3);
    // Rotation every 90d, issued 80 days ago: due in 10 days, but the key expires in 20.
    assert_eq!(r.rotation_due().len(), 1);
    let counts = timeline::counts(&r);
    let prod: usize = counts[0].1.iter().sum();
    assert_eq!((counts[0].0.as_str(), prod), ("prod", 3));
}

#[test]
fn the_live_keys_page_filters_on_the_server() {
    let r = fixture();
    let q = KeyQuery::from_pairs([("store", "sbx")]);
    let html = site::page(&r, Mode::Live, "keys.html", &q).unwrap();
    assert!(html.contains("2 of 5 keys (filtered)"));
    assert!(html.contains("action=\"signout\""));
    assert!(!html.contains("ill-lookup.html"));
    assert!(site::page(&r, Mode::Live, "nope.html", &q).is_none());
    assert!(site::page(&r, Mode::Live, "keys/../index.html", &q).is_none());
}

#[test]
fn each_key_shows_its_last_use_or_why_it_is_not_known() {
    let mut r = fixture();
    let ill = r.keys.iter().find(|k| k.name == "ill-lookup").unwrap();
    assert_eq!(ill.last_used, Some(now() - Duration::days(2)));
    let q = KeyQuery::default();
    let page = site::page(&r, Mode::Static, "keys/prod/ill-lookup.html", &q).unwrap();
    let when = (now() - Duration::days(2)).format("%Y-%m-%d").to_string();
    assert!(
        page.contains("<dt>Last used</dt><dd><time datetime="),
        "{page}"
    );
    assert!(page.contains(&when), "{page}");
    let keys = site::page(&r, Mode::Static, "keys.html", &q).unwrap();
    let row = |name: &str| {
        keys.lines()
            .find(|l| l.contains(&format!("data-name=\"{name}\"")))
            .unwrap_or_else(|| panic!("{name} in {keys}"))
            .to_owned()
    };
    assert!(row("ill-lookup").contains(&when), "{keys}");
    assert!(row("course-feed").contains("<td>never used</td>"), "{keys}");
    assert!(
        row("reports").contains("<td>not recorded by this store</td>"),
        "{keys}"
    );
    r.stores.iter_mut().find(|s| s.name == "sbx").unwrap().kind = "console".into();
    let keys = site::page(&r, Mode::Static, "keys.html", &q).unwrap();
    let line = keys
        .lines()
        .find(|l| l.contains("data-name=\"reports\""))
        .unwrap();
    assert!(
        line.contains("<td>not visible in the console</td>"),
        "{keys}"
    );
}

#[test]
fn html_snapshots() {
    let r = fixture();
    let q = KeyQuery::default();
    for (name, path) in [
        ("overview", "index.html"),
        ("keys", "keys.html"),
        ("key", "keys/prod/ill-lookup.html"),
        ("person", "people/person-jdoe.html"),
        ("timeline", "timeline.html"),
        ("filter_owner", "filter/owner-asmith.html"),
        ("person_unbounded", "people/person-asmith.html"),
    ] {
        let html = site::page(&r, Mode::Static, path, &q).unwrap_or_else(|| panic!("{path}"));
        insta::assert_snapshot!(format!("report_{name}"), html);
    }
    // The live view: its keys page filtered on the server, and the sign-in form.
    let q = KeyQuery::from_pairs([("store", "prod"), ("sort", "expires")]);
    let live = site::page(&r, Mode::Live, "keys.html", &q).expect("keys.html");
    insta::assert_snapshot!("report_live_keys", live);
    let cx = html::Ctx {
        report: &r,
        mode: Mode::Live,
        root: "",
    };
    insta::assert_snapshot!(
        "report_signin",
        html::signin_page(
            &cx,
            Some("Unknown or revoked token: nothing was signed in.")
        )
    );
}
