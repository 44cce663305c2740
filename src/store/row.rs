//! One row model for the SQL stores (SQLite and PostgreSQL): the columns of the `keys` and
//! `events` tables, a stored key as column values (`Cell`s) and back again through any
//! driver's row (`RowRead`), the `list` filter as SQL clauses and the cut of a page. A SQL
//! backend only adds its SQL, its placeholder style and the mapping of a `Cell` to its
//! driver's value type. Must not run queries; a corrupt row becomes `StoreError::Backend`,
//! never a panic.

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;

use super::rules::{StoredKey, decode_cursor, encode_cursor, opt_ts, parse_ts};
use super::rules::{to_i64, ts};
use super::{Event, KeyStatus, ListFilter, LiveKey, MANAGED_BY, Page, StoreError, StoreResult};

/// Columns of a `LiveKey`, in the order `key_from` reads them.
pub(crate) const KEY_COLUMNS: &str = "id, name, environment, owner, purpose, scopes, labels, \
     status, issued_at, created_at, updated_at, expires_at, lifetime, version, generation, \
     spec_generation, previous_valid_until, recipients, quota_per_day, protected, managed_by, \
     applied_digest";
/// Number of columns in `KEY_COLUMNS`; the MAC columns follow them in `STORED_COLUMNS`.
const KEY_COLUMN_COUNT: usize = 22;
/// `KEY_COLUMNS` and the two MAC columns: what `key_cells` writes and `stored_from` reads.
pub(crate) const STORED_COLUMNS: &str = "id, name, environment, owner, purpose, scopes, labels, \
     status, issued_at, created_at, updated_at, expires_at, lifetime, version, generation, \
     spec_generation, previous_valid_until, recipients, quota_per_day, protected, managed_by, \
     applied_digest, secret_mac, previous_secret_mac";
/// Columns of an `Event`, in the order `event_from` reads them.
pub(crate) const EVENT_COLUMNS: &str = "seq, at, who, action, key_id, key_name, commit_sha, detail";

/// One column value as keyward writes it; each backend maps it to its driver's type
/// (JSON is a TEXT column in SQLite and `jsonb` in PostgreSQL, a flag INTEGER or `boolean`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cell {
    Text(Option<String>),
    Int(Option<i64>),
    Flag(bool),
    Json(serde_json::Value),
    Blob(Option<Vec<u8>>),
}

/// How a backend numbers its parameters (`?1` or `$1`) and filters on a label.
pub(crate) struct Dialect {
    pub placeholder: fn(usize) -> String,
    /// The two clauses of a label filter, each with one `?` for the label key, then its value.
    pub label_clauses: [&'static str; 2],
}

/// The error for a value that cannot be read back as what keyward wrote.
pub(crate) fn corrupt(col: &str) -> StoreError {
    StoreError::Backend(format!("corrupt value in column `{col}`"))
}

/// Typed reads of one column of a driver's row; `None` is SQL NULL. A value of the wrong
/// type is `corrupt(col)`.
pub(crate) trait RowRead {
    fn text(&self, i: usize, col: &str) -> StoreResult<Option<String>>;
    fn int(&self, i: usize, col: &str) -> StoreResult<Option<i64>>;
    fn flag(&self, i: usize, col: &str) -> StoreResult<bool>;
    fn json<T: DeserializeOwned>(&self, i: usize, col: &str) -> StoreResult<T>;
    fn blob(&self, i: usize, col: &str) -> StoreResult<Option<Vec<u8>>>;
}

fn required<T>(v: Option<T>, col: &str) -> StoreResult<T> {
    v.ok_or_else(|| corrupt(col))
}

fn text<R: RowRead>(row: &R, i: usize, col: &str) -> StoreResult<String> {
    required(row.text(i, col)?, col)
}

fn time<R: RowRead>(row: &R, i: usize, col: &str) -> StoreResult<DateTime<Utc>> {
    parse_ts(&text(row, i, col)?, col)
}

fn opt_time<R: RowRead>(row: &R, i: usize, col: &str) -> StoreResult<Option<DateTime<Utc>>> {
    row.text(i, col)?.map(|s| parse_ts(&s, col)).transpose()
}

fn unsigned<T: TryFrom<i64>>(v: i64, col: &str) -> StoreResult<T> {
    T::try_from(v).map_err(|_| corrupt(col))
}

fn count<R: RowRead, T: TryFrom<i64>>(row: &R, i: usize, col: &str) -> StoreResult<T> {
    unsigned(required(row.int(i, col)?, col)?, col)
}

/// Read a `LiveKey` from a row selected with `KEY_COLUMNS` (or `STORED_COLUMNS`).
pub(crate) fn key_from<R: RowRead>(row: &R) -> StoreResult<LiveKey> {
    let status = text(row, 7, "status")?;
    Ok(LiveKey {
        id: text(row, 0, "id")?,
        name: text(row, 1, "name")?,
        environment: text(row, 2, "environment")?,
        owner: text(row, 3, "owner")?,
        purpose: row.text(4, "purpose")?,
        scopes: row.json(5, "scopes")?,
        labels: row.json(6, "labels")?,
        status: KeyStatus::parse(&status).ok_or_else(|| corrupt("status"))?,
        issued_at: time(row, 8, "issued_at")?,
        created_at: time(row, 9, "created_at")?,
        updated_at: time(row, 10, "updated_at")?,
        expires_at: opt_time(row, 11, "expires_at")?,
        lifetime: row.text(12, "lifetime")?,
        version: count(row, 13, "version")?,
        generation: count(row, 14, "generation")?,
        spec_generation: count(row, 15, "spec_generation")?,
        previous_valid_until: opt_time(row, 16, "previous_valid_until")?,
        recipients: row.json(17, "recipients")?,
        quota_per_day: row
            .int(18, "quota_per_day")?
            .map(|q| unsigned(q, "quota_per_day"))
            .transpose()?,
        protected: row.flag(19, "protected")?,
        managed_by: row.text(20, "managed_by")?,
        applied_digest: row.text(21, "applied_digest")?,
    })
}

/// Read a key and its MACs from a row selected with `STORED_COLUMNS`.
pub(crate) fn stored_from<R: RowRead>(row: &R) -> StoreResult<StoredKey> {
    Ok(StoredKey {
        key: key_from(row)?,
        mac: required(row.blob(KEY_COLUMN_COUNT, "secret_mac")?, "secret_mac")?,
        previous_mac: row.blob(KEY_COLUMN_COUNT + 1, "previous_secret_mac")?,
    })
}

/// Read an `Event` from a row selected with `EVENT_COLUMNS`.
pub(crate) fn event_from<R: RowRead>(row: &R) -> StoreResult<Event> {
    Ok(Event {
        seq: required(row.int(0, "seq")?, "seq")?,
        at: time(row, 1, "at")?,
        who: text(row, 2, "who")?,
        action: text(row, 3, "action")?,
        key_id: row.text(4, "key_id")?,
        key_name: row.text(5, "key_name")?,
        commit: row.text(6, "commit_sha")?,
        detail: row.json(7, "detail")?,
    })
}

fn json_value<T: serde::Serialize>(v: &T) -> StoreResult<serde_json::Value> {
    serde_json::to_value(v).map_err(|e| StoreError::Backend(format!("cannot encode JSON: {e}")))
}

/// The column values of a key row, in `STORED_COLUMNS` order (the id first).
pub(crate) fn key_cells(s: &StoredKey) -> StoreResult<Vec<Cell>> {
    let k = &s.key;
    let text = |v: &str| Cell::Text(Some(v.to_owned()));
    let opt_text = |v: &Option<String>| Cell::Text(v.clone());
    Ok(vec![
        text(&k.id),
        text(&k.name),
        text(&k.environment),
        text(&k.owner),
        opt_text(&k.purpose),
        Cell::Json(json_value(&k.scopes)?),
        Cell::Json(json_value(&k.labels)?),
        text(k.status.as_str()),
        Cell::Text(Some(ts(&k.issued_at))),
        Cell::Text(Some(ts(&k.created_at))),
        Cell::Text(Some(ts(&k.updated_at))),
        Cell::Text(opt_ts(&k.expires_at)),
        opt_text(&k.lifetime),
        Cell::Int(Some(to_i64(k.version, "version")?)),
        Cell::Int(Some(i64::from(k.generation))),
        Cell::Int(Some(i64::from(k.spec_generation))),
        Cell::Text(opt_ts(&k.previous_valid_until)),
        Cell::Json(json_value(&k.recipients)?),
        Cell::Int(
            k.quota_per_day
                .map(|q| to_i64(q, "quota_per_day"))
                .transpose()?,
        ),
        Cell::Flag(k.protected),
        opt_text(&k.managed_by),
        opt_text(&k.applied_digest),
        Cell::Blob(Some(s.mac.clone())),
        Cell::Blob(s.previous_mac.clone()),
    ])
}

fn stored_column_count() -> usize {
    STORED_COLUMNS.split(',').count()
}

/// `INSERT INTO keys (<STORED_COLUMNS>) VALUES (<one placeholder each>)`, for `key_cells`.
pub(crate) fn insert_sql(d: &Dialect) -> String {
    let values = (1..=stored_column_count())
        .map(d.placeholder)
        .collect::<Vec<_>>()
        .join(", ");
    format!("INSERT INTO keys ({STORED_COLUMNS}) VALUES ({values})")
}

/// `UPDATE keys SET <every column but id> WHERE id = <first placeholder>`, for `key_cells`.
pub(crate) fn update_sql(d: &Dialect) -> String {
    let sets = STORED_COLUMNS
        .split(',')
        .map(str::trim)
        .enumerate()
        .skip(1)
        .map(|(i, col)| format!("{col} = {}", (d.placeholder)(i + 1)))
        .collect::<Vec<_>>()
        .join(", ");
    format!("UPDATE keys SET {sets} WHERE id = {}", (d.placeholder)(1))
}

/// The `list` query: keys matching `filter` after `cursor`, ordered by id, one more than
/// `limit` so `page` can tell whether there is a next page.
pub(crate) fn list_query(
    d: &Dialect,
    filter: &ListFilter,
    cursor: Option<&str>,
    limit: usize,
) -> StoreResult<(String, Vec<Cell>)> {
    let mut sql = format!("SELECT {KEY_COLUMNS} FROM keys WHERE 1 = 1");
    let mut args: Vec<Cell> = Vec::new();
    let mut arg = |sql: &mut String, clause: &str, v: Cell| {
        args.push(v);
        sql.push_str(&clause.replace('?', &(d.placeholder)(args.len())));
    };
    let text = |s: &str| Cell::Text(Some(s.to_owned()));
    if let Some(c) = cursor {
        arg(&mut sql, " AND id > ?", Cell::Text(Some(decode_cursor(c)?)));
    }
    if let Some(o) = &filter.owner {
        arg(&mut sql, " AND owner = ?", text(o));
    }
    if let Some(s) = filter.status {
        arg(&mut sql, " AND status = ?", text(s.as_str()));
    }
    if let Some(e) = &filter.environment {
        arg(&mut sql, " AND environment = ?", text(e));
    }
    if let Some((k, v)) = &filter.label {
        arg(&mut sql, d.label_clauses[0], text(k));
        arg(&mut sql, d.label_clauses[1], text(v));
    }
    match filter.managed {
        Some(true) => arg(&mut sql, " AND managed_by = ?", text(MANAGED_BY)),
        Some(false) => arg(
            &mut sql,
            " AND (managed_by IS NULL OR managed_by <> ?)",
            text(MANAGED_BY),
        ),
        None => {}
    }
    if let Some(t) = &filter.expiring_before {
        arg(
            &mut sql,
            " AND expires_at IS NOT NULL AND expires_at < ?",
            Cell::Text(Some(ts(t))),
        );
    }
    if filter.never_expires {
        sql.push_str(" AND expires_at IS NULL");
    }
    // One extra row tells whether there is a next page.
    let one_more = i64::try_from(limit).unwrap_or(i64::MAX - 1) + 1;
    arg(&mut sql, " ORDER BY id LIMIT ?", Cell::Int(Some(one_more)));
    Ok((sql, args))
}

/// The page of `list_query`'s rows: at most `limit` keys, with a cursor when there are more.
pub(crate) fn page(mut items: Vec<LiveKey>, limit: usize) -> Page<LiveKey> {
    let next = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|k| encode_cursor(&k.id))
    } else {
        None
    };
    Page { items, next }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbered(i: usize) -> String {
        format!("${i}")
    }

    const PG: Dialect = Dialect {
        placeholder: numbered,
        label_clauses: [" AND labels ->> (?::text)", " = ?::text"],
    };

    #[test]
    fn statements_number_every_stored_column_once() {
        let insert = insert_sql(&PG);
        assert!(insert.ends_with("$23, $24)"), "{insert}");
        let update = update_sql(&PG);
        assert!(
            update.starts_with("UPDATE keys SET name = $2, "),
            "{update}"
        );
        assert!(
            update.ends_with("previous_secret_mac = $24 WHERE id = $1"),
            "{update}"
        );
    }

    #[test]
    fn a_list_filter_becomes_numbered_clauses_with_their_values() {
        let filter = ListFilter {
            owner: Some("jdoe".into()),
            label: Some(("team".into(), "ill".into())),
            managed: Some(false),
            ..ListFilter::default()
        };
        let (sql, args) = list_query(&PG, &filter, Some(&encode_cursor("k1")), 10).unwrap();
        assert!(sql.contains(" AND id > $1 AND owner = $2"), "{sql}");
        assert!(sql.contains("labels ->> ($3::text) = $4::text"), "{sql}");
        assert!(
            sql.ends_with("managed_by <> $5) ORDER BY id LIMIT $6"),
            "{sql}"
        );
        assert_eq!(args.len(), 6);
        assert_eq!(args[0], Cell::Text(Some("k1".into())));
        assert_eq!(args[5], Cell::Int(Some(11)));
        assert!(list_query(&PG, &filter, Some("not-a-cursor"), 10).is_err());
    }
}
