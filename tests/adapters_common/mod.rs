//! Shared helpers for the tests of the stores keyward reaches but does not run (the test
//! target declares `mod needs;` too: missing tools go through it), the machine's Redis, a throwaway SCRAM-only PostgreSQL cluster (initdb into a temp dir,
//! a free port, stopped on drop), and raw logins to both.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use keyward::store::check::{CheckOptions, CheckReport};

/// The Redis the tests use (`KEYWARD_TEST_REDIS_URL`, default redis://127.0.0.1:6379), or
/// None after the SKIP line (a failure under CI=true) when nothing answers there.
#[track_caller]
pub fn redis_url() -> Option<String> {
    crate::needs::redis_url()
}

/// One RESP command on a raw connection; the reply's first line (errors start with `-`).
pub fn resp(conn: &mut BufReader<TcpStream>, args: &[&str]) -> String {
    let mut out = format!("*{}\r\n", args.len());
    for a in args {
        out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    conn.get_mut()
        .write_all(out.as_bytes())
        .expect("write to Redis");
    let mut line = String::new();
    conn.read_line(&mut line).expect("read from Redis");
    line.trim_end().to_owned()
}

/// Every byte of one reply (for searching ACL GETUSER / ACL LIST output).
pub fn resp_all(addr: &str, args: &[&str]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).expect("connect to Redis");
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut out = format!("*{}\r\n", args.len());
    for a in args {
        out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s.write_all(out.as_bytes()).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        match std::io::Read::read(&mut s, &mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    buf
}

pub fn redis_conn(addr: &str) -> BufReader<TcpStream> {
    let s = TcpStream::connect(addr).expect("connect to Redis");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    BufReader::new(s)
}

/// `AUTH user secret` on a fresh connection: the reply line.
pub fn redis_auth(addr: &str, user: &str, secret: &str) -> (String, BufReader<TcpStream>) {
    let mut c = redis_conn(addr);
    let r = resp(&mut c, &["AUTH", user, secret]);
    (r, c)
}

/// Removes everything a test made under `prefix` in Redis (users and keyward's keys).
pub struct RedisCleanup {
    pub addr: String,
    pub prefix: String,
}

impl Drop for RedisCleanup {
    fn drop(&mut self) {
        let list = resp_all(&self.addr, &["ACL", "USERS"]);
        let text = String::from_utf8_lossy(&list).into_owned();
        let mut c = redis_conn(&self.addr);
        for user in text.lines().filter(|l| l.starts_with(&self.prefix)) {
            let _ = resp(&mut c, &["ACL", "DELUSER", user]);
        }
        for what in ["keys", "users", "events", "lock"] {
            let _ = resp(
                &mut c,
                &["DEL", &format!("keyward:acl:{}:{what}", self.prefix)],
            );
        }
    }
}

/// A unique prefix for one test.
pub fn unique(stem: &str) -> String {
    let mut b = [0u8; 4];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut b);
    format!("{stem}{}-", hex::encode(b))
}

/// Kit options for tests.
pub fn kit(environment: &str, scopes: &[&str], paging_keys: usize) -> CheckOptions {
    CheckOptions {
        environment: environment.into(),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        paging_keys,
    }
}

/// Print the kit's table (visible with --nocapture) and fail on any failed row.
pub fn assert_passed(report: &CheckReport) {
    let table = report.table();
    println!("{table}");
    assert!(report.passed(), "store check failed:\n{table}");
}

/// A throwaway PostgreSQL cluster that only accepts SCRAM-SHA-256 passwords.
pub struct ScramCluster {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub password: String,
    bin: PathBuf,
    as_postgres: bool,
}

impl ScramCluster {
    /// Start one, or None after the SKIP line when initdb/pg_ctl are missing.
    #[track_caller]
    pub fn start() -> Option<ScramCluster> {
        if !crate::needs::tool(&crate::needs::INITDB) {
            return None;
        }
        let bin = crate::needs::pg_bin().expect("the PostgreSQL server binaries");
        let dir = tempfile::tempdir().expect("tempdir");
        let root = {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
        };
        let mut b = [0u8; 12];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut b);
        let password = hex::encode(b);
        std::fs::write(dir.path().join("pw"), &password).unwrap();
        if root {
            // initdb refuses to run as root: the cluster belongs to `postgres`.
            let st = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .expect("chown");
            assert!(st.success(), "chown the cluster directory to postgres");
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let c = ScramCluster {
            dir,
            port,
            password,
            bin,
            as_postgres: root,
        };
        let data = c.data();
        let pw = c.dir.path().join("pw");
        c.run(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "--auth=scram-sha-256",
                "--no-sync",
                "-E",
                "UTF8",
                &format!("--pwfile={}", pw.display()),
            ],
        );
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off",
            c.port,
            c.dir.path().display()
        );
        let log = c.dir.path().join("log");
        c.run(
            "pg_ctl",
            &[
                "-D",
                &data,
                "-o",
                &opts,
                "-l",
                &log.display().to_string(),
                "-w",
                "start",
            ],
        );
        Some(c)
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let exe = self.bin.join(tool);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let out = cmd
            .args(args)
            .current_dir("/")
            .output()
            .expect("run a PostgreSQL tool");
        assert!(
            out.status.success(),
            "{tool} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The superuser's URL.
    pub fn admin_url(&self) -> String {
        format!(
            "postgres://postgres:{}@127.0.0.1:{}/postgres",
            self.password, self.port
        )
    }

    /// A real login as `user` with `password` (TCP, SCRAM).
    pub async fn login(
        &self,
        user: &str,
        password: &str,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host("127.0.0.1")
            .port(self.port)
            .dbname("postgres")
            .user(user)
            .password(password);
        cfg.connect_timeout(Duration::from_secs(5));
        let (client, conn) = cfg.connect(tokio_postgres::NoTls).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }

    pub async fn admin(&self) -> tokio_postgres::Client {
        self.login("postgres", &self.password.clone())
            .await
            .expect("superuser login")
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for ScramCluster {
    fn drop(&mut self) {
        let data = self.data();
        let exe = self.bin.join("pg_ctl");
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let _ = cmd
            .args(["-D", &data, "-m", "immediate", "stop"])
            .current_dir("/")
            .output();
    }
}

pub fn actor() -> keyward::store::Actor {
    keyward::store::Actor {
        who: "test".into(),
        commit: None,
    }
}

/// Now, to the second (stores keep seconds).
pub fn now() -> chrono::DateTime<chrono::Utc> {
    use chrono::DurationRound;
    chrono::Utc::now()
        .duration_trunc(chrono::Duration::seconds(1))
        .unwrap()
}

/// A managed key of owner jdoe for `store`, expiring `expires_in` from now, with its secret
/// in the form the store takes.
pub fn new_key(
    store: &dyn keyward::store::Store,
    environment: &str,
    name: &str,
    scopes: &[&str],
    expires_in: chrono::Duration,
) -> (keyward::store::NewKey, keyward::secret::Secret) {
    let id = keyward::secret::new_key_id();
    let sec = keyward::secret::generate(environment, &id);
    let key = keyward::store::NewKey {
        id,
        name: name.into(),
        environment: environment.into(),
        owner: "jdoe".into(),
        purpose: Some("integration".into()),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        labels: std::collections::BTreeMap::new(),
        status: keyward::store::KeyStatus::Active,
        issued_at: now() - chrono::Duration::seconds(5),
        expires_at: Some(now() + expires_in),
        lifetime: None,
        generation: 1,
        spec_generation: 1,
        recipients: std::collections::BTreeMap::from([("jdoe".into(), "fp".into())]),
        quota_per_day: None,
        protected: false,
        managed_by: Some(keyward::store::MANAGED_BY.into()),
        applied_digest: None,
        secret_hash: store.secret_form(&sec).expect("secret form"),
    };
    (key, sec)
}

/// A rotation of key `id` to a new secret, the previous one valid for `grace`.
pub fn rotation(
    store: &dyn keyward::store::Store,
    environment: &str,
    id: &str,
    grace: chrono::Duration,
) -> (keyward::store::Rotate, keyward::secret::Secret) {
    let sec = keyward::secret::generate(environment, id);
    let r = keyward::store::Rotate {
        secret_hash: store.secret_form(&sec).expect("secret form"),
        previous_valid_until: Some(now() + grace),
        issued_at: now() - chrono::Duration::seconds(1),
        expires_at: Some(now() + chrono::Duration::days(30)),
        generation: 2,
        spec_generation: 2,
        recipients: std::collections::BTreeMap::from([("jdoe".into(), "fp".into())]),
    };
    (r, sec)
}
