//! A small RESP2 client for the `redis-acl` store: one TCP connection, commands as byte
//! strings, replies parsed with size limits and a timeout on every exchange. Owns the wire
//! format only; must not know about keys, ACL rules or secrets (callers redact).

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Longest reply line, and largest bulk string, accepted from the server.
const MAX_LINE: usize = 64 * 1024;
const MAX_BULK: usize = 64 * 1024 * 1024;
const MAX_ITEMS: i64 = 1_000_000;

/// One RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Status(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// The reply as text (status or bulk string).
    pub fn text(&self) -> Option<String> {
        match self {
            Reply::Status(s) => Some(s.clone()),
            Reply::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }
    pub fn items(&self) -> &[Reply] {
        match self {
            Reply::Array(Some(v)) => v,
            _ => &[],
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RespError {
    #[error("cannot reach Redis at {addr}: {why}")]
    Connect { addr: String, why: String },
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("Redis connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed reply from Redis: {0}")]
    Protocol(String),
}

/// Where to connect, parsed from `redis://[user[:password]@]host[:port][/db]`. The password
/// is kept out of `Debug`.
#[derive(Clone)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub user: Option<String>,
    pub password: Option<secrecy::SecretString>,
    pub db: Option<u32>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "redis://{}:{}", self.host, self.port)
    }
}

impl Target {
    pub fn parse(url: &str) -> Result<Target, String> {
        let rest = url
            .strip_prefix("redis://")
            .ok_or("a Redis URL starts with redis:// (TLS is not supported)")?;
        let (auth, hostpart) = match rest.rsplit_once('@') {
            Some((a, h)) => (Some(a), h),
            None => (None, rest),
        };
        let (hostport, db) = match hostpart.split_once('/') {
            Some((h, "")) => (h, None),
            Some((h, d)) => (
                h,
                Some(d.parse::<u32>().map_err(|_| "the database is a number")?),
            ),
            None => (hostpart, None),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
                (h, p.parse::<u16>().map_err(|_| "the port is a number")?)
            }
            _ => (hostport, 6379),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err("the Redis URL has no host".into());
        }
        let (user, password) = match auth {
            None => (None, None),
            Some(a) => match a.split_once(':') {
                Some((u, p)) => (
                    (!u.is_empty()).then(|| u.to_owned()),
                    Some(secrecy::SecretString::from(p.to_owned())),
                ),
                None => (Some(a.to_owned()), None),
            },
        };
        Ok(Target {
            host: host.to_owned(),
            port,
            user,
            password,
            db,
        })
    }

    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// One connection.
pub struct Conn {
    io: BufReader<TcpStream>,
    timeout: Duration,
}

impl Conn {
    /// Connect, without authenticating.
    pub async fn open(t: &Target, timeout: Duration) -> Result<Conn, RespError> {
        let addr = t.addr();
        let stream = tokio::time::timeout(timeout, TcpStream::connect(&addr))
            .await
            .map_err(|_| RespError::Connect {
                addr: addr.clone(),
                why: format!("no answer within {timeout:?}"),
            })?
            .map_err(|e| RespError::Connect {
                addr: addr.clone(),
                why: e.to_string(),
            })?;
        let _ = stream.set_nodelay(true);
        Ok(Conn {
            io: BufReader::new(stream),
            timeout,
        })
    }

    /// Connect and authenticate with the URL's credentials, selecting its database.
    pub async fn connect(t: &Target, timeout: Duration) -> Result<Conn, RespError> {
        use secrecy::ExposeSecret;
        let mut c = Conn::open(t, timeout).await?;
        if let Some(p) = &t.password {
            let user = t.user.clone().unwrap_or_else(|| "default".into());
            let r = c
                .cmd(&[b"AUTH", user.as_bytes(), p.expose_secret().as_bytes()])
                .await?;
            if let Reply::Error(e) = r {
                return Err(RespError::Connect {
                    addr: t.addr(),
                    why: format!("authentication refused ({})", first_word(&e)),
                });
            }
        }
        if let Some(db) = t.db {
            let r = c.cmd(&[b"SELECT", db.to_string().as_bytes()]).await?;
            if let Reply::Error(e) = r {
                return Err(RespError::Protocol(e));
            }
        }
        Ok(c)
    }

    /// Send one command and read its reply.
    pub async fn cmd(&mut self, args: &[&[u8]]) -> Result<Reply, RespError> {
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for a in args {
            buf.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            buf.extend_from_slice(a);
            buf.extend_from_slice(b"\r\n");
        }
        let timeout = self.timeout;
        tokio::time::timeout(timeout, async {
            self.io.get_mut().write_all(&buf).await?;
            read_reply(&mut self.io).await
        })
        .await
        .map_err(|_| RespError::Timeout(timeout))?
    }
}

/// The error code of a Redis error reply (`WRONGPASS`, `NOPERM`, ...).
pub fn first_word(e: &str) -> &str {
    e.split_whitespace().next().unwrap_or("ERR")
}

async fn read_line(io: &mut BufReader<TcpStream>) -> Result<String, RespError> {
    let mut line = Vec::new();
    let n = (&mut *io)
        .take(MAX_LINE as u64 + 2)
        .read_until(b'\n', &mut line)
        .await?;
    if n == 0 {
        return Err(RespError::Protocol("connection closed".into()));
    }
    if !line.ends_with(b"\r\n") {
        return Err(RespError::Protocol("reply line too long or cut".into()));
    }
    line.truncate(line.len() - 2);
    String::from_utf8(line).map_err(|_| RespError::Protocol("reply line is not UTF-8".into()))
}

fn read_reply(
    io: &mut BufReader<TcpStream>,
) -> futures::future::BoxFuture<'_, Result<Reply, RespError>> {
    Box::pin(async move {
        let line = read_line(io).await?;
        let (tag, rest) = line.split_at(line.len().min(1));
        let num = || {
            rest.parse::<i64>()
                .map_err(|_| RespError::Protocol(format!("bad length `{rest}`")))
        };
        Ok(match tag {
            "+" => Reply::Status(rest.to_owned()),
            "-" => Reply::Error(rest.to_owned()),
            ":" => Reply::Int(num()?),
            "$" => {
                let n = num()?;
                if n < 0 {
                    return Ok(Reply::Bulk(None));
                }
                let n = usize::try_from(n).unwrap_or(usize::MAX);
                if n > MAX_BULK {
                    return Err(RespError::Protocol("bulk reply too large".into()));
                }
                let mut b = vec![0u8; n + 2];
                io.read_exact(&mut b).await?;
                b.truncate(n);
                Reply::Bulk(Some(b))
            }
            "*" => {
                let n = num()?;
                if n < 0 {
                    return Ok(Reply::Array(None));
                }
                if n > MAX_ITEMS {
                    return Err(RespError::Protocol("array reply too large".into()));
                }
                let mut v = Vec::with_capacity(n.min(1024) as usize);
                for _ in 0..n {
                    v.push(read_reply(io).await?);
                }
                Reply::Array(Some(v))
            }
            _ => return Err(RespError::Protocol("unknown reply type".into())),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::Target;

    #[test]
    fn urls_parse() {
        let t = Target::parse("redis://127.0.0.1:6380/2").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.db),
            ("127.0.0.1", 6380, Some(2))
        );
        let t = Target::parse("redis://admin:pw@localhost").unwrap();
        assert_eq!((t.user.as_deref(), t.port), (Some("admin"), 6379));
        assert_eq!(format!("{t:?}"), "redis://localhost:6379");
        let t = Target::parse("redis://[::1]:7000").unwrap();
        assert_eq!((t.host.as_str(), t.addr()), ("::1", "[::1]:7000".into()));
        assert!(Target::parse("rediss://x").is_err());
        assert!(Target::parse("redis://:pw@/").is_err());
    }
}
