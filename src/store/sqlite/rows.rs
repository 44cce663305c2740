//! The SQLite side of the shared row model (`store::row`): reading a `rusqlite` row
//! (`RowRead`) and writing a `Cell` as a SQLite value (JSON as TEXT, a flag as 0/1).
//! Must not run queries of its own.

use rusqlite::Row;
use rusqlite::types::{Value, ValueRef};
use serde::de::DeserializeOwned;

use crate::store::StoreResult;
use crate::store::row::{Cell, Dialect, RowRead, corrupt};

fn numbered(i: usize) -> String {
    format!("?{i}")
}

/// `?N` parameters; a label filter through `json_each`.
pub(super) const SQLITE: Dialect = Dialect {
    placeholder: numbered,
    label_clauses: [
        " AND EXISTS (SELECT 1 FROM json_each(keys.labels) AS l WHERE l.key = ?",
        " AND l.value = ?)",
    ],
};

fn value<'r>(row: &'r Row<'_>, i: usize, col: &str) -> StoreResult<ValueRef<'r>> {
    row.get_ref(i).map_err(|_| corrupt(col))
}

impl RowRead for Row<'_> {
    fn text(&self, i: usize, col: &str) -> StoreResult<Option<String>> {
        match value(self, i, col)? {
            ValueRef::Null => Ok(None),
            ValueRef::Text(b) => std::str::from_utf8(b)
                .map(|s| Some(s.to_owned()))
                .map_err(|_| corrupt(col)),
            _ => Err(corrupt(col)),
        }
    }

    fn int(&self, i: usize, col: &str) -> StoreResult<Option<i64>> {
        value(self, i, col)?
            .as_i64_or_null()
            .map_err(|_| corrupt(col))
    }

    fn flag(&self, i: usize, col: &str) -> StoreResult<bool> {
        match value(self, i, col)?.as_i64().map_err(|_| corrupt(col))? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(corrupt(col)),
        }
    }

    fn json<T: DeserializeOwned>(&self, i: usize, col: &str) -> StoreResult<T> {
        let text = value(self, i, col)?.as_str().map_err(|_| corrupt(col))?;
        serde_json::from_str(text).map_err(|_| corrupt(col))
    }

    fn blob(&self, i: usize, col: &str) -> StoreResult<Option<Vec<u8>>> {
        match value(self, i, col)? {
            ValueRef::Null => Ok(None),
            ValueRef::Blob(b) => Ok(Some(b.to_vec())),
            _ => Err(corrupt(col)),
        }
    }
}

/// A cell as the SQLite value keyward stores for it.
pub(super) fn sql_value(cell: Cell) -> Value {
    match cell {
        Cell::Text(t) => t.map_or(Value::Null, Value::Text),
        Cell::Int(n) => n.map_or(Value::Null, Value::Integer),
        Cell::Flag(b) => Value::Integer(i64::from(b)),
        Cell::Json(v) => Value::Text(v.to_string()),
        Cell::Blob(b) => b.map_or(Value::Null, Value::Blob),
    }
}
