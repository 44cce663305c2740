//! Limits on the size of a spec (issue 15, item 14), through the real binary on real files:
//! the issue's hostile files (a 4.2 MB `keys: [{},{},...]`, an 8 MiB flow list) end at once
//! with the limit's diagnostic at file:line, and so do too many keys in a file, too many
//! files, too many bytes together; a spec with thousands of mistakes reports the first 200
//! and counts the rest. Each run has a generous timeout as a guard; the assertions are on
//! the outcome.

mod common;
use common::Repo;
use std::time::Duration;

/// Far above what these runs take (well under a second each in a debug build), far below
/// the minutes the hostile files took before the limits.
const GUARD: Duration = Duration::from_secs(60);

fn validate(r: &Repo) -> common::Out {
    let o = r
        .cmd()
        .arg("validate")
        .timeout(GUARD)
        .output()
        .expect("run keyward");
    assert!(
        o.status.code().is_some(),
        "validate did not finish within {GUARD:?}"
    );
    common::Out {
        code: o.status.code().unwrap(),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn error_lines(o: &common::Out) -> usize {
    o.all().lines().filter(|l| l.starts_with("error[")).count()
}

#[test]
fn the_issues_hostile_files_are_refused_at_once_at_file_and_line() {
    let r = Repo::new("keys: []\n");
    // 4.2 MB: 1.4 million empty entries on one line.
    let mut big = String::with_capacity(4_300_000);
    big.push_str("keys: [");
    for i in 0..1_400_000 {
        if i > 0 {
            big.push(',');
        }
        big.push_str("{}");
    }
    big.push_str("]\n");
    assert!(big.len() > 4_000_000);
    std::fs::write(r.root().join("keys/empty.yaml"), &big).unwrap();
    let o = validate(&r);
    assert_eq!(o.code, 1, "{}", o.all());
    assert!(o.all().contains("error[KW006]"), "{}", o.all());
    assert!(
        o.all().contains("more than 500000 YAML values"),
        "{}",
        o.all()
    );
    assert!(o.all().contains("keys/empty.yaml:1:"), "{}", o.all());
    assert_eq!(error_lines(&o), 1, "{}", o.all());
    // The echoed line is a window, not 4 MB.
    assert!(o.all().len() < 10_000, "{} bytes of output", o.all().len());
    std::fs::remove_file(r.root().join("keys/empty.yaml")).unwrap();

    // An 8 MiB flow list (just under the file limit), over several lines.
    let mut flow = String::from("keys: [\n");
    while flow.len() < 8 * 1024 * 1024 - 64 {
        flow.push_str("a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a,\n");
    }
    flow.push_str("a]\n");
    assert!(flow.len() < 8 * 1024 * 1024);
    std::fs::write(r.root().join("keys/flow.yaml"), &flow).unwrap();
    let o = validate(&r);
    assert_eq!(o.code, 1, "{}", o.all());
    assert!(o.all().contains("error[KW006]"), "{}", o.all());
    assert!(
        o.all().contains("more than 500000 YAML values"),
        "{}",
        o.all()
    );
    // At the line where the 500,000th value is (20 a line: about line 24,000-25,000).
    let line: usize = o
        .all()
        .split("keys/flow.yaml:")
        .nth(1)
        .and_then(|s| s.split(':').next())
        .and_then(|s| s.parse().ok())
        .expect("a line number");
    assert!((23_000..26_000).contains(&line), "line {line}");
}

#[test]
fn too_many_keys_in_a_file_and_too_many_diagnostics_are_reported_briefly() {
    let r = Repo::new("keys: []\n");
    // 20,001 entries: under the value limit, over the keys-per-file limit.
    let many = format!("keys:\n{}", "  - {}\n".repeat(20_001));
    std::fs::write(r.root().join("keys/many.yaml"), &many).unwrap();
    let o = validate(&r);
    assert_eq!(o.code, 1, "{}", o.all());
    assert!(o.all().contains("error[KW003]"), "{}", o.all());
    assert!(o.all().contains("holds 20001 keys"), "{}", o.all());
    assert!(o.all().contains("keys/many.yaml:1:"), "{}", o.all());
    assert_eq!(
        error_lines(&o),
        1,
        "none of the keys is checked: {}",
        o.all()
    );
    std::fs::remove_file(r.root().join("keys/many.yaml")).unwrap();

    // 5,000 empty keys: every one is wrong three ways; the first 200 are shown.
    let wrong = format!("keys:\n{}", "  - {}\n".repeat(5_000));
    std::fs::write(r.root().join("keys/wrong.yaml"), &wrong).unwrap();
    let o = validate(&r);
    assert_eq!(o.code, 1, "{}", o.all());
    assert_eq!(
        error_lines(&o),
        201,
        "{}",
        &o.all()[..2000.min(o.all().len())]
    );
    assert!(o.all().contains("error[KW009]"), "{}", o.all());
    let more = o
        .all()
        .lines()
        .find(|l| l.contains("KW009"))
        .unwrap()
        .to_string();
    assert!(
        more.contains("and ") && more.contains("more error(s) not shown"),
        "{more}"
    );
    let n: usize = more
        .split("and ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .expect("a count");
    assert!(n >= 3 * 5_000 - 200, "{more}");
    // JSON output is capped the same way.
    let o = r.run(&["validate", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["diagnostics"].as_array().unwrap().len(), 201);
    // The counts are the real ones.
    assert_eq!(
        v["errors"].as_u64().unwrap() as usize,
        200 + n,
        "{}",
        v["errors"]
    );
    assert_eq!(
        v["diagnostics"][200]["omitted"]["errors"].as_u64(),
        Some(n as u64)
    );
}

#[test]
fn too_many_files_are_refused_at_the_file_that_crosses_the_limit() {
    let r = Repo::new("keys: []\n");
    for i in 0..10_000 {
        std::fs::write(r.root().join(format!("keys/k{i:05}.yaml")), "keys: []\n").unwrap();
    }
    let o = validate(&r);
    assert_eq!(o.code, 1, "{}", o.all());
    assert!(o.all().contains("error[KW003]"), "{}", o.all());
    assert!(
        o.all().contains("more than 10000 spec files"),
        "{}",
        o.all()
    );
    // keyward.yaml, people.yaml, then k00000... (before keys.yaml): the 10,001st is k09998.
    assert!(o.all().contains("keys/k09998.yaml:1:1"), "{}", o.all());
    for i in 0..10_000 {
        std::fs::remove_file(r.root().join(format!("keys/k{i:05}.yaml"))).unwrap();
    }
    // (The 64 MiB total is checked by the same `over_limits` and unit-tested in
    // spec::tests: nine 7.5 MiB files take minutes to scan for secrets in a debug build.)
}
