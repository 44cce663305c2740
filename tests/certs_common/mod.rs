//! Test certificates made with the openssl CLI: a test CA and a server certificate for
//! localhost/127.0.0.1 signed by it. Callers check `needs::tool(&needs::OPENSSL)` first.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// A test CA and a server certificate for localhost/127.0.0.1 signed by it (openssl CLI).
/// Returns (ca.pem, server.pem, server.key).
pub fn make_certs(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let p = |f: &str| dir.join(format!("{name}-{f}"));
    let run = |args: &[&str]| {
        let o = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("the openssl CLI (.ci/run installs it)");
        assert!(
            o.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    let s = |p: &PathBuf| p.to_str().unwrap().to_string();
    let (ca, ca_key, key, csr, cert, ext) = (
        p("ca.pem"),
        p("ca.key"),
        p("server.key"),
        p("server.csr"),
        p("server.pem"),
        p("ext.cnf"),
    );
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut a = vec!["req", "-x509"];
    a.extend(ec);
    let (cas, cakeys) = (s(&ca), s(&ca_key));
    a.extend([
        "-keyout",
        &cakeys,
        "-out",
        &cas,
        "-days",
        "2",
        "-subj",
        "/CN=keyward test CA",
    ]);
    run(&a);
    let mut a = vec!["req"];
    a.extend(ec);
    let (keys, csrs) = (s(&key), s(&csr));
    a.extend(["-keyout", &keys, "-out", &csrs, "-subj", "/CN=localhost"]);
    run(&a);
    std::fs::write(
        &ext,
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let (certs, exts) = (s(&cert), s(&ext));
    run(&[
        "x509",
        "-req",
        "-in",
        &csrs,
        "-CA",
        &cas,
        "-CAkey",
        &cakeys,
        "-CAcreateserial",
        "-out",
        &certs,
        "-days",
        "2",
        "-extfile",
        &exts,
    ]);
    (ca, cert, key)
}
