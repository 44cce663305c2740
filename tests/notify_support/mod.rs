//! Test helpers for notifications: a real HTTP receiver on loopback (a std TcpListener
//! thread answering 200 and recording each request with its headers and body).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request the HTTP receiver got.
#[derive(Debug, Clone)]
pub struct Call {
    pub request_line: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Call {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("the webhook body is JSON")
    }
}

/// The real HTTP receiver: a TcpListener thread answering 200 to each request.
pub struct Hook {
    calls: Arc<Mutex<Vec<Call>>>,
    stop: Arc<AtomicBool>,
}

fn read_request(stream: &mut TcpStream) -> Option<Call> {
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line).ok()?;
    let mut headers = Vec::new();
    loop {
        let mut l = String::new();
        reader.read_line(&mut l).ok()?;
        let l = l.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':')?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).ok()?;
    Some(Call {
        request_line: request_line.trim_end().to_string(),
        headers,
        body,
    })
}

impl Hook {
    pub fn start(port: u16) -> Hook {
        Hook::start_with(port, |_, _| 200)
    }

    /// A receiver answering `status(n, call)` to its n-th request (0-based) instead of 200.
    pub fn start_with(port: u16, status: impl Fn(usize, &Call) -> u16 + Send + 'static) -> Hook {
        Hook::start_answering(port, move |n, call| (status(n, call), None))
    }

    /// A receiver answering `answer(n, call)`: the status and, if any, a `Retry-After`
    /// header's value.
    pub fn start_answering(
        port: u16,
        answer: impl Fn(usize, &Call) -> (u16, Option<String>) + Send + 'static,
    ) -> Hook {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind the webhook port");
        listener.set_nonblocking(true).unwrap();
        let calls = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (calls.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        stream.set_nonblocking(false).ok();
                        let Some(call) = read_request(&mut stream) else {
                            continue;
                        };
                        let (code, retry_after) = {
                            let mut calls = c.lock().unwrap();
                            let answer = answer(calls.len(), &call);
                            calls.push(call);
                            answer
                        };
                        let retry_after = retry_after
                            .map(|v| format!("Retry-After: {v}\r\n"))
                            .unwrap_or_default();
                        let _ = stream.write_all(
                            format!(
                                "HTTP/1.1 {code} Answer\r\n{retry_after}Content-Length: 0\r\nConnection: close\r\n\r\n"
                            )
                            .as_bytes(),
                        );
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Hook { calls, stop }
    }
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
}

impl Drop for Hook {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// A port nothing listens on now (for a receiver started later, or never).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
