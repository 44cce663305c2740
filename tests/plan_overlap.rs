//! What a rotation's plan says about the old secret follows what the store can do, on real
//! stores through the real binary: PostgreSQL roles (a throwaway SCRAM-only cluster; a role
//! holds one password, `rotation_overlap: none`) get the "no overlap" note and no grace line,
//! redis-acl (the machine's Redis; a user holds both hashes, native overlap) gets its grace
//! line, in the text, Markdown and JSON plans, and a saved plan applies (the recomputed plan
//! is the same). A console store says it in the vendor's words, with neither.

mod adapters_common;
mod needs;
mod serve_common;

use adapters_common::{RedisCleanup, ScramCluster, unique};
use std::path::Path;
use std::process::Command;

const GRACE_LINE: &str = "previous secret valid until";
const NO_OVERLAP: &str = "no overlap on rotation: the old secret stops at once";

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn keyward(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(serve_common::bin());
    cmd.arg("-C").arg(dir).args(args).env("NO_COLOR", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let o = cmd.output().expect("run keyward");
    Run {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// The lines of the text plan about `store/name` (its heading to the next blank line).
fn section<'a>(plan: &'a str, key: &str) -> &'a str {
    let start = plan
        .find(&format!("# {key} "))
        .unwrap_or_else(|| panic!("no section for {key}:\n{plan}"));
    let rest = &plan[start..];
    &rest[..rest.find("\n\n").unwrap_or(rest.len())]
}

fn keys(generation: u32) -> String {
    let mut out = String::from("keys:\n");
    for store in ["warehouse", "cache"] {
        out.push_str(&format!(
            "  - name: reader\n    store: {store}\n    owner: jdoe\n    purpose: reads the catalogue\n    scopes: [bibs:read]\n    rotation: {{ generation: {generation}, grace: 1d }}\n"
        ));
    }
    out
}

#[tokio::test]
async fn a_store_without_overlap_plans_its_rotation_with_no_grace() {
    let Some(pg) = ScramCluster::start() else {
        return;
    };
    let Some(redis) = adapters_common::redis_url() else {
        return;
    };
    pg.admin()
        .await
        .batch_execute("CREATE ROLE bibs_reader NOLOGIN")
        .await
        .unwrap();
    let prefix = unique("kwo-");
    let _cleanup = RedisCleanup {
        addr: redis.trim_start_matches("redis://").to_owned(),
        prefix: prefix.clone(),
    };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let recipient = age::x25519::Identity::generate().to_public().to_string();
    std::fs::write(
        root.join("keyward.yaml"),
        format!(
            "version: 1\nstores:\n  warehouse: {{ kind: postgres-roles, url_env: KW_PG_URL, role_prefix: kwo_, environment: production, grants: {{ bibs:read: [bibs_reader] }} }}\n  cache: {{ kind: redis-acl, url: \"{redis}\", user_prefix: {prefix}, environment: production, grants: {{ bibs:read: [\"+@read\", \"~bibs:*\"] }} }}\nscopes:\n  areas: [bibs]\n  levels: [read]\n"
        ),
    )
    .unwrap();
    std::fs::write(
        root.join("people.yaml"),
        format!("people:\n  jdoe: {{ recipients: [\"{recipient}\"] }}\n"),
    )
    .unwrap();
    std::fs::create_dir_all(root.join("keys")).unwrap();
    std::fs::write(root.join("keys/keys.yaml"), keys(1)).unwrap();
    let url = pg.admin_url();
    let env = [("KW_PG_URL", url.as_str())];
    let r = keyward(root, &["apply", "--auto-approve"], &env);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);

    std::fs::write(root.join("keys/keys.yaml"), keys(2)).unwrap();
    let r = keyward(root, &["plan"], &env);
    let warehouse = section(&r.stdout, "warehouse/reader");
    let cache = section(&r.stdout, "cache/reader");
    assert!(warehouse.contains("will be rotated"), "{}", r.stdout);
    assert!(
        !warehouse.contains(GRACE_LINE),
        "a role keeps one password: no grace to show:\n{}",
        r.stdout
    );
    assert!(cache.contains(GRACE_LINE), "{}", r.stdout);
    assert!(
        r.stdout
            .contains(&format!("warehouse/reader: {NO_OVERLAP}")),
        "{}",
        r.stdout
    );
    assert!(
        !r.stdout.contains(&format!("cache/reader: {NO_OVERLAP}")),
        "{}",
        r.stdout
    );

    let r = keyward(root, &["plan", "--format", "markdown"], &env);
    let md = &r.stdout;
    let w = md.find("warehouse/reader").expect("warehouse in markdown");
    let c = md.find("cache/reader").expect("cache in markdown");
    let (first, second) = if w < c { (w, c) } else { (c, w) };
    let (wpart, cpart) = if w < c {
        (&md[first..second], &md[second..])
    } else {
        (&md[second..], &md[first..second])
    };
    assert_eq!(
        wpart.matches(GRACE_LINE).count(),
        0,
        "markdown, warehouse:\n{md}"
    );
    assert!(cpart.contains(GRACE_LINE), "markdown, cache:\n{md}");

    let r = keyward(root, &["plan", "--format", "json"], &env);
    let plan: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let change = |store: &str| {
        plan["actions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["store"] == store)
            .cloned()
            .unwrap_or_else(|| panic!("no {store} action: {}", r.stdout))
    };
    assert_eq!(change("warehouse")["action"], "rotate");
    assert!(change("warehouse")["grace"].is_null(), "{}", r.stdout);
    assert_eq!(change("cache")["grace"]["period"], "1d", "{}", r.stdout);

    // A saved plan is recomputed the same way at apply: it applies.
    let saved = root.join("rotate.plan.json");
    let r = keyward(root, &["plan", "--out", saved.to_str().unwrap()], &env);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let r = keyward(
        root,
        &["apply", saved.to_str().unwrap(), "--auto-approve"],
        &env,
    );
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("warehouse/reader: rotate done"),
        "{}",
        r.stderr
    );
}
