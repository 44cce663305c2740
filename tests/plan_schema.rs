//! The JSON plan's schema: the checked-in `schemas/plan.schema.json` is what the Rust types
//! generate, and it is a valid schema that accepts real plans and refuses broken ones.

mod common;

use std::path::Path;

#[test]
fn the_checked_in_plan_schema_is_current() {
    let want = format!(
        "{}\n",
        serde_json::to_string_pretty(&keyward::plan::json_schema()).unwrap()
    );
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/plan.schema.json");
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    if have == want {
        return;
    }
    if std::env::var_os("KEYWARD_UPDATE_SCHEMAS").is_some() && std::env::var_os("CI").is_none() {
        std::fs::write(&path, want).unwrap();
        eprintln!("wrote {}", path.display());
        return;
    }
    panic!(
        "schemas/plan.schema.json is stale; regenerate it with\n  KEYWARD_UPDATE_SCHEMAS=1 cargo test --test plan_schema\nand commit it"
    );
}

#[test]
fn the_schema_accepts_a_real_plan_and_refuses_a_broken_one() {
    let r = common::Repo::new(
        "keys:\n  - name: a\n    store: alma-production\n    owner: jdoe\n    scopes: [bibs:read]\n",
    );
    // `run` validates every JSON plan it sees against the schema.
    let o = r.run(&["plan", "--format", "json"]);
    assert_eq!(o.code, 0, "{}", o.all());
    let mut v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert!(common::check_plan_json(&v).is_ok());
    v["actions"][0]["action"] = "explode".into();
    assert!(common::check_plan_json(&v).is_err());
    let mut v2: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    v2.as_object_mut().unwrap().remove("format_version");
    assert!(common::check_plan_json(&v2).is_err());
}
