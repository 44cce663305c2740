//! The `postgres-roles` store: each key is a PostgreSQL login role named `role_prefix` +
//! key name. Its password is a SCRAM-SHA-256 verifier computed by keyward (`scram`), so the
//! server never sees the plaintext; `VALID UNTIL` is the expiry; the key's scopes are
//! memberships in group roles through the grants table; keyward's record of the key (the
//! managed marker and everything else) is the role's COMMENT (`keyward:v1 {json}`). Roles
//! without that marker are listed as unmanaged and never changed. Must never send, log or
//! return a plaintext secret.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::sync::Mutex;
use tokio_postgres::{Client, NoTls};

use super::credential::{self, granted};
use super::rules::{self, Change};
use super::scram;
use super::{
    Capabilities, ExpiryMode, KeyWrite, Lease, ListFilter, Overlap, Page, PageAt, SecretMode,
    Store, StoreError, StoreResult, Verdict, VerifyReason, Writer,
};
use crate::model::{Actor, Event, KeyPatch, KeyStatus, LiveKey, NewKey, Rotate, SecretHash};
use crate::secret::{self, Secret};

/// The COMMENT prefix that marks a role as keyward's.
pub const MARKER: &str = "keyward:v1 ";

/// Connection settings of a `postgres-roles` store.
#[derive(Clone)]
pub struct PgRolesOptions {
    /// libpq-style URL of a role with CREATEROLE (and ADMIN on the group roles).
    pub url: String,
    pub role_prefix: String,
    /// scope -> group roles.
    pub grants: BTreeMap<String, Vec<String>>,
    /// Per statement and per connection attempt.
    pub timeout: Duration,
}

#[derive(Clone)]
pub struct PgRolesStore {
    name: String,
    opts: PgRolesOptions,
    cfg: tokio_postgres::Config,
    client: Arc<Mutex<Option<Client>>>,
    /// The session holding the apply lease (a session advisory lock), with its lease.
    lease: Arc<Mutex<Option<(Lease, Client)>>>,
}

fn pg(store: &str, what: &str, e: &tokio_postgres::Error) -> StoreError {
    let detail = e
        .as_db_error()
        .map(|d| format!("{} ({})", d.message(), d.code().code()))
        .unwrap_or_else(|| e.to_string());
    StoreError::Backend(format!("postgres-roles store `{store}`: {what}: {detail}"))
}

/// `"name"`, doubling quotes.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn capabilities() -> Capabilities {
    let mut c = rules::capabilities();
    c.native_expiry = true;
    c.expiry = Some(ExpiryMode::Native);
    c.rotation_overlap = Overlap::None;
    c.secret = SecretMode::ClientHash;
    // Logins are checked by PostgreSQL, which counts no calls.
    c.quota = false;
    // Nor keeps it who used a key.
    c.usage = false;
    // Nor can it refuse a login for a shared budget.
    c.budget = false;
    c
}

/// One role under the prefix, as read from the catalogue.
struct RoleRow {
    role: String,
    comment: Option<String>,
    can_login: bool,
}

impl RoleRow {
    fn record(&self) -> Option<LiveKey> {
        let json = self.comment.as_deref()?.strip_prefix(MARKER)?;
        serde_json::from_str(json).ok()
    }
}

impl PgRolesStore {
    /// Check the settings; connects on first use.
    pub fn new(name: &str, opts: PgRolesOptions) -> StoreResult<PgRolesStore> {
        let mut cfg: tokio_postgres::Config = opts
            .url
            .parse()
            .map_err(|_| StoreError::Invalid(format!("store `{name}`: not a PostgreSQL URL")))?;
        cfg.connect_timeout(opts.timeout);
        if cfg.get_application_name().is_none() {
            cfg.application_name("keyward");
        }
        credential::check_name("role_prefix", &opts.role_prefix, 32)?;
        for (scope, roles) in &opts.grants {
            for r in roles {
                credential::check_name(&format!("group role of {scope}"), r, 63)?;
            }
        }
        Ok(PgRolesStore {
            name: name.to_owned(),
            opts,
            cfg,
            client: Arc::new(Mutex::new(None)),
            lease: Arc::new(Mutex::new(None)),
        })
    }

    /// The role a key name maps to.
    pub fn role_for(&self, key_name: &str) -> String {
        format!("{}{key_name}", self.opts.role_prefix)
    }

    async fn connect(&self, cfg: &tokio_postgres::Config) -> Result<Client, tokio_postgres::Error> {
        let (client, conn) = cfg.connect(NoTls).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }

    async fn client(&self) -> StoreResult<tokio::sync::MutexGuard<'_, Option<Client>>> {
        let mut g = self.client.lock().await;
        if g.as_ref().is_none_or(Client::is_closed) {
            let c = self
                .connect(&self.cfg)
                .await
                .map_err(|e| pg(&self.name, "cannot connect", &e))?;
            *g = Some(c);
        }
        Ok(g)
    }

    async fn timed<T>(
        &self,
        what: &str,
        f: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> StoreResult<T> {
        match tokio::time::timeout(self.opts.timeout, f).await {
            Ok(r) => r.map_err(|e| pg(&self.name, what, &e)),
            Err(_) => Err(StoreError::Backend(format!(
                "postgres-roles store `{}`: {what}: no answer within {:?}",
                self.name, self.opts.timeout
            ))),
        }
    }

    async fn roles(&self, c: &impl tokio_postgres::GenericClient) -> StoreResult<Vec<RoleRow>> {
        self.roles_where(c, "", None).await
    }

    /// Roles under the prefix, narrowed to the role named `exact` or to the record of key
    /// id `exact` (`by_id`).
    async fn roles_where(
        &self,
        c: &impl tokio_postgres::GenericClient,
        by: &str,
        exact: Option<&str>,
    ) -> StoreResult<Vec<RoleRow>> {
        let narrow = match by {
            "name" => " AND rolname = $2",
            "id" => {
                " AND (rolname = substr($2, 6) OR strpos(shobj_description(oid, 'pg_authid'), '\"id\":' || to_json($2::text)::text) > 0)"
            }
            _ => "",
        };
        let sql = format!(
            "SELECT rolname::text, shobj_description(oid, 'pg_authid'), rolcanlogin \
             FROM pg_roles WHERE starts_with(rolname, $1){narrow}"
        );
        let rows = match exact {
            Some(x) => {
                self.timed("list roles", c.query(&sql, &[&self.opts.role_prefix, &x]))
                    .await?
            }
            None => {
                self.timed("list roles", c.query(&sql, &[&self.opts.role_prefix]))
                    .await?
            }
        };
        Ok(rows
            .iter()
            .map(|r| RoleRow {
                role: r.get(0),
                comment: r.get(1),
                can_login: r.get(2),
            })
            .collect())
    }

    fn unmanaged(&self, row: &RoleRow) -> LiveKey {
        let name = row
            .role
            .strip_prefix(&self.opts.role_prefix)
            .unwrap_or(&row.role);
        credential::foreign_key(format!("role:{}", row.role), name, row.can_login)
    }

    fn all_keys(&self, rows: &[RoleRow]) -> Vec<LiveKey> {
        rows.iter()
            .map(|r| r.record().unwrap_or_else(|| self.unmanaged(r)))
            .collect()
    }

    /// The statements that make role `role` what `k` says: login or not, expiry, the
    /// password (a verifier, or none once revoked), the comment.
    fn role_sql(
        &self,
        role: &str,
        k: &LiveKey,
        verifier: Option<&str>,
    ) -> StoreResult<Vec<String>> {
        let mut alter = format!(
            "ALTER ROLE {} {}",
            ident(role),
            if k.status == KeyStatus::Active {
                "LOGIN"
            } else {
                "NOLOGIN"
            }
        );
        match k.expires_at {
            Some(t) => alter.push_str(&format!(" VALID UNTIL '{}'", rules::ts(&t))),
            None => alter.push_str(" VALID UNTIL 'infinity'"),
        }
        if k.status == KeyStatus::Revoked {
            alter.push_str(" PASSWORD NULL");
        } else if let Some(v) = verifier {
            if !scram::is_verifier(v) {
                return Err(StoreError::Invalid(
                    "a postgres-roles store takes the secret as a SCRAM-SHA-256 verifier".into(),
                ));
            }
            alter.push_str(&format!(" PASSWORD '{v}'"));
        }
        let json = credential::json_text(k)?;
        let comment = format!("{MARKER}{json}").replace('\'', "''");
        Ok(vec![
            alter,
            format!("COMMENT ON ROLE {} IS '{comment}'", ident(role)),
        ])
    }

    /// Grant and revoke memberships so that `role` is in exactly the group roles of `k`'s
    /// scopes (none unless the key is active).
    async fn sync_grants(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        role: &str,
        k: &LiveKey,
    ) -> StoreResult<()> {
        let want: BTreeSet<&str> = if k.status == KeyStatus::Active {
            granted(&self.name, &self.opts.grants, &k.scopes)?
                .into_iter()
                .collect()
        } else {
            BTreeSet::new()
        };
        let rows = self
            .timed(
                "read memberships",
                tx.query(
                    "SELECT g.rolname::text FROM pg_auth_members m \
                     JOIN pg_roles g ON g.oid = m.roleid JOIN pg_roles r ON r.oid = m.member \
                     WHERE r.rolname = $1",
                    &[&role],
                ),
            )
            .await?;
        let have: BTreeSet<String> = rows.iter().map(|r| r.get(0)).collect();
        let mut sql = Vec::new();
        for g in want.iter().filter(|g| !have.contains(**g)) {
            sql.push(format!("GRANT {} TO {}", ident(g), ident(role)));
        }
        for g in have.iter().filter(|g| !want.contains(g.as_str())) {
            sql.push(format!("REVOKE {} FROM {}", ident(g), ident(role)));
        }
        for s in sql {
            self.timed("change memberships", tx.batch_execute(&s))
                .await?;
        }
        Ok(())
    }

    /// A transaction holding this store's writer lock.
    async fn locked_tx<'c>(
        &self,
        c: &'c mut Client,
        lease: Option<&str>,
    ) -> StoreResult<tokio_postgres::Transaction<'c>> {
        let tx = self.timed("begin", c.transaction()).await?;
        let key = format!("keyward:postgres-roles:{}", self.opts.role_prefix);
        self.timed(
            "take the writer lock",
            tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&key]),
        )
        .await?;
        self.check_lease(&tx, lease).await?;
        Ok(tx)
    }

    /// The apply lease is this process's session lock: a change under `lease` goes ahead
    /// while that session holds it and its ttl has not passed (an expired lease is given
    /// up here, its session closed); a change without one only when no session holds it
    /// (a shared lock on the lease, held to the end of the change's transaction, so no
    /// apply can take the lease meanwhile).
    async fn check_lease(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        lease: Option<&str>,
    ) -> StoreResult<()> {
        let mut held = self.lease.lock().await;
        let live = held
            .as_ref()
            .filter(|(_, c)| !c.is_closed())
            .map(|(l, _)| (l.id.clone(), l.holder.clone(), l.expires_at));
        if let Some((_, _, until)) = &live
            && *until <= Utc::now()
        {
            *held = None;
        }
        drop(held);
        if lease.is_some() || live.is_some() {
            return rules::check_lease(live, lease, Utc::now());
        }
        let key = format!("keyward:postgres-roles-lease:{}", self.opts.role_prefix);
        let row = self
            .timed(
                "check the lease",
                tx.query_one(
                    "SELECT pg_try_advisory_xact_lock_shared(hashtext($1))",
                    &[&key],
                ),
            )
            .await?;
        if row.get::<_, bool>(0) {
            return Ok(());
        }
        Err(StoreError::Locked {
            holder: "another session".into(),
            id: "unknown".into(),
            until: Utc::now(),
        })
    }

    /// A versioned change to key `id`, decided by `f`; the role follows in the same
    /// transaction. `verifier` is a new password (rotation).
    async fn change(
        &self,
        w: KeyWrite<'_>,
        verifier: Option<&str>,
        f: impl FnOnce(&mut LiveKey) -> StoreResult<Change>,
    ) -> StoreResult<LiveKey> {
        let mut g = self.client().await?;
        let c = g.as_mut().expect("connected by client()");
        let tx = self.locked_tx(c, w.lease).await?;
        let rows = self.roles_where(&tx, "id", Some(w.id)).await?;
        let (role, mut k) = self.find(&rows, w.id)?;
        rules::check_version(&k, w.version)?;
        let Some(_) = f(&mut k)? else {
            return Ok(k);
        };
        rules::bump(&mut k, Utc::now())?;
        for s in self.role_sql(&role, &k, verifier)? {
            self.timed("change the role", tx.batch_execute(&s)).await?;
        }
        self.sync_grants(&tx, &role, &k).await?;
        self.timed("commit", tx.commit()).await?;
        Ok(k)
    }

    /// The role and record of key `id`; unmanaged roles are refused.
    fn find(&self, rows: &[RoleRow], id: &str) -> StoreResult<(String, LiveKey)> {
        if let Some(role) = id.strip_prefix("role:")
            && rows.iter().any(|r| r.role == role)
        {
            return Err(StoreError::Refused(format!(
                "key {id} is not managed by keyward"
            )));
        }
        rows.iter()
            .find_map(|r| {
                r.record()
                    .filter(|k| k.id == id)
                    .map(|k| (r.role.clone(), k))
            })
            .ok_or_else(|| StoreError::NotFound(id.to_owned()))
    }

    /// A real login as `role` with `presented`: Ok(true) when the password is right (also
    /// when the role may not log in), Ok(false) when authentication fails.
    async fn login(&self, role: &str, presented: &str) -> StoreResult<bool> {
        let mut cfg = self.cfg.clone();
        cfg.user(role).password(presented);
        let r = tokio::time::timeout(self.opts.timeout, self.connect(&cfg)).await;
        match r {
            Err(_) => Err(StoreError::Backend(format!(
                "postgres-roles store `{}`: login check: no answer",
                self.name
            ))),
            Ok(Ok(_client)) => Ok(true),
            Ok(Err(e)) => match e.as_db_error().map(|d| d.code().code()) {
                // invalid_password (also an expired VALID UNTIL)
                Some("28P01") => Ok(false),
                // invalid_authorization_specification: "not permitted to log in" (the
                // password was accepted first)
                Some("28000") => Ok(true),
                _ => Err(pg(&self.name, "login check", &e)),
            },
        }
    }
}

#[async_trait]
impl Store for PgRolesStore {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> Capabilities {
        capabilities()
    }

    fn secret_form(&self, secret: &Secret) -> StoreResult<SecretHash> {
        Ok(SecretHash(scram::verifier(secret.expose())))
    }

    async fn list(&self, filter: &ListFilter, at: PageAt<'_>) -> StoreResult<Page<LiveKey>> {
        let PageAt { cursor, limit } = at;
        let g = self.client().await?;
        let rows = self.roles(g.as_ref().expect("connected")).await?;
        drop(g);
        credential::page(self.all_keys(&rows), filter, cursor, limit)
    }

    async fn get(&self, id: &str) -> StoreResult<Option<LiveKey>> {
        let g = self.client().await?;
        let rows = self
            .roles_where(g.as_ref().expect("connected"), "id", Some(id))
            .await?;
        Ok(self.all_keys(&rows).into_iter().find(|k| k.id == id))
    }

    async fn create(&self, key: NewKey, by: Writer<'_>) -> StoreResult<LiveKey> {
        let verifier = key.secret_hash.0.clone();
        if !scram::is_verifier(&verifier) {
            return Err(StoreError::Invalid(
                "a postgres-roles store takes the secret as a SCRAM-SHA-256 verifier".into(),
            ));
        }
        let k = credential::new_record(key, Utc::now())?;
        let role = self.role_for(&k.name);
        credential::check_name("role", &role, 63)?;
        granted(&self.name, &self.opts.grants, &k.scopes)?;
        let mut g = self.client().await?;
        let c = g.as_mut().expect("connected by client()");
        let tx = self.locked_tx(c, by.lease).await?;
        let rows = self.roles_where(&tx, "id", Some(&k.id)).await?;
        if rows
            .iter()
            .any(|r| r.record().is_some_and(|x| x.id == k.id))
        {
            return Err(StoreError::AlreadyExists(k.id));
        }
        let rows = self.roles_where(&tx, "name", Some(&role)).await?;
        match rows.iter().find(|r| r.role == role) {
            None => {
                self.timed(
                    "create the role",
                    tx.batch_execute(&format!("CREATE ROLE {} NOLOGIN", ident(&role))),
                )
                .await?;
            }
            Some(r) => match r.record() {
                None => {
                    return Err(StoreError::Refused(format!(
                        "role {role} exists and is not managed by keyward; it is never touched"
                    )));
                }
                Some(old) if old.status != KeyStatus::Revoked => {
                    return Err(StoreError::Refused(format!(
                        "role {role} belongs to key {} (status {}); revoke or delete it first",
                        old.id,
                        old.status.as_str()
                    )));
                }
                // A revoked key's role is taken over by the new key of that name.
                Some(_) => {}
            },
        }
        for s in self.role_sql(&role, &k, Some(&verifier))? {
            self.timed("set up the role", tx.batch_execute(&s)).await?;
        }
        self.sync_grants(&tx, &role, &k).await?;
        self.timed("commit", tx.commit()).await?;
        Ok(k)
    }

    async fn update(&self, w: KeyWrite<'_>, patch: KeyPatch) -> StoreResult<LiveKey> {
        rules::refuse_secret("a change", &patch)?;
        if let Some(s) = &patch.scopes {
            granted(&self.name, &self.opts.grants, s)?;
        }
        self.change(w, None, |k| rules::update_change(k, patch))
            .await
    }

    async fn rotate(&self, w: KeyWrite<'_>, rotate: Rotate) -> StoreResult<LiveKey> {
        rules::check_rotate(&rotate)?;
        let verifier = rotate.secret_hash.0.clone();
        if !scram::is_verifier(&verifier) {
            return Err(StoreError::Invalid(
                "a postgres-roles store takes the secret as a SCRAM-SHA-256 verifier".into(),
            ));
        }
        self.change(w, Some(&verifier), |k| {
            let mut s = rules::StoredKey {
                key: k.clone(),
                mac: Vec::new(),
                previous_mac: None,
            };
            let ch = rules::rotate_change(&mut s, rotate, vec![1])?;
            *k = s.key;
            // No overlap: a role has one password, the old one stops now.
            k.previous_valid_until = None;
            Ok(ch)
        })
        .await
    }

    async fn set_status(&self, w: KeyWrite<'_>, to: KeyStatus) -> StoreResult<LiveKey> {
        self.change(w, None, |k| rules::status_change(k, to)).await
    }

    async fn delete(&self, w: KeyWrite<'_>) -> StoreResult<()> {
        let mut g = self.client().await?;
        let c = g.as_mut().expect("connected by client()");
        let tx = self.locked_tx(c, w.lease).await?;
        let rows = self.roles_where(&tx, "id", Some(w.id)).await?;
        let (role, k) = self.find(&rows, w.id)?;
        rules::check_version(&k, w.version)?;
        rules::delete_detail(&k)?;
        self.timed(
            "drop the role",
            tx.batch_execute(&format!("DROP ROLE {}", ident(&role))),
        )
        .await?;
        self.timed("commit", tx.commit()).await
    }

    async fn lock(&self, holder: &str, ttl: chrono::Duration) -> StoreResult<Lease> {
        let expires_at = rules::lease_expiry(holder, ttl, Utc::now())?;
        let mut held = self.lease.lock().await;
        if let Some((l, c)) = held.as_ref()
            && !c.is_closed()
        {
            return Err(StoreError::Locked {
                holder: l.holder.clone(),
                id: l.id.clone(),
                until: l.expires_at,
            });
        }
        let lease = Lease {
            id: rules::new_lease_id(),
            holder: holder.to_owned(),
            expires_at,
        };
        let mut cfg = self.cfg.clone();
        let app: String = format!("keyward lease {}", lease.holder)
            .chars()
            .take(60)
            .collect();
        cfg.application_name(&app);
        let c = self
            .connect(&cfg)
            .await
            .map_err(|e| pg(&self.name, "cannot connect for the lease", &e))?;
        let key = format!("keyward:postgres-roles-lease:{}", self.opts.role_prefix);
        let row = self
            .timed(
                "take the lease",
                c.query_one("SELECT pg_try_advisory_lock(hashtext($1))", &[&key]),
            )
            .await?;
        if row.get::<_, bool>(0) {
            *held = Some((lease.clone(), c));
            return Ok(lease);
        }
        let who = self
            .timed(
                "read the lease holder",
                c.query_opt(
                    "SELECT a.application_name, a.pid FROM pg_locks l JOIN pg_stat_activity a \
                     ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted \
                     AND l.objid = (hashtext($1)::bigint & 4294967295)::oid LIMIT 1",
                    &[&key],
                ),
            )
            .await?;
        let (holder, id) = who
            .map(|r| {
                let app: String = r.get(0);
                let pid: i32 = r.get(1);
                (
                    app.trim_start_matches("keyward lease ").to_owned(),
                    format!("session {pid}"),
                )
            })
            .unwrap_or_else(|| ("another session".into(), "unknown".into()));
        Err(StoreError::Locked {
            holder,
            id,
            until: expires_at,
        })
    }

    async fn unlock(&self, lease_id: &str) -> StoreResult<()> {
        let mut held = self.lease.lock().await;
        if held.as_ref().is_some_and(|(l, _)| l.id == lease_id) {
            // Closing the session releases its advisory lock.
            *held = None;
        }
        Ok(())
    }

    /// The session lock never expires while its session lives; the ttl is kept here and
    /// judged by `check_lease` (an expired lease is lost, never revived).
    async fn renew(&self, lease_id: &str, ttl: chrono::Duration) -> StoreResult<Lease> {
        let mut held = self.lease.lock().await;
        let live = held
            .as_ref()
            .filter(|(_, c)| !c.is_closed())
            .map(|(l, _)| (l.id.clone(), l.holder.clone(), l.expires_at));
        let lease = rules::renewed(live, lease_id, ttl, Utc::now())?;
        if let Some((l, _)) = held.as_mut() {
            l.expires_at = lease.expires_at;
        }
        Ok(lease)
    }

    async fn verify(&self, presented: &str, now: DateTime<Utc>) -> StoreResult<Verdict> {
        let presented = presented.trim();
        let Some(parsed) = secret::parse(presented) else {
            return Ok(rules::verdict(VerifyReason::Malformed));
        };
        let found = {
            let g = self.client().await?;
            let rows = self
                .roles_where(g.as_ref().expect("connected"), "id", Some(&parsed.id))
                .await?;
            rows.iter().find_map(|r| {
                r.record()
                    .filter(|k| k.id == parsed.id)
                    .map(|k| (r.role.clone(), k))
            })
        };
        let Some((role, k)) = found else {
            return Ok(rules::verdict(VerifyReason::Unknown));
        };
        let login = self.login(&role, presented).await?;
        if !login {
            return Ok(rules::verdict(VerifyReason::Unknown));
        }
        Ok(match credential::judge(&k, login, true, now) {
            Ok(()) => rules::ok_verdict(k),
            Err(r) => rules::verdict(r),
        })
    }

    /// postgres-roles keeps no audit log of its own (the server's log does): no events.
    async fn events(&self, _after: Option<i64>, _limit: usize) -> StoreResult<Vec<Event>> {
        Ok(Vec::new())
    }

    async fn record(&self, action: &str, detail: Value, actor: &Actor) -> StoreResult<()> {
        rules::check_record(action, &detail)?;
        tracing::info!(store = %self.name, action, who = rules::who(actor), "event (postgres-roles keeps no audit log)");
        Ok(())
    }
}
