//! Secret-leak canaries: the full cycle (create, rotate, verify, drift, replace, revoke and
//! errors on purpose) runs through the real binary with `KEYWARD_LOG=trace`; every byte
//! keyward wrote (stdout, stderr, store databases with their -wal/-shm, plan outputs, the
//! outbox except the sealed envelopes, the temp directory, the static report's pages) is
//! searched for every secret it generated, their SHA-256 hex, and every private identity
//! used; the report's pages also for the recipients' public keys. Zero hits.

mod common;
use common::{Out, Repo};
use std::collections::BTreeSet;
use std::path::PathBuf;

const KEYS: &str = "\
keys:
  - name: ill-lookup
    store: alma-production
    owner: jdoe
    scopes: [bibs:read, users:read]
    recipients: [team:ill-staff]
    rotation: { generation: 1 }
  - name: reports
    store: alma-sandbox
    owner: asmith
    scopes: [analytics:read]
  - name: feed
    store: alma-production
    owner: rkumar
    scopes: [courses:read]
";

/// Everything captured: (where, bytes).
struct Capture {
    items: Vec<(String, Vec<u8>)>,
    tmp: PathBuf,
}

impl Capture {
    fn out(&mut self, what: &str, o: &Out) {
        self.items
            .push((format!("stdout of {what}"), o.stdout.clone().into_bytes()));
        self.items
            .push((format!("stderr of {what}"), o.stderr.clone().into_bytes()));
    }

    /// Snapshot every file keyward may have written so far (called after each step, so
    /// -wal/-shm files and temp files are seen while they exist).
    fn files(&mut self, r: &Repo, step: &str) {
        let mut roots = vec![r.root().to_path_buf()];
        roots.push(self.tmp.clone());
        for root in roots {
            for e in walkdir::WalkDir::new(&root)
                .into_iter()
                .filter_map(Result::ok)
                .filter(|e| e.file_type().is_file())
            {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "age")
                    || p.starts_with(r.root().join("ids"))
                    || p.starts_with(r.root().join("keys"))
                    || p == r.root().join("people.yaml")
                    || p == r.root().join("keyward.yaml")
                {
                    continue;
                }
                self.items.push((
                    format!("{} (after {step})", p.display()),
                    std::fs::read(p).unwrap_or_default(),
                ));
            }
        }
    }
}

fn run(r: &Repo, cap: &mut Capture, what: &str, args: &[&str], stdin: Option<&str>) -> Out {
    let tmp = cap.tmp.to_string_lossy().into_owned();
    let o = r.run_with(
        args,
        &[
            ("KEYWARD_LOG", "trace"),
            ("RUST_LOG", "trace"),
            ("TMPDIR", tmp.as_str()),
            ("RUST_BACKTRACE", "1"),
        ],
        stdin,
    );
    cap.out(what, &o);
    cap.files(r, what);
    o
}

fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

fn hits(hay: &[u8], needle: &str) -> bool {
    if needle.is_empty() || hay.len() < needle.len() {
        return false;
    }
    let n = needle.to_ascii_lowercase();
    hay.windows(n.len())
        .any(|w| w.eq_ignore_ascii_case(n.as_bytes()))
}

#[test]
fn no_secret_hash_or_identity_in_anything_keyward_writes() {
    let r = Repo::new(KEYS);
    let tmp = r.root().join("tmp");
    std::fs::create_dir_all(&tmp).expect("tmp");
    let mut cap = Capture {
        items: Vec::new(),
        tmp,
    };
    let mut secrets: BTreeSet<String> = BTreeSet::new();
    let id_of = |who: &str| r.identity(who).to_string_lossy().into_owned();

    // Plan in every format the binary offers (markdown once the PR work lands), then create.
    let help = r.run(&["plan", "--help"]).stdout;
    let formats: Vec<&str> = ["text", "json", "markdown"]
        .into_iter()
        .filter(|f| help.contains(f))
        .collect();
    assert!(formats.len() >= 2, "{help}");
    for f in formats {
        let o = run(
            &r,
            &mut cap,
            &format!("plan {f}"),
            &["plan", "--format", f],
            None,
        );
        assert_eq!(o.code, 0, "{}", o.all());
    }
    let o = run(
        &r,
        &mut cap,
        "apply create",
        &["apply", "--auto-approve"],
        None,
    );
    assert_eq!(o.code, 0, "{}", o.all());
    secrets.extend(r.check_invariants("after create", &[]));
    assert_eq!(secrets.len(), 3);

    // Verify: good, tampered, garbage.
    let good = secrets.iter().next().cloned().expect("a secret");
    let store_of = |s: &str| {
        if s.starts_with("kw_prod_") {
            "alma-production"
        } else {
            "alma-sandbox"
        }
    };
    let o = run(
        &r,
        &mut cap,
        "verify good",
        &["verify", "--store", store_of(&good)],
        Some(&good),
    );
    assert!(
        o.stdout.contains("\"valid\": true") || o.stdout.contains("\"valid\":true"),
        "{}",
        o.all()
    );
    let mut tampered = good.clone().into_bytes();
    let i = tampered.len() - 12;
    tampered[i] = if tampered[i] == b'a' { b'b' } else { b'a' };
    let tampered = String::from_utf8(tampered).expect("ascii");
    let o = run(
        &r,
        &mut cap,
        "verify tampered",
        &["verify", "--store", store_of(&good)],
        Some(&tampered),
    );
    assert!(o.stdout.contains("malformed"), "{}", o.all());
    // The secret given as an argument (the discouraged form) is not echoed either.
    run(&r, &mut cap, "verify arg", &["verify", &good], None);

    // Reading deliveries: with the right identity into a file (excluded: that is the point
    // of the command), with a wrong identity (an error that must not leak).
    let deliberate = tempfile::tempdir().expect("tempdir");
    let out_file = deliberate.path().join("secret.out");
    std::fs::create_dir_all(r.root().join("home")).expect("home");
    let o = run(
        &r,
        &mut cap,
        "secret to file",
        &[
            "secret",
            "ill-lookup",
            "--store",
            "alma-production",
            "-i",
            &id_of("jdoe"),
            "-o",
            out_file.to_str().expect("utf8"),
        ],
        None,
    );
    assert_eq!(o.code, 0, "{}", o.all());
    let written = std::fs::read_to_string(&out_file).expect("the deliberate output");
    assert!(
        secrets.contains(written.trim()),
        "`secret -o` wrote something else"
    );
    let o = run(
        &r,
        &mut cap,
        "secret wrong identity",
        &[
            "secret",
            "ill-lookup",
            "--store",
            "alma-production",
            "-i",
            &id_of("rkumar"),
        ],
        None,
    );
    assert_ne!(o.code, 0, "rkumar is not a recipient: {}", o.all());
    let env = r
        .root()
        .join("deliveries/alma-production/ill-lookup/g1/jdoe.age");
    let o = run(
        &r,
        &mut cap,
        "decrypt wrong identity",
        &[
            "decrypt",
            env.to_str().expect("utf8"),
            "-i",
            &id_of("asmith"),
        ],
        None,
    );
    assert_ne!(o.code, 0, "{}", o.all());
    // An identity file that is not an identity, and an envelope that is not one.
    let bogus = r.root().join("home/bogus.txt");
    std::fs::write(&bogus, "AGE-SECRET-KEY-1NOTAKEYATALL\n").expect("write");
    let o = run(
        &r,
        &mut cap,
        "decrypt bad identity file",
        &[
            "decrypt",
            env.to_str().expect("utf8"),
            "-i",
            bogus.to_str().expect("utf8"),
        ],
        None,
    );
    assert_ne!(o.code, 0, "{}", o.all());
    std::fs::remove_file(&bogus).expect("rm");

    // Rotate, replace (owner change) and revoke (removal) in one apply.
    let next = KEYS
        .replace("rotation: { generation: 1 }", "rotation: { generation: 2 }")
        .replace("    owner: asmith\n", "    owner: rkumar\n");
    let next: String = next
        .split("  - name: ")
        .filter(|s| !s.starts_with("feed"))
        .collect::<Vec<_>>()
        .join("  - name: ");
    r.write_keys(&next);
    run(&r, &mut cap, "plan rotate", &["plan"], None);
    let o = run(
        &r,
        &mut cap,
        "apply rotate",
        &["apply", "--auto-approve"],
        None,
    );
    assert_eq!(o.code, 0, "{}", o.all());
    secrets.extend(r.check_invariants("after rotate", &[]));
    assert!(secrets.len() >= 5, "{}", secrets.len());

    // Drift: a console edit, then plan and apply restore it.
    {
        use keyward::store::{
            Actor, KeyPatch, KeyWrite, ListFilter, Store, list_all, sqlite::SqliteStore,
        };
        let rt = common::runtime();
        let store =
            SqliteStore::open("alma-production", &r.root().join(".keyward/prod.db")).expect("open");
        let keys = rt
            .block_on(list_all(&store, &ListFilter::default()))
            .expect("list");
        let k = keys
            .iter()
            .find(|k| k.name == "ill-lookup")
            .expect("ill-lookup");
        let patch = KeyPatch {
            scopes: Some(vec!["bibs:write".into()]),
            ..KeyPatch::default()
        };
        let console = Actor {
            who: "console:admin".into(),
            commit: None,
        };
        rt.block_on(store.update(KeyWrite::new(&k.id, k.version, &console), patch))
            .expect("console edit");
    }
    let o = run(
        &r,
        &mut cap,
        "plan drift",
        &["plan", "--format", "json"],
        None,
    );
    assert!(o.stdout.contains("drift"), "{}", o.all());
    let o = run(
        &r,
        &mut cap,
        "apply drift",
        &["apply", "--auto-approve"],
        None,
    );
    assert_eq!(o.code, 0, "{}", o.all());
    run(&r, &mut cap, "keys", &["keys", "--format", "json"], None);
    run(&r, &mut cap, "keys text", &["keys"], None);

    // A spec with a pasted private key as a recipient: refused without echoing it.
    let pasted = r.identity_text("asmith");
    let people = std::fs::read_to_string(r.root().join("people.yaml")).expect("people");
    let public_of_asmith = people
        .lines()
        .skip_while(|l| !l.contains("asmith:"))
        .find(|l| l.contains("recipients:"))
        .and_then(|l| l.split('"').nth(1))
        .expect("asmith's recipient")
        .to_string();
    std::fs::write(
        r.root().join("people.yaml"),
        people.replace(&public_of_asmith, &pasted),
    )
    .expect("write");
    for (what, args) in [
        ("validate pasted", vec!["validate"]),
        ("validate pasted json", vec!["validate", "--format", "json"]),
        ("plan pasted", vec!["plan"]),
        ("apply pasted", vec!["apply", "--auto-approve"]),
    ] {
        let o = run(&r, &mut cap, what, &args, None);
        assert_eq!(o.code, 1, "{what}: {}", o.all());
        assert!(
            o.all().to_lowercase().contains("private"),
            "{what}: {}",
            o.all()
        );
    }
    // The pasted key also as a bare YAML value in a key file.
    std::fs::write(r.root().join("people.yaml"), &people).expect("restore");
    r.write_keys(&format!("{next}  - name: {pasted}\n    store: alma-sandbox\n    owner: jdoe\n    scopes: [bibs:read]\n"));
    let o = run(&r, &mut cap, "validate pasted name", &["validate"], None);
    assert_eq!(o.code, 1, "{}", o.all());
    r.write_keys(&next);
    // Final state still converges.
    let o = run(
        &r,
        &mut cap,
        "plan final",
        &["plan", "--detailed-exitcode"],
        None,
    );
    assert_eq!(o.code, 0, "{}", o.all());
    // The static web view (`keyward report --html`): every page and asset it writes is
    // searched like any other output, for secrets, hashes, identities and public keys.
    let site = r.root().join("site");
    let o = run(
        &r,
        &mut cap,
        "report html",
        &["report", "--html", site.to_str().expect("utf8")],
        None,
    );
    assert_eq!(o.code, 0, "{}", o.all());
    assert!(site.join("keys/alma-production/ill-lookup.html").is_file());
    assert!(
        cap.items.iter().any(|(w, b)| w.contains("ill-lookup.html")
            && String::from_utf8_lossy(b).contains("id=\"key-events\"")),
        "the report's key pages are captured"
    );

    // The needles.
    let mut needles: Vec<(String, String)> = Vec::new();
    for s in &secrets {
        needles.push(("a secret".into(), s.clone()));
        needles.push(("a secret's SHA-256".into(), sha256_hex(s)));
        // The random body alone (a secret cut in the middle of its prefix is still one).
        needles.push((
            "a secret's body".into(),
            s[s.len() - 60..s.len() - 8].to_string(),
        ));
    }
    needles.push(("a tampered secret".into(), tampered.clone()));
    for who in ["jdoe", "asmith", "rkumar"] {
        let text = r.identity_text(who);
        assert!(text.starts_with("AGE-SECRET-KEY-"));
        needles.push((format!("{who}'s identity"), text.clone()));
        needles.push((
            format!("{who}'s identity body"),
            text["AGE-SECRET-KEY-".len()..].to_string(),
        ));
    }

    // The report must not show a recipient's public key either (it is not secret, but a
    // page about keys names people, not their keys); searched in the site's pages only.
    let public_keys: Vec<String> = people
        .split('"')
        .filter(|p| p.starts_with("age1"))
        .map(String::from)
        .collect();
    assert_eq!(public_keys.len(), 3);
    for (where_, bytes) in cap.items.iter().filter(|(w, _)| w.contains("/site/")) {
        for k in &public_keys {
            assert!(!hits(bytes, k), "a recipient public key in {where_}");
        }
    }

    // Sanity: the search works (the envelope-free capture is not empty, and a needle in
    // the capture would be found).
    assert!(
        cap.items.len() > 50,
        "captured only {} items",
        cap.items.len()
    );
    assert!(cap.items.iter().any(|(w, _)| w.contains("prod.db")));
    assert!(
        cap.items
            .iter()
            .any(|(w, b)| w.contains("stderr") && b.len() > 1000),
        "trace logging produced nothing"
    );
    assert!(hits(b"xx kw_prod_ABC yy", "kw_prod_abc"));

    let mut found = Vec::new();
    for (where_, bytes) in &cap.items {
        for (what, needle) in &needles {
            if hits(bytes, needle) {
                found.push(format!("{what} in {where_}"));
            }
        }
    }
    assert!(found.is_empty(), "leaks:\n{}", found.join("\n"));
}
