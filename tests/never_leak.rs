//! Issue 15, "Never leak" (items 8, 9, 10) through the real binary on temp repositories:
//! secret-shaped text in a spec is refused at its line and never shown, in any format;
//! the store refuses it in event actions and labels.

mod common;
mod serve_common;
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

fn rotating_key(generation: u32) -> String {
    format!(
        "keys:\n  - name: rotating\n    store: alma-production\n    owner: jdoe\n    scopes: [bibs:read]\n    rotation: {{ every: 90d, grace: 7d, generation: {generation} }}\n"
    )
}

/// Issue 15 item 9: `apply --commit-deliveries` commits the manifests and the envelopes they
/// vouch for, never another file in the outbox, git-ignored or not (before, it committed
/// every file under the outbox, ignored plaintext included).
#[test]
fn commit_deliveries_commits_only_the_envelopes_and_manifests_keyward_wrote() {
    let r = Repo::new(&rotating_key(1));
    r.git_init();
    let root = r.root();
    std::fs::write(
        root.join(".gitignore"),
        ".keyward/\nids/\nhome/\ndeliveries/*.plain\n",
    )
    .unwrap();
    r.commit_all("Admin", "admin@example.edu", "ignore plaintext");
    std::fs::create_dir_all(root.join("deliveries")).unwrap();
    std::fs::write(
        root.join("deliveries/ignored.plain"),
        "plaintext secret 1\n",
    )
    .unwrap();
    std::fs::write(root.join("deliveries/notes.txt"), "plaintext secret 2\n").unwrap();

    let o = r.run(&["apply", "--auto-approve", "--commit-deliveries"]);
    assert_eq!(o.code, 0, "{}", o.all());
    let tree = r.git(&["ls-tree", "-r", "--name-only", "HEAD", "--", "deliveries"]);
    let mut want = vec![
        "deliveries/.gitattributes",
        "deliveries/alma-production/rotating/g1/jdoe.age",
        "deliveries/alma-production/rotating/g1/manifest.json",
    ];
    assert_eq!(tree.lines().collect::<Vec<_>>(), want, "{tree}");
    assert!(
        o.stderr.contains("not deliveries keyward wrote") && o.stderr.contains("notes.txt"),
        "{}",
        o.stderr
    );
    // The stray files stay where they were, uncommitted.
    let status = r.git(&["status", "--porcelain", "--ignored", "--", "deliveries"]);
    assert!(
        status.contains("?? deliveries/notes.txt")
            && status.contains("!! deliveries/ignored.plain"),
        "{status}"
    );

    // A file named like an envelope that no manifest lists, and one in a generation
    // directory, are not deliveries either; the rotation's new envelope and both manifests
    // are committed.
    let g1 = root.join("deliveries/alma-production/rotating/g1");
    std::fs::write(g1.join("mallory.age"), "plaintext secret 3\n").unwrap();
    std::fs::write(g1.join("jdoe.txt"), "plaintext secret 4\n").unwrap();
    r.write_keys(&rotating_key(2));
    r.git(&["add", "keys"]);
    r.git(&["commit", "-q", "-m", "rotate"]);
    let o = r.run(&["apply", "--auto-approve", "--commit-deliveries"]);
    assert_eq!(o.code, 0, "{}", o.all());
    let tree = r.git(&["ls-tree", "-r", "--name-only", "HEAD", "--", "deliveries"]);
    want.extend([
        "deliveries/alma-production/rotating/g2/jdoe.age",
        "deliveries/alma-production/rotating/g2/manifest.json",
    ]);
    assert_eq!(tree.lines().collect::<Vec<_>>(), want, "{tree}");
    let g1_manifest = r.git(&[
        "show",
        "HEAD:deliveries/alma-production/rotating/g1/manifest.json",
    ]);
    assert!(g1_manifest.contains("\"superseded\""), "{g1_manifest}");
    let log = r.git(&["log", "-p", "--all"]);
    assert!(
        !log.contains("plaintext secret"),
        "a stray file was committed"
    );
}

/// Issue 15 item 9: the outbox must be inside the repository and apart from `.keyward/`,
/// the stores' databases and the console ledgers: a validate error at its line.
#[test]
fn an_outbox_outside_the_repository_or_over_keywards_own_files_is_refused() {
    let r = Repo::new(&rotating_key(1));
    let config = |stores: &str, delivery: &str| {
        format!(
            "version: 1\nstores:\n  alma-production: {{ kind: sqlite, path: .keyward/prod.db, environment: production }}\n{stores}policy:\n  default_lifetime: 365d\n{delivery}"
        )
    };
    let cases = [
        (config("", "delivery:\n  outbox: .keyward\n"), "KW161", 7),
        (
            config("", "delivery:\n  outbox: .keyward/out\n"),
            "KW161",
            7,
        ),
        (config("", "delivery:\n  outbox: .\n"), "KW161", 7),
        (
            config("", "delivery:\n  outbox: out/../.keyward\n"),
            "KW161",
            7,
        ),
        (
            config("", "delivery:\n  outbox: ../elsewhere\n"),
            "KW160",
            7,
        ),
        (
            config("", "delivery:\n  outbox: /tmp/keyward-outbox\n"),
            "KW160",
            7,
        ),
        // The default outbox `deliveries`, a store's database inside it: at the store's path.
        (
            config(
                "  alma-sandbox: { kind: sqlite, path: deliveries/sbx.db, environment: sandbox }\n",
                "",
            ),
            "KW161",
            4,
        ),
    ];
    for (yaml, code, line) in &cases {
        std::fs::write(r.root().join("keyward.yaml"), yaml).unwrap();
        let o = r.run(&["validate"]);
        assert_eq!(o.code, 1, "{yaml}\n{}", o.all());
        assert!(
            o.stdout.contains(&format!("error[{code}]"))
                && o.stdout.contains(&format!("keyward.yaml:{line}:"))
                && o.stdout.contains("hint:"),
            "{yaml}\n{}",
            o.stdout
        );
        let o = r.run(&["apply", "--auto-approve"]);
        assert_eq!(o.code, 1, "{yaml}\n{}", o.all());
    }
    assert!(!r.root().join(".keyward/prod.db").exists());
    for fine in ["deliveries", "out/../deliveries", "./out/deliveries"] {
        std::fs::write(
            r.root().join("keyward.yaml"),
            config("", &format!("delivery:\n  outbox: {fine}\n")),
        )
        .unwrap();
        let o = r.run(&["validate"]);
        assert_eq!(o.code, 0, "{fine}: {}", o.all());
    }
}

#[cfg(unix)]
fn mode(p: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

#[cfg(unix)]
fn chmod(p: &std::path::Path, m: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
}

/// Issue 15 item 10: the files that hold secrets or their hashes are created owner-only,
/// and one made readable by others gets a warning naming it, on the command's stderr
/// (before: databases 0644 in a 0755 `.keyward/`, no warning).
#[cfg(unix)]
#[test]
fn databases_peppers_and_token_files_are_owner_only_and_looser_modes_warn() {
    // apply: .keyward/ 0700, the database (and its -wal/-shm while they exist) and pepper 0600.
    let r = Repo::new(&rotating_key(1));
    let o = r.run(&["apply", "--auto-approve"]);
    assert_eq!(o.code, 0, "{}", o.all());
    let db = r.root().join(".keyward/prod.db");
    assert_eq!(mode(&r.root().join(".keyward")), 0o700);
    for p in keyward::store::sqlite::files(&db) {
        if p.exists() {
            assert_eq!(mode(&p), 0o600, "{}", p.display());
        }
    }
    assert_eq!(mode(&r.root().join(".keyward/prod.db.pepper")), 0o600);
    assert!(!o.stderr.contains("warning: store"), "{}", o.stderr);
    // A database made world-readable: keys and plan say so, naming the file.
    chmod(&db, 0o644);
    for cmd in [&["keys"][..], &["plan"]] {
        let o = r.run(cmd);
        assert!(
            o.stderr.contains("warning: store `alma-production`")
                && o.stderr.contains(".keyward/prod.db is mode 0644")
                && o.stderr.contains("chmod 600"),
            "{cmd:?}: {}",
            o.stderr
        );
    }

    // token create: a new directory 0700, the file 0600; a loose file is named, then fixed.
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("srv/tokens.yaml");
    serve_common::make_token(&tokens, "ci", "read");
    assert_eq!(mode(&dir.path().join("srv")), 0o700);
    assert_eq!(mode(&tokens), 0o600);
    chmod(&tokens, 0o644);
    let o = std::process::Command::new(serve_common::bin())
        .args(["token", "create", "ci2", "--role", "read", "--tokens"])
        .arg(&tokens)
        .output()
        .unwrap();
    assert!(o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("{} is mode 0644", tokens.display())),
        "{err}"
    );
    assert_eq!(mode(&tokens), 0o600);

    // serve: its database directory 0700, the database and its -wal/-shm 0600 while it runs;
    // a loose tokens file and database are named at start.
    let srv = dir.path().join("srv");
    let s = serve_common::Server::start_with_database(&srv, "sqlite:data/serve.db", &[]);
    let served = srv.join("data/serve.db");
    assert_eq!(mode(&srv.join("data")), 0o700);
    for p in keyward::store::sqlite::files(&served) {
        if p.exists() {
            assert_eq!(mode(&p), 0o600, "{}", p.display());
        }
    }
    assert!(!s.log().contains("is mode 0"), "{}", s.log());
    s.stop();
    chmod(&served, 0o640);
    chmod(&tokens, 0o604);
    let s = serve_common::Server::start_with_database(&srv, "sqlite:data/serve.db", &[]);
    let log = s.stop();
    assert!(
        log.contains("data/serve.db is mode 0640") && log.contains("tokens.yaml is mode 0604"),
        "{log}"
    );
}
