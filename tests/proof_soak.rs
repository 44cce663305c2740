//! Load with faults, CI setting: runs `bench/soak.sh --seconds 10` against the binary under
//! test (`keyward serve` on SQLite on loopback under wrk verify load while `keyward apply`
//! creates, rotates and revokes keys through the `http` store) and checks what it prints:
//! zero failed verifies for valid keys, zero lost writes, applies and verifies happened,
//! server RSS flat. The long setting (`bench/soak.sh --seconds 600`) is in docs/proof.md.
//! Needs `wrk` and `python3` (installed by `.ci/run`): without them the test says so and
//! passes outside CI, and fails under `CI=true`.

mod needs;

use std::collections::BTreeMap;
use std::process::Command;

/// Seconds of load in the CI setting (`KEYWARD_SOAK_SECONDS` overrides it).
const CI_SECONDS: u64 = 10;

#[test]
fn soak_verifies_under_applies_lose_nothing_and_memory_stays_flat() {
    if !needs::tool(&needs::WRK) || !needs::tool(&needs::PYTHON3) {
        return;
    }
    let seconds = std::env::var("KEYWARD_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(CI_SECONDS);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/soak.sh");
    let o = Command::new("bash")
        .arg(script)
        .args(["--seconds", &seconds.to_string()])
        .env("KEYWARD_BIN", assert_cmd::cargo::cargo_bin("keyward"))
        .env_remove("KEYWARD_FAILPOINT")
        .env_remove("KEYWARD_LOG")
        .output()
        .expect("run bench/soak.sh");
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    eprintln!("bench/soak.sh --seconds {seconds}:\n{stdout}{stderr}");
    let kv: BTreeMap<&str, &str> = stdout
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect();
    let num = |k: &str| -> f64 {
        kv.get(k)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("soak printed no number for {k}: {stdout}{stderr}"))
    };
    assert_eq!(num("failed_verifies"), 0.0, "verifies of valid keys failed");
    assert_eq!(num("lost_writes"), 0.0, "writes were lost");
    assert!(num("verifies") > 100.0, "hardly any load: {stdout}");
    assert!(
        num("applies") >= 2.0,
        "fewer than two applies ran: {stdout}"
    );
    let growth = num("rss_growth_pct");
    assert!(
        growth < 10.0,
        "server RSS grew {growth}% from the middle to the end"
    );
    assert!(
        o.status.success(),
        "bench/soak.sh failed a check: {stdout}{stderr}"
    );
}
