//! Issue 15, "Never leak" (items 8, 9, 10) through the real binary on temp repositories:
//! secret-shaped text in a spec is refused at its line and never shown, in any format;
//! the store refuses it in event actions and labels.

mod common;
use common::{Out, Repo};
use keyward::store::{Actor, KeyPatch, KeyWrite, ListFilter, Store, list_all, sqlite::SqliteStore};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Secret-shaped values of the formats keyward must recognise, built at run time so this
/// file holds no literal token.
fn pasted_secrets() -> Vec<(&'static str, String)> {
    let r = |c: &str, n: usize| c.repeat(n);
    let kw = keyward::secret::generate("production", &keyward::secret::new_key_id());
    vec![
        ("keyward", kw.expose().to_string()),
        ("age", format!("AGE-SECRET-KEY-1{}", r("Q", 58))),
        ("alma", format!("l7xx{}", r("0123456789abcdef", 2))),
        ("github", format!("ghp_{}", r("aB3", 12))),
        (
            "github-pat",
            format!("github_pat_11{}_{}", r("A", 20), r("b", 59)),
        ),
        ("aws", format!("AKIA{}", r("Z7", 8))),
        ("slack", format!("xoxb-{}-{}", r("1", 12), r("aZ", 12))),
        ("stripe", format!("sk_live_{}", r("4eC3", 6))),
        ("google", format!("AIza{}A", r("Sy", 17))),
        (
            "jwt",
            format!("eyJhbGciOiJIUzI1NiJ9.eyJ{}.{}", r("zdWIi", 4), r("Sf1", 10)),
        ),
    ]
}

fn keys_with(purpose: &str, label: &str, comment: &str) -> String {
    format!(
        "# {comment}\nkeys:\n  - name: ill-lookup\n    store: alma-production\n    purpose: \"{purpose}\"\n    owner: jdoe\n    labels: {{ ticket: \"{label}\" }}\n    scopes: [bibs:read]\n"
    )
}

fn assert_hidden(o: &Out, secret: &str, what: &str) {
    let tail = &secret[secret.len() - 16..];
    assert!(
        !o.all().contains(tail),
        "{what}: the secret is shown:\n{}",
        o.all()
    );
}

#[test]
fn a_secret_pasted_into_a_spec_is_refused_at_its_line_in_every_format_and_never_shown() {
    for (kind, secret) in pasted_secrets() {
        let places = [
            (keys_with(&format!("see {secret}"), "LSIS-1", "c"), 5),
            (keys_with("lookup", &secret, "c"), 7),
            (
                keys_with("lookup", "LSIS-1", &format!("old key: {secret}")),
                1,
            ),
        ];
        for (n, (yaml, line)) in places.into_iter().enumerate() {
            let r = Repo::new(&yaml);
            let v = r.run(&["validate"]);
            assert_eq!(v.code, 1, "{kind} on line {line} accepted: {}", v.all());
            let code = if kind == "age" { "KW114" } else { "KW140" };
            assert!(
                v.all().contains(&format!("[{code}]"))
                    && v.all().contains(&format!("keys/keys.yaml:{line}:")),
                "{kind}: no {code} at line {line}: {}",
                v.all()
            );
            assert_hidden(&v, &secret, "validate");
            let j = r.run(&["validate", "--format", "json"]);
            assert_eq!(j.code, 1, "{}", j.all());
            let doc: serde_json::Value =
                serde_json::from_str(&j.stdout).unwrap_or_else(|e| panic!("{e}: {}", j.all()));
            assert!(
                doc["diagnostics"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|d| d["code"] == code && d["location"]["line"] == line),
                "{kind}: {doc}"
            );
            assert_hidden(&j, &secret, "validate --format json");
            if n > 0 {
                continue;
            }
            for format in ["text", "json", "markdown"] {
                let p = r.run(&["plan", "--format", format]);
                assert_eq!(p.code, 1, "{kind}: plan --format {format}: {}", p.all());
                assert_hidden(&p, &secret, format);
            }
            let a = r.run(&["apply", "--auto-approve"]);
            assert_eq!(a.code, 1, "{}", a.all());
            assert_hidden(&a, &secret, "apply");
        }
    }
}

#[test]
fn the_store_refuses_secret_shaped_labels_and_event_actions() {
    let r = Repo::new(&keys_with("lookup", "LSIS-1", "c"));
    let a = r.run(&["apply", "--auto-approve"]);
    assert_eq!(a.code, 0, "{}", a.all());
    let store = SqliteStore::open("alma-production", &r.root().join(".keyward/prod.db")).unwrap();
    let actor = Actor {
        who: "console:admin".into(),
        commit: None,
    };
    rt().block_on(async {
        let k = list_all(&store, &ListFilter::default()).await.unwrap()[0].clone();
        for (kind, secret) in pasted_secrets() {
            let patch = KeyPatch {
                labels: Some([("ticket".to_string(), secret.clone())].into()),
                ..KeyPatch::default()
            };
            let e = store
                .update(KeyWrite::new(&k.id, k.version, &actor), patch)
                .await
                .expect_err(kind);
            assert!(!e.to_string().contains(&secret[4..]), "{e}");
            let e = store
                .record(&format!("apply {secret}"), serde_json::json!({}), &actor)
                .await
                .expect_err(kind);
            assert!(!e.to_string().contains(&secret[4..]), "{e}");
        }
        store
            .record("apply finished", serde_json::json!({"keys": 1}), &actor)
            .await
            .unwrap();
    });
}
