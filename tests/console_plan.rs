//! Console stores seen by the real binary: `validate` checks keys against the vendor's
//! preset (file:line, did-you-mean), `plan` observes a console store from its ledger, and
//! a broken or hand-edited ledger stops plan with file:line diagnostics.

mod common;

use common::Repo;

const CONFIG: &str = "version: 1
stores:
  alma-production: { kind: console, vendor: alma, environment: production }
  openathens: { kind: console, vendor: openathens, environment: production }
  alm: { kind: console, vendor: alm, environment: production, max_lifetime: 90d, max_keys_per_owner: 2 }
scopes:
  areas: [acquisitions, analytics, bibs, configuration, courses, electronic, resource-sharing, task-lists, users, authentication-api, reports-api, full-access, api, odata]
  levels: [read, write]
policy:
  default_lifetime: 365d
";

fn repo(keys: &str) -> Repo {
    let r = Repo::new(keys);
    std::fs::write(r.root().join("keyward.yaml"), CONFIG).unwrap();
    r
}

const GOOD: &str = "keys:
  - name: illiad-barcode-lookup
    store: alma-production
    owner: jdoe
    purpose: ILLiad add-on
    scopes: [bibs:read, users:read]
    recipients: [team:ill-staff]
  - name: ezproxy-auth
    store: openathens
    owner: jdoe
    purpose: EZproxy local authentication
    scopes: [authentication-api:read]
    lifetime: 365d
";

#[test]
fn plan_reads_an_absent_ledger_as_an_empty_console() {
    let r = repo(GOOD);
    let o = r.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(o.code, 2, "{}", o.all());
    assert!(
        o.stdout
            .contains("# alma-production/illiad-barcode-lookup will be created"),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout
            .contains("# openathens/ezproxy-auth will be created"),
        "{}",
        o.stdout
    );
    assert!(!r.root().join("ledger").exists(), "plan writes no ledger");
}

#[test]
fn validate_checks_console_keys_against_the_vendor_preset() {
    let r = repo(
        "keys:
  - name: a
    store: alma-production
    owner: jdoe
    scopes: [bibs:read, authentication-api:read]
  - name: b
    store: openathens
    owner: jdoe
    scopes: [authentication-api:read, reports-api:read]
    expires: never
  - name: c
    store: alm
    owner: jdoe
    scopes: [api:read]
    lifetime: 365d
    quota: 100/day
  - name: d
    store: alm
    owner: jdoe
    scopes: [odata:read]
    lifetime: 30d
  - name: e
    store: alm
    owner: jdoe
    scopes: [api:read]
    lifetime: 30d
",
    );
    let o = r.run(&["validate"]);
    assert_eq!(o.code, 1, "{}", o.all());
    let out = o.all();
    for (code, line) in [
        ("KW410", 5),
        ("KW411", 9),
        ("KW412", 10),
        ("KW412", 15),
        ("KW414", 16),
        ("KW413", 24),
    ] {
        assert!(
            out.contains(&format!("error[{code}]"))
                && out.contains(&format!("keys/keys.yaml:{line}:")),
            "{code} at line {line}:\n{out}"
        );
    }
    assert!(
        out.contains(
            "Alma (Ex Libris Developer Network) offers no scope `authentication-api:read`"
        ),
        "{out}"
    );
    let r = repo(
        "keys:\n  - name: a\n    store: alma-production\n    owner: jdoe\n    scopes: [bibs:reed]\n",
    );
    std::fs::write(
        r.root().join("keyward.yaml"),
        CONFIG.replace("levels: [read, write]", "levels: [read, reed, write]"),
    )
    .unwrap();
    let o = r.run(&["validate"]);
    assert!(o.all().contains("did you mean `bibs:read`?"), "{}", o.all());
}

#[test]
fn console_store_settings_are_checked_in_keyward_yaml() {
    let r = repo(GOOD);
    std::fs::write(
        r.root().join("keyward.yaml"),
        "version: 1\nstores:\n  a: { kind: console, vendor: almaa, environment: production }\n  b: { kind: console, vendor: generic, environment: production }\n  c: { kind: console, vendor: alma, environment: production, secret_pattern: \"x+\", path: x.db }\n  d: { kind: console, vendor: generic, environment: production, secret_pattern: \"(\" }\n  e: { kind: console, vendor: alma, environment: staging, ledger: ../outside.yaml }\n",
    )
    .unwrap();
    let o = r.run(&["validate"]);
    assert_eq!(o.code, 1, "{}", o.all());
    let out = o.all();
    for needle in [
        "unknown console vendor `almaa`",
        "did you mean `alma`?",
        "missing required field `secret_pattern`",
        "`secret_pattern` applies only to `vendor: generic`",
        "`path` does not apply to a console store",
        "`secret_pattern` is not a valid regular expression",
        "`../outside.yaml` is not a path inside the repository",
    ] {
        assert!(out.contains(needle), "{needle}:\n{out}");
    }
}

#[test]
fn a_hand_edited_ledger_stops_plan_with_file_and_line() {
    let r = repo(GOOD);
    std::fs::create_dir_all(r.root().join("ledger")).unwrap();
    let pasted = format!("l7xx{}", "0123456789abcdef".repeat(2));
    let ledger = format!(
        "version: 1\nstore: alma-production\nvendor: primo\nkeys:\n  - name: illiad-barcode-lookup\n    id: abc\n    environment: production\n    owner: jdoe\n    scopes: [bibs:read]\n    status: active\n    created: 2026-11-01T00:00:00Z\n    issued: 2026-11-01T00:00:00Z\n    updated: 2026-11-01T00:00:00Z\n    generation: 1\n    spec_generation: 1\n    fingerprint: {pasted}\n    version: 1\n"
    );
    std::fs::write(r.root().join("ledger/alma-production.yaml"), ledger).unwrap();
    let o = r.run(&["plan"]);
    assert_eq!(o.code, 1, "{}", o.all());
    let out = o.all();
    assert!(
        out.contains("ledger/alma-production.yaml:3:"),
        "vendor line:\n{out}"
    );
    assert!(
        out.contains("ledger/alma-production.yaml:16:"),
        "fingerprint line:\n{out}"
    );
    assert!(out.contains("KW401") && out.contains("KW403"), "{out}");
    assert!(
        !out.contains(&pasted[4..]),
        "the pasted value is not echoed:\n{out}"
    );
}
