//! `keyward serve` under hostile connections, with real sockets on loopback (issue 15, item
//! 11): 1,100 half-open requests leave healthz and verify answering; at the open-file limit
//! connections wait (backpressure) and slow ones are closed by the header timeout; a
//! slowloris client and an idle keep-alive connection are closed after the header timeout;
//! a request whose body never completes is answered 408; HTTPS with a test certificate and
//! a SIGHUP reload picking up a new one.

mod certs_common;
mod needs;
mod serve_common;
use serve_common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// This test process opens more sockets than a default soft limit of 1,024 allows.
fn raise_own_open_file_limit() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let l = getrlimit(Resource::Nofile);
    let want = l.maximum.unwrap_or(1 << 16).min(1 << 16);
    if l.current.is_some_and(|c| c < want) {
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(want),
                maximum: l.maximum,
            },
        )
        .expect("raise this test's open-file soft limit");
    }
}

/// The log without colour escapes.
fn plain(log: &str) -> String {
    let mut out = String::new();
    let mut esc = false;
    for c in log.chars() {
        match (esc, c) {
            (false, '\u{1b}') => esc = true,
            (true, 'm') => esc = false,
            (true, _) => {}
            (false, c) => out.push(c),
        }
    }
    out
}

fn addr_of(server: &Server) -> String {
    server
        .url
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .to_string()
}

/// One request on a fresh connection (`Connection: close`); the whole answer, or a panic
/// naming `what` when none comes within `bound`.
fn answer_within(addr: &str, request: &str, bound: Duration, what: &str) -> String {
    let start = Instant::now();
    let sa = addr.parse().unwrap();
    let mut s = TcpStream::connect_timeout(&sa, bound)
        .unwrap_or_else(|e| panic!("{what}: cannot connect: {e}"));
    s.set_read_timeout(Some(bound)).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => panic!(
                "{what}: no complete answer within {bound:?} ({e}); got {:?}",
                String::from_utf8_lossy(&out)
            ),
        }
        assert!(
            start.elapsed() < bound,
            "{what}: answer took over {bound:?}"
        );
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn healthz() -> String {
    "GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".to_string()
}

fn verify_request(token: &str) -> String {
    let body = r#"{"key":"kw_prod_nope"}"#;
    format!(
        "POST /v1/verify HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Open `n` connections that each send part of a request and then nothing: every other
/// one stops inside the request head (slowloris), the rest inside the body.
fn half_open(addr: &str, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|i| {
            let mut s = TcpStream::connect(addr).expect("connect a half-open request");
            let part = if i % 2 == 0 {
                "GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: "
            } else {
                "POST /v1/verify HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{\"key\": \"kw_"
            };
            s.write_all(part.as_bytes()).unwrap();
            s
        })
        .collect()
}

fn start(dir: &Path, extra: &[&str], ulimit: Option<&str>) -> Server {
    Server::start_with(dir, "sqlite:serve.db", "127.0.0.1:0", extra, ulimit, &[])
}

#[test]
fn eleven_hundred_half_open_requests_leave_healthz_and_verify_answering() {
    raise_own_open_file_limit();
    let dir = tempfile::tempdir().unwrap();
    let app = make_token(&dir.path().join("tokens.yaml"), "app", "verify");
    // The soft limit most machines start a service with; the hard one is left as it is.
    let server = start(dir.path(), &[], Some("-Sn 1024"));
    let addr = addr_of(&server);
    let held = half_open(&addr, 1100);
    let bound = Duration::from_secs(3);
    for round in 0..3 {
        let h = answer_within(&addr, &healthz(), bound, "healthz");
        assert!(h.starts_with("HTTP/1.1 200"), "round {round}: {h}");
        let v = answer_within(&addr, &verify_request(&app), bound, "verify");
        assert!(v.starts_with("HTTP/1.1 200"), "round {round}: {v}");
        assert!(v.contains(r#""valid":false"#), "{v}");
    }
    drop(held);
    assert!(
        server.log().contains("connection limits"),
        "{}",
        server.log()
    );
}

#[test]
fn at_the_open_file_limit_connections_wait_and_slow_ones_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    make_token(&dir.path().join("tokens.yaml"), "app", "verify");
    // Hard limit 400: the server fits its cap under it (272 connections), the rest wait in
    // the listen queue until the header timeout closes the slow ones.
    let server = start(dir.path(), &["--header-timeout", "2s"], Some("-n 400"));
    let addr = addr_of(&server);
    let held = half_open(&addr, 330);
    let start = Instant::now();
    let h = answer_within(&addr, &healthz(), Duration::from_secs(8), "healthz");
    assert!(h.starts_with("HTTP/1.1 200"), "{h}");
    eprintln!(
        "healthz answered after {:?} behind 330 slow connections",
        start.elapsed()
    );
    drop(held);
    let log = plain(&server.log());
    assert!(log.contains("max_connections=272"), "{log}");
    assert!(
        !log.contains("accept failed"),
        "the cap must keep accept under the limit: {log}"
    );
}

/// Read until the peer closes (Ok(0) or a reset); returns when, or None within `bound`.
fn closed_after(
    s: &mut TcpStream,
    bound: Duration,
    mut keep_writing: impl FnMut(&mut TcpStream),
) -> Option<Duration> {
    let start = Instant::now();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 4096];
    while start.elapsed() < bound {
        keep_writing(s);
        match s.read(&mut buf) {
            Ok(0) => return Some(start.elapsed()),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return Some(start.elapsed()),
        }
    }
    None
}

#[test]
fn a_slowloris_and_an_idle_connection_are_closed_after_the_header_timeout() {
    let dir = tempfile::tempdir().unwrap();
    make_token(&dir.path().join("tokens.yaml"), "app", "verify");
    let server = start(dir.path(), &["--header-timeout", "1s"], None);
    let addr = addr_of(&server);

    // Slowloris: a header line every 200 ms, never the blank line that ends the head.
    let mut s = TcpStream::connect(&addr).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")
        .unwrap();
    let mut i = 0;
    let t = closed_after(&mut s, Duration::from_secs(6), |s| {
        i += 1;
        let _ = s.write_all(format!("X-Slow-{i}: 1\r\n").as_bytes());
    })
    .expect("the slowloris connection was still open after 6 s");
    assert!(
        t >= Duration::from_millis(800) && t < Duration::from_secs(4),
        "{t:?}"
    );

    // Idle keep-alive: one answered request, then silence.
    let mut s = TcpStream::connect(&addr).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let t = closed_after(&mut s, Duration::from_secs(6), |_| {})
        .expect("the idle connection was still open after 6 s");
    assert!(
        t >= Duration::from_millis(800) && t < Duration::from_secs(4),
        "{t:?}"
    );

    // The server itself is fine.
    let h = answer_within(&addr, &healthz(), Duration::from_secs(3), "healthz");
    assert!(h.starts_with("HTTP/1.1 200"), "{h}");
}

#[test]
fn a_body_that_never_completes_is_answered_408_after_the_request_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let app = make_token(&dir.path().join("tokens.yaml"), "app", "verify");
    let server = start(dir.path(), &["--request-timeout", "1s"], None);
    let addr = addr_of(&server);
    let req = format!(
        "POST /v1/verify HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {app}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"key\": \"kw_"
    );
    let start = Instant::now();
    let a = answer_within(&addr, &req, Duration::from_secs(5), "the slow body");
    assert!(a.starts_with("HTTP/1.1 408"), "{a}");
    assert!(a.contains("request_timeout"), "{a}");
    assert!(
        start.elapsed() >= Duration::from_millis(900),
        "{:?}",
        start.elapsed()
    );
}

/// One HTTPS request trusting `ca`; returns (status line, the certificate the server showed).
fn https_healthz(addr: &str, ca: &Path) -> (String, Vec<u8>) {
    use rustls::pki_types::pem::PemObject;
    install_crypto();
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = "localhost".try_into().unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    tls.write_all(healthz().as_bytes())
        .expect("TLS handshake and request");
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out);
    let cert = tls.conn.peer_certificates().unwrap()[0].to_vec();
    let text = String::from_utf8_lossy(&out).into_owned();
    (text.lines().next().unwrap_or("").to_string(), cert)
}

fn der_of(pem: &Path) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_file(pem)
        .unwrap()
        .to_vec()
}

#[test]
fn https_with_a_test_certificate_and_a_sighup_reload() {
    if !needs::tool(&needs::OPENSSL) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    make_token(&dir.path().join("tokens.yaml"), "app", "verify");
    let (ca1, cert1, key1) = certs_common::make_certs(dir.path(), "one");
    let (ca2, cert2, key2) = certs_common::make_certs(dir.path(), "two");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::copy(&cert1, &cert).unwrap();
    std::fs::copy(&key1, &key).unwrap();
    let server = start(
        dir.path(),
        &["--tls-cert", "cert.pem", "--tls-key", "key.pem"],
        None,
    );
    assert!(server.url.starts_with("https://"), "{}", server.url);
    let addr = addr_of(&server);
    let (status, shown) = https_healthz(&addr, &ca1);
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(shown, der_of(&cert1));
    // Plain HTTP on the TLS port gets no answer.
    let mut plain = TcpStream::connect(&addr).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    plain.write_all(healthz().as_bytes()).unwrap();
    let mut buf = Vec::new();
    let _ = plain.read_to_end(&mut buf);
    assert!(!String::from_utf8_lossy(&buf).contains("200 OK"));

    // New files, then SIGHUP: new handshakes show the new certificate.
    std::fs::copy(&cert2, &cert).unwrap();
    std::fs::copy(&key2, &key).unwrap();
    let pid = rustix::process::Pid::from_child(&server.child);
    rustix::process::kill_process(pid, rustix::process::Signal::HUP).unwrap();
    let both = dir.path().join("both-ca.pem");
    let mut pems = std::fs::read(&ca1).unwrap();
    pems.extend(std::fs::read(&ca2).unwrap());
    std::fs::write(&both, pems).unwrap();
    let start = Instant::now();
    loop {
        let (status, shown) = https_healthz(&addr, &both);
        assert_eq!(status, "HTTP/1.1 200 OK");
        if shown == der_of(&cert2) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "SIGHUP did not reload the certificate: {}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // A broken file on reload keeps the certificate in force.
    std::fs::write(&key, "not a key").unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::HUP).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let (status, shown) = https_healthz(&addr, &ca2);
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(shown, der_of(&cert2));
    assert!(server.log().contains("not reloaded"), "{}", server.log());
}
