//! The example repository in examples/library loads without errors and passes the policy.

use chrono::{DateTime, Utc};
use keyward::spec::{self, DesiredState, Expiry};
use std::path::Path;

fn fixed_now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-06-01T00:00:00Z")
        .map(|t| t.with_timezone(&Utc))
        .expect("valid time")
}

#[test]
fn example_library_loads_cleanly_and_passes_policy() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/library");
    let loaded = match spec::load(&root) {
        Ok(l) => l,
        Err(d) => panic!(
            "example has errors:\n{}",
            keyward::diag::render(&d, &Default::default(), false)
        ),
    };
    assert!(
        loaded.warnings.is_empty(),
        "{}",
        keyward::diag::render(&loaded.warnings, &loaded.sources, false)
    );
    let s = &loaded.spec;
    assert_eq!(s.stores.len(), 2);
    assert!(s.stores["alma-production"].is_production());
    assert_eq!(s.keys.len(), 6);
    // Sorted by (store, name).
    let names: Vec<(&str, &str)> = s
        .keys
        .iter()
        .map(|k| (k.store.as_str(), k.name.as_str()))
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);

    let ill = s
        .key("alma-production", "illiad-barcode-lookup")
        .expect("ILL key");
    assert_eq!(
        ill.recipients
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        ["asmith", "illiad-server", "jdoe"]
    );
    assert_eq!(ill.quota.map(|q| q.per_day), Some(1000));
    assert!(matches!(ill.expiry, Expiry::At(t) if t.to_rfc3339() == "2027-06-30T23:59:59+00:00"));
    assert_eq!(ill.location.file, Path::new("keys/interlibrary-loan.yaml"));
    assert_eq!(ill.location.line, 4);
    assert_eq!(ill.field_location("owner").line, 6);
    assert_eq!(ill.field_location("scope:users").line, 8);

    let sync = s
        .key("alma-production", "course-reserves-sync")
        .expect("sync key");
    assert!(sync.rotation.rotate_on_recipient_added);
    assert_eq!(sync.rotation.generation, 2);
    assert!(
        s.keys
            .iter()
            .any(|k| k.protected && k.state == DesiredState::Active)
    );
    // An explicit lifetime is kept as given (fixed at creation/rotation).
    let sandbox_sync = s
        .key("alma-sandbox", "course-reserves-sync")
        .expect("sandbox sync");
    assert_eq!(
        sandbox_sync.expiry,
        Expiry::Lifetime(keyward::spec::Span::days(90))
    );

    let policy = keyward::policy::check(s, fixed_now());
    assert!(
        policy.is_empty(),
        "{}",
        keyward::diag::render(&policy, &loaded.sources, false)
    );
}

#[test]
fn enforce_folds_policy_results_into_the_loaded_spec() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/library");
    let mut loaded = spec::load(&root).expect("example loads");
    assert!(keyward::policy::enforce(&mut loaded, fixed_now()).is_ok());
    // Two and a half years later the ILL key's fixed date has passed: a warning only.
    let later = fixed_now() + chrono::Duration::days(900);
    assert!(keyward::policy::enforce(&mut loaded, later).is_ok());
    assert!(
        loaded
            .warnings
            .iter()
            .any(|d| d.code == keyward::diag::codes::ALREADY_EXPIRED)
    );
    // A tighter maximum turns the 730-day key into an error.
    loaded.spec.policy.max_lifetime = Some(keyward::spec::Span::days(400));
    let errs = keyward::policy::enforce(&mut loaded, fixed_now()).expect_err("too long");
    let d = errs
        .iter()
        .find(|d| d.code == keyward::diag::codes::LIFETIME_TOO_LONG)
        .expect("KW203");
    assert_eq!(
        d.location
            .as_ref()
            .map(|l| (l.file.display().to_string(), l.line)),
        Some(("keys/discovery.yaml".to_string(), 9))
    );
    assert!(!loaded.sources.is_empty());
}

#[test]
fn policy_points_at_the_scope_and_the_rule() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/library");
    let mut files = std::collections::BTreeMap::new();
    for rel in ["keyward.yaml", "people.yaml", "keys/course-reserves.yaml"] {
        files.insert(
            std::path::PathBuf::from(rel),
            std::fs::read(root.join(rel)).expect("read"),
        );
    }
    let key = Path::new("keys/course-reserves.yaml");
    let text = String::from_utf8(files[key].clone()).expect("utf8");
    let text = text.replacen(
        "      - bibs:read\n",
        "      - bibs:read\n      - configuration:write\n",
        1,
    );
    files.insert(key.to_path_buf(), text.into_bytes());
    let loaded = spec::load_from_files(&root, files).expect("still a valid spec");
    let diags = keyward::policy::check(&loaded.spec, fixed_now());
    let codes: Vec<&str> = diags.iter().map(|d| d.code).collect();
    assert_eq!(
        codes,
        [
            keyward::diag::codes::FORBIDDEN_SCOPE,
            keyward::diag::codes::BEYOND_OWNER_GRANT
        ]
    );
    for d in diags.iter() {
        let l = d.location.as_ref().expect("located");
        assert_eq!((l.file.as_path(), l.line), (key, 11), "{d}");
    }
    let forbidden = &diags.0[0];
    assert!(
        forbidden
            .message
            .contains("Configuration API is not granted"),
        "{}",
        forbidden.message
    );
    let (_, rule) = &forbidden.related[0];
    assert_eq!(
        (rule.file.as_path(), rule.line),
        (Path::new("keyward.yaml"), 23)
    );
    let (_, owner) = &diags.0[1].related[0];
    assert_eq!(
        (owner.file.as_path(), owner.line),
        (Path::new("people.yaml"), 15)
    );
}
