//! `keyward store check STORE` (the real binary) passes against every built-in store kind,
//! each on its real backend: sqlite (a file), http (a real `keyward serve` on loopback),
//! postgres-roles (a throwaway SCRAM-only cluster), redis-acl (the machine's Redis) and an
//! exec store running the reference adapter `examples/adapters/keyward-store-jsonfile`.
//! Each run prints its table (visible with --nocapture) and leaves no test key behind.

mod adapters_common;
mod needs;
mod serve_common;

use std::path::Path;
use std::process::Command;

use adapters_common::{RedisCleanup, ScramCluster, unique};
use serde_json::Value;

/// How many keys the paging check makes (`KEYWARD_TEST_PAGING_KEYS`, else `default`).
fn paging(default: usize) -> String {
    std::env::var("KEYWARD_TEST_PAGING_KEYS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(default)
        .to_string()
}

/// A key repository with `stores` (YAML lines under `stores:`).
fn repo(stores: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let r = age::x25519::Identity::generate().to_public().to_string();
    std::fs::write(
        dir.path().join("keyward.yaml"),
        format!(
            "version: 1\nstores:\n{stores}scopes:\n  areas: [bibs, users]\n  levels: [read, write]\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("people.yaml"),
        format!("people:\n  jdoe: {{ recipients: [\"{r}\"] }}\n"),
    )
    .unwrap();
    dir
}

/// Run `keyward store check STORE --format json`, print its rows, and assert that all ten
/// checks passed, nothing was left behind and the exit code is 0.
fn check(dir: &Path, store: &str, paging_keys: &str, env: &[(&str, &str)]) -> Value {
    let mut cmd = Command::new(serve_common::bin());
    cmd.arg("-C")
        .arg(dir)
        .args(["store", "check", store, "--format", "json"])
        .args(["--paging-keys", paging_keys]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run keyward store check");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}); stderr: {stderr}"));
    let rows = report["checks"].as_array().expect("checks");
    for r in rows {
        println!(
            "{:<20} {:<5} {:>6}ms  {}",
            r["check"].as_str().unwrap(),
            if r["passed"] == true { "pass" } else { "FAIL" },
            r["millis"],
            r["detail"].as_str().unwrap()
        );
    }
    assert_eq!(rows.len(), 13, "{report:#}");
    assert!(
        rows.iter().all(|r| r["passed"] == true),
        "a check failed: {report:#}\nstderr: {stderr}"
    );
    assert_eq!(report["left_behind"], serde_json::json!([]), "{report:#}");
    assert!(out.status.success(), "exit {:?}: {stderr}", out.status);
    report
}

#[test]
fn sqlite_store_passes_store_check_and_prints_a_table() {
    let dir = repo("  local: { kind: sqlite, path: .keyward/local.db, environment: sandbox }\n");
    let r = check(dir.path(), "local", &paging(2000), &[]);
    assert_eq!(r["capabilities"]["expiry"], "native");
    // The text table: one row per check and the count.
    let out = Command::new(serve_common::bin())
        .arg("-C")
        .arg(dir.path())
        .args(["store", "check", "local", "--paging-keys", "150"])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    println!("{table}");
    assert!(out.status.success());
    assert!(table.contains("13 of 13 checks passed"), "{table}");
    for row in [
        "create",
        "create-batch",
        "rotate-with-grace",
        "paging",
        "expiry",
        "apply-lease",
    ] {
        assert!(
            table
                .lines()
                .any(|l| l.starts_with(row) && l.contains("pass")),
            "{row}: {table}"
        );
    }
}

#[test]
fn http_store_passes_store_check_through_keyward_serve() {
    let served = tempfile::tempdir().unwrap();
    let token = serve_common::make_token(&served.path().join("tokens.yaml"), "ci", "write");
    let server = serve_common::Server::start(served.path(), &[]);
    let dir = repo(&format!(
        "  remote: {{ kind: http, url: \"{}\", token_env: KEYWARD_CHECK_TOKEN, environment: sandbox }}\n",
        server.url
    ));
    check(
        dir.path(),
        "remote",
        &paging(2000),
        &[("KEYWARD_CHECK_TOKEN", &token)],
    );
    let log = server.stop();
    assert!(!log.contains(&token), "the token reached the server log");
}

#[tokio::test]
async fn postgres_roles_store_passes_store_check_on_a_scram_cluster() {
    let Some(c) = ScramCluster::start() else {
        return;
    };
    c.admin()
        .await
        .batch_execute("CREATE ROLE bibs_reader NOLOGIN")
        .await
        .unwrap();
    let dir = repo(
        "  warehouse: { kind: postgres-roles, url_env: KW_PG_URL, role_prefix: kwc_, environment: production, grants: { bibs:read: [bibs_reader] } }\n",
    );
    let url = c.admin_url();
    let d = dir.path().to_path_buf();
    // The cluster computes nothing for keyward, but each key is a role: fewer keys here,
    // tests/store_pg_roles.rs pages over 2,000.
    let paging_keys = paging(300);
    let r = tokio::task::spawn_blocking(move || {
        check(&d, "warehouse", &paging_keys, &[("KW_PG_URL", &url)])
    })
    .await
    .unwrap();
    assert_eq!(r["capabilities"]["rotation_overlap"], "none");
    let left = c
        .admin()
        .await
        .query_one(
            "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'kwc_%'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(left.get::<_, i64>(0), 0, "test roles were left behind");
}

#[test]
fn redis_acl_store_passes_store_check_on_the_real_redis() {
    let Some(url) = adapters_common::redis_url() else {
        return;
    };
    let prefix = unique("kwc-");
    let _cleanup = RedisCleanup {
        addr: url.trim_start_matches("redis://").to_owned(),
        prefix: prefix.clone(),
    };
    let dir = repo(&format!(
        "  cache: {{ kind: redis-acl, url: \"{url}\", user_prefix: {prefix}, environment: sandbox, grants: {{ bibs:read: [\"+@read\", \"~bibs:*\"] }} }}\n"
    ));
    let r = check(dir.path(), "cache", &paging(2000), &[]);
    assert_eq!(r["capabilities"]["expiry"], "emulated");
}

#[test]
fn exec_store_with_the_reference_adapter_passes_store_check() {
    if !needs::tool(&needs::PYTHON3) {
        return;
    }
    let adapter = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/adapters/keyward-store-jsonfile")
        .display()
        .to_string();
    let held_in = tempfile::tempdir().unwrap();
    let file = held_in.path().join("keys.json").display().to_string();
    let dir = repo(&format!(
        "  gateway: {{ kind: exec, command: [\"{adapter}\", --file, \"{file}\"], environment: sandbox, timeout: 20s }}\n"
    ));
    // The reference adapter rewrites its whole file on every change: fewer keys here.
    let r = check(dir.path(), "gateway", &paging(500), &[]);
    assert_eq!(r["capabilities"]["secret"], "client_hash");
    // The adapter holds hashes only: no secret-shaped `kw_` string in its file.
    let held = std::fs::read_to_string(&file).unwrap();
    assert!(
        !held.contains("kw_sbx_"),
        "the adapter's file holds a secret"
    );
}

#[test]
fn a_console_store_is_not_checked_and_its_ledger_is_untouched() {
    // The kit would write its kwcheck-* test keys into the committed ledger (keys no
    // console holds) and check nothing of the console: refused, pointing at `audit`.
    let dir = repo("  alma-sandbox: { kind: console, vendor: alma, environment: sandbox }\n");
    let out = Command::new(serve_common::bin())
        .arg("-C")
        .arg(dir.path())
        .args(["store", "check", "alma-sandbox", "--paging-keys", "20"])
        .output()
        .expect("run keyward store check");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("store `alma-sandbox` is a console store")
            && stderr.contains("keyward audit --store alma-sandbox"),
        "{stderr}"
    );
    assert!(!dir.path().join("ledger").exists(), "no ledger is written");
}
