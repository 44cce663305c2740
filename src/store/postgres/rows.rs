//! The PostgreSQL side of the shared row model (`store::row`): reading a `tokio_postgres`
//! row (`RowRead`) and binding a `Cell` as a parameter (JSON as `jsonb`, a flag as
//! `boolean`). Must not run queries of its own.

use serde::de::DeserializeOwned;
use tokio_postgres::Row;
use tokio_postgres::types::{FromSql, Json, ToSql};

use crate::store::StoreResult;
use crate::store::row::{Cell, Dialect, RowRead, corrupt};

fn numbered(i: usize) -> String {
    format!("${i}")
}

/// `$N` parameters; a label filter through `->>`.
pub(super) const POSTGRES: Dialect = Dialect {
    placeholder: numbered,
    label_clauses: [" AND labels ->> (?::text)", " = ?::text"],
};

/// Column `i` as `T`; a value of another type is `corrupt(col)`.
pub(super) fn get<'a, T: FromSql<'a>>(row: &'a Row, i: usize, col: &str) -> StoreResult<T> {
    row.try_get(i).map_err(|_| corrupt(col))
}

impl RowRead for Row {
    fn text(&self, i: usize, col: &str) -> StoreResult<Option<String>> {
        get(self, i, col)
    }

    fn int(&self, i: usize, col: &str) -> StoreResult<Option<i64>> {
        get(self, i, col)
    }

    fn flag(&self, i: usize, col: &str) -> StoreResult<bool> {
        get(self, i, col)
    }

    fn json<T: DeserializeOwned>(&self, i: usize, col: &str) -> StoreResult<T> {
        get::<Json<T>>(self, i, col).map(|j| j.0)
    }

    fn blob(&self, i: usize, col: &str) -> StoreResult<Option<Vec<u8>>> {
        get(self, i, col)
    }
}

/// A parameter value.
pub(super) type Param = Box<dyn ToSql + Sync + Send>;

/// A cell as the parameter keyward binds for it.
pub(super) fn param(cell: Cell) -> Param {
    match cell {
        Cell::Text(t) => Box::new(t),
        Cell::Int(n) => Box::new(n),
        Cell::Flag(b) => Box::new(b),
        Cell::Json(v) => Box::new(Json(v)),
        Cell::Blob(b) => Box::new(b),
    }
}

/// The parameters as the driver takes them.
pub(super) fn params(values: &[Param]) -> Vec<&(dyn ToSql + Sync)> {
    values
        .iter()
        .map(|a| a.as_ref() as &(dyn ToSql + Sync))
        .collect()
}
