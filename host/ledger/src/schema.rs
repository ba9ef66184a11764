//! The ledger's schema, embedded in the binary so a node needs no files beside it.
//!
//! This is what sqlx's `migrate!` macro generates, written out: the macro would cost the build
//! sqlx's proc-macro crate and a second compilation of SQLite for the host. The checksums are
//! the same (sqlx hashes the SQL text), so databases created either way are interchangeable.

use std::borrow::Cow;

use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};

/// (version, description, SQL) of every SQLite migration, oldest first. Never edit a shipped
/// one: a changed checksum makes every existing database refuse to open.
const SQLITE: &[(i64, &str, &str)] = &[(1, "ledger", include_str!("../migrations/sqlite/0001_ledger.sql"))];

/// The migrator of the SQLite schema.
pub(crate) fn sqlite() -> Migrator {
    let migrations = SQLITE
        .iter()
        .map(|(version, description, sql)| {
            Migration::new(*version, Cow::Borrowed(*description), MigrationType::Simple, sql.into_sql_str(), false)
        })
        .collect();
    Migrator::with_migrations(migrations)
}
