//! `keyward token create`/`revoke` run at the same time, as real processes on one tokens
//! file: every change survives (issue 15, item 7: a revocation silently undone by a
//! concurrent write).

mod serve_common;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};

fn token(tokens: &Path, args: &[&str]) -> Child {
    Command::new(serve_common::bin())
        .arg("token")
        .args(args)
        .arg("--tokens")
        .arg(tokens)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run keyward token")
}

fn names(tokens: &Path) -> BTreeSet<String> {
    let o = Command::new(serve_common::bin())
        .args(["token", "list", "--tokens"])
        .arg(tokens)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split('\t').next().map(str::to_string))
        .collect()
}

#[test]
fn concurrent_token_creates_and_revokes_lose_no_change() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.yaml");
    const N: usize = 30;
    for round in 0..3 {
        let old: Vec<String> = (0..N).map(|i| format!("r{round}-old-{i}")).collect();
        let new: Vec<String> = (0..N).map(|i| format!("r{round}-new-{i}")).collect();
        for name in &old {
            serve_common::make_token(&tokens, name, "read");
        }
        // Every revoke and every create at once, interleaved.
        let mut children = Vec::new();
        for (o, n) in old.iter().zip(&new) {
            children.push((format!("revoke {o}"), token(&tokens, &["revoke", o])));
            children.push((
                format!("create {n}"),
                token(&tokens, &["create", n, "--role", "verify"]),
            ));
        }
        for (what, c) in children {
            let out = c.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "round {round}: {what}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let have = names(&tokens);
        let resurrected: Vec<&String> = old.iter().filter(|n| have.contains(*n)).collect();
        let lost: Vec<&String> = new.iter().filter(|n| !have.contains(*n)).collect();
        assert!(
            resurrected.is_empty() && lost.is_empty(),
            "round {round}: revoked tokens back in the file: {resurrected:?}; created tokens lost: {lost:?}"
        );
        // No temporary files are left beside the tokens file.
        let stray: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(stray.is_empty(), "{stray:?}");
    }
}
