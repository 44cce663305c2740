//! Hostile input against the service: schemathesis (PyPI, installed by `.ci/run`) generates
//! requests from `schemas/openapi.yaml` (valid and invalid ones) against a real
//! `keyward serve` on loopback with a write token, and fails on any 5xx
//! (`not_a_server_error`) or any answer that breaks the document: an undocumented status,
//! content type or header, or a body that does not match its schema. CI setting: 25 examples per operation
//! (`KEYWARD_SCHEMATHESIS_EXAMPLES` overrides it; the long setting is in docs/proof.md).
//! Without schemathesis the test says so and passes outside CI, and fails under `CI=true`.

mod needs;
mod serve_common;

use std::process::Command;

use serde_json::Value;
use serve_common::{Server, client, make_token, new_key};

const CI_EXAMPLES: u32 = 25;

/// No 5xx, and every answer as documented: its status, content type, headers and body.
/// (Not `positive_data_acceptance`: the store refuses some schema-valid values, such as a
/// stale `If-Match` or `880.0` for an integer, with a documented 4xx.)
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
                      response_headers_conformance,response_schema_conformance";

fn schemathesis_version() -> Option<String> {
    let o = Command::new("schemathesis")
        .arg("--version")
        .output()
        .ok()?;
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

#[test]
fn schemathesis_finds_no_server_error_and_no_schema_violation() {
    if !needs::tool(&needs::SCHEMATHESIS) {
        return;
    }
    let version = schemathesis_version().expect("schemathesis --version");
    let examples = std::env::var("KEYWARD_SCHEMATHESIS_EXAMPLES")
        .ok()
        .and_then(|s| s.parse::<u32>().ok())
        .unwrap_or(CI_EXAMPLES);
    let dir = tempfile::tempdir().expect("tempdir");
    let token = make_token(&dir.path().join("tokens.yaml"), "fuzz", "write");
    let server = Server::start(dir.path(), &[]);

    // A few keys, so that listing, paging and events answer with real items.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let c = client();
    for i in 0..3 {
        let (body, _secret) = new_key(&format!("fuzz-seed-{i}"), "production", Some(1000));
        let status = rt.block_on(async {
            c.post(format!("{}/v1/keys", server.url))
                .bearer_auth(&token)
                .json(&body)
                .send()
                .await
                .expect("create")
                .status()
        });
        assert_eq!(status.as_u16(), 201);
    }

    let report = dir.path().join("schemathesis.json");
    let schema = concat!(env!("CARGO_MANIFEST_DIR"), "/schemas/openapi.yaml");
    let o = Command::new("schemathesis")
        .arg("run")
        .arg(schema)
        .args(["--url", &server.url])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args(["--checks", CHECKS])
        .args(["--max-examples", &examples.to_string()])
        .args(["--seed", "6"])
        .args(["--workers", "1"])
        .args(["--request-timeout", "10"])
        .args(["--report", "ndjson", "--report-ndjson-path"])
        .arg(&report)
        .env("NO_COLOR", "1")
        .env("SCHEMATHESIS_HOOKS", "")
        .current_dir(dir.path())
        .output()
        .expect("run schemathesis");
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    let log = server.stop();
    // The run must have sent requests: the ndjson report holds its events.
    let events: Vec<Value> = std::fs::read_to_string(&report)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    eprintln!(
        "{version}, {examples} examples per operation, {} report events\n{stdout}",
        events.len()
    );
    assert!(
        o.status.success(),
        "schemathesis found problems (exit {:?}):\n{stdout}\n{stderr}\nserver log:\n{log}",
        o.status.code()
    );
    assert!(
        stdout.contains("passed") && !events.is_empty(),
        "schemathesis ran nothing:\n{stdout}\n{stderr}"
    );
    assert!(
        !log.contains("panicked"),
        "a handler panicked under fuzzing:\n{log}"
    );
}
