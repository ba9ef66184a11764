//! The ledger's schema, embedded in the binary so a node needs no files beside it.
//!
//! This is what sqlx's `migrate!` macro generates, written out: the macro would cost the build
//! sqlx's proc-macro crate and a second compilation of SQLite for the host. The checksums are
//! the same (sqlx hashes the SQL text), so databases created either way are interchangeable.

use std::borrow::Cow;

use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};

/// (version, description, SQL) of a backend's migrations, oldest first. Never edit a shipped
/// one: a changed checksum makes every existing database refuse to open.
type Migrations = &'static [(i64, &'static str, &'static str)];

/// The SQLite schema.
pub(crate) const SQLITE: Migrations = &[
    (1, "ledger", include_str!("../../migrations/sqlite/0001_ledger.sql")),
    (2, "credits", include_str!("../../migrations/sqlite/0002_credits.sql")),
    (3, "fences", include_str!("../../migrations/sqlite/0003_fences.sql")),
    (4, "identity", include_str!("../../migrations/sqlite/0004_identity.sql")),
    (5, "deployment binding", include_str!("../../migrations/sqlite/0005_deployment_binding.sql")),
    (6, "payment lifecycle", include_str!("../../migrations/sqlite/0006_payment_lifecycle.sql")),
    (7, "statements through entries", include_str!("../../migrations/sqlite/0007_statements_through_entries.sql")),
    (8, "assets", include_str!("../../migrations/sqlite/0008_assets.sql")),
    (9, "fee reversals", include_str!("../../migrations/sqlite/0009_fee_reversals.sql")),
    (10, "checks without in lists", include_str!("../../migrations/sqlite/0010_checks_without_in_lists.sql")),
    (11, "cross border", include_str!("../../migrations/sqlite/0011_cross_border.sql")),
];

/// The PostgreSQL schema: the same tables and meaning in PostgreSQL's types. Its history
/// starts later, so its versions need not match SQLite's.
pub(crate) const POSTGRES: Migrations = &[
    (1, "ledger", include_str!("../../migrations/postgres/0001_ledger.sql")),
    (2, "fences", include_str!("../../migrations/postgres/0002_fences.sql")),
    (3, "identity", include_str!("../../migrations/postgres/0003_identity.sql")),
    (4, "deployment binding", include_str!("../../migrations/postgres/0004_deployment_binding.sql")),
    (5, "payment lifecycle", include_str!("../../migrations/postgres/0005_payment_lifecycle.sql")),
    (6, "statements through entries", include_str!("../../migrations/postgres/0006_statements_through_entries.sql")),
    (7, "assets", include_str!("../../migrations/postgres/0007_assets.sql")),
    (8, "fee reversals", include_str!("../../migrations/postgres/0008_fee_reversals.sql")),
    (9, "entries keyed by account", include_str!("../../migrations/postgres/0009_entries_keyed_by_account.sql")),
    (10, "cross border", include_str!("../../migrations/postgres/0010_cross_border.sql")),
];

/// The migrator of a backend's schema.
pub(crate) fn migrator(migrations: Migrations) -> Migrator {
    let migrations = migrations
        .iter()
        .map(|(version, description, sql)| {
            // As sqlx's file source does: a migration that must manage its own transaction
            // says so on its first line.
            let no_transaction = sql.starts_with("-- no-transaction");
            Migration::new(
                *version,
                Cow::Borrowed(*description),
                MigrationType::Simple,
                sql.into_sql_str(),
                no_transaction,
            )
        })
        .collect();
    Migrator::with_migrations(migrations)
}
