//! A PostgreSQL server on this machine for `bench` and `demo --nodes`: a fresh schema per run
//! (so the ledger starts empty and nothing of an earlier run is counted), dropped at the end;
//! the facts the bench's table states about the server; and the database pgbench initialises.

use std::time::Duration;

use anyhow::{Context, bail};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

/// How long connecting, or one administrative statement, may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// A PostgreSQL server on 127.0.0.1, with this run's scratch schema.
#[derive(Debug)]
pub struct PgServer {
    /// One connection for the bench's own statements.
    admin: PgPool,
    options: PgConnectOptions,
    url: String,
    schema: String,
    /// `server_version`.
    pub version: String,
    /// The server's default `synchronous_commit` (what pgbench runs with).
    pub synchronous_commit: String,
}

impl PgServer {
    /// Connects to the server at `url`, which must be on this machine (the bench and the demo
    /// load 127.0.0.1 only), with a scratch schema named `<prefix>_<pid>_<seconds>`.
    pub async fn connect(url: &str, prefix: &str) -> anyhow::Result<PgServer> {
        let options: PgConnectOptions = url.parse().with_context(|| format!("reading the PostgreSQL URL {url}"))?;
        if !matches!(options.get_host(), "127.0.0.1" | "localhost" | "::1") && options.get_socket().is_none() {
            bail!("the PostgreSQL server must be on 127.0.0.1, not {}", options.get_host());
        }
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(TIMEOUT)
            .connect_with(options.clone())
            .await
            .with_context(|| format!("connecting to PostgreSQL at {url}"))?;
        let (version, synchronous_commit): (String, String) =
            sqlx::query_as("SELECT current_setting('server_version'), current_setting('synchronous_commit')")
                .fetch_one(&admin)
                .await?;
        let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let schema = format!("{prefix}_{}_{}", std::process::id(), since_epoch.as_secs());
        Ok(PgServer { admin, options, url: url.to_owned(), schema, version, synchronous_commit })
    }

    /// This run's schema.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// The ledger's URL: the server's, with this run's schema first on the search path (the
    /// ledger creates it).
    pub fn ledger_url(&self) -> String {
        let separator = if self.url.contains('?') { '&' } else { '?' };
        format!("{}{separator}options[search_path]={}", self.url, self.schema)
    }

    /// Drops this run's schema and everything in it. After an interrupted run a node may
    /// still be finishing its last batches on it, and the drop can lose a deadlock to them:
    /// it tries again while they drain.
    pub async fn drop_scratch(&self) -> anyhow::Result<()> {
        const ATTEMPTS: u32 = 5;
        // The name is ours: a constant prefix, digits and underscores.
        let statement = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema);
        let mut attempt = 1;
        loop {
            let dropped = tokio::time::timeout(
                TIMEOUT,
                sqlx::raw_sql(sqlx::AssertSqlSafe(statement.clone())).execute(&self.admin),
            )
            .await
            .context("timed out")
            .and_then(|result| Ok(result?));
            match dropped {
                Ok(_) => return Ok(()),
                Err(error) if attempt == ATTEMPTS => return Err(error),
                Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
            }
            attempt += 1;
        }
    }

    /// Creates the database `name` unless it exists. `name` is the bench's own constant.
    pub async fn ensure_database(&self, name: &'static str) -> anyhow::Result<()> {
        let exists: Option<(i32,)> = sqlx::query_as("SELECT 1 FROM pg_database WHERE datname = $1")
            .bind(name)
            .fetch_optional(&self.admin)
            .await?;
        if exists.is_none() {
            let statement = format!("CREATE DATABASE {name}");
            sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
                .execute(&self.admin)
                .await
                .with_context(|| format!("creating the database {name}"))?;
        }
        Ok(())
    }

    /// `-h <host> -p <port> -U <user>` for the PostgreSQL command-line tools.
    pub fn tool_arguments(&self) -> Vec<String> {
        let host = match self.options.get_socket() {
            Some(socket) => socket.display().to_string(),
            None => self.options.get_host().to_owned(),
        };
        let port = self.options.get_port().to_string();
        ["-h", &host, "-p", &port, "-U", self.options.get_username()].map(str::to_owned).into()
    }
}
