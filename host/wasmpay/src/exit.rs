//! The exit codes `wasmpay` promises scripts (docs/operators.md, "Exit codes"). A command
//! fails with a [`Failure`] when it knows what kind of failure it is; errors from below are
//! classified by their type (a request that timed out may succeed later, a server that does
//! not answer is a connection failure); anything else is 1.

use std::fmt;

use wasmpay_node::client::ClientError;

/// What kind of failure ended a command, and so its exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// 3: the request was understood and answered no: a payment declined or rejected, a
    /// refusal of the HTTP API (4xx), a plugin whose fixtures fail.
    Refused,
    /// 4: nothing was decided and the same request (the same id) may succeed later: the node
    /// answered `error` or 503, or did not answer in time.
    Retryable,
    /// 5: a node, NATS server, database or file could not be reached or read, the token was
    /// refused, or the configuration is wrong.
    Unreachable,
    /// 6: `ledger verify` found a broken invariant of the books.
    BrokenBooks,
}

impl Exit {
    /// The process exit code (1 is any other failure, 2 a usage error: clap's).
    pub fn code(self) -> u8 {
        match self {
            Exit::Refused => 3,
            Exit::Retryable => 4,
            Exit::Unreachable => 5,
            Exit::BrokenBooks => 6,
        }
    }
}

/// A failure whose kind the command knows.
#[derive(Debug)]
pub struct Failure {
    exit: Exit,
    message: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// An error of `exit`'s kind saying `message`.
pub fn fail(exit: Exit, message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Failure { exit, message: message.into() })
}

/// The exit code `error` deserves: its [`Failure`]'s, else by the type of its causes, else 1.
pub fn code_of(error: &anyhow::Error) -> u8 {
    for cause in error.chain() {
        if let Some(failure) = cause.downcast_ref::<Failure>() {
            return failure.exit.code();
        }
        if let Some(client) = cause.downcast_ref::<ClientError>() {
            return match client {
                ClientError::Timeout { .. } => Exit::Retryable.code(),
                ClientError::Failed { .. } => Exit::Unreachable.code(),
                ClientError::Unreadable { .. } => 1,
            };
        }
        // A file that cannot be read, a plugin source that cannot be loaded.
        if cause.downcast_ref::<std::io::Error>().is_some()
            || cause.downcast_ref::<wasmpay_plugin_host::PluginError>().is_some()
        {
            return Exit::Unreachable.code();
        }
        if cause.downcast_ref::<async_nats::ConnectError>().is_some() {
            return Exit::Unreachable.code();
        }
        // A node that cannot start: a port taken, NATS or the ledger unreachable, a plugin
        // file or a configuration that cannot be used.
        if cause.downcast_ref::<wasmpay_node::node::NodeError>().is_some() {
            return Exit::Unreachable.code();
        }
        if let Some(ledger) = cause.downcast_ref::<wasmpay_ledger::LedgerError>() {
            return match ledger {
                wasmpay_ledger::LedgerError::NoLedger(_)
                | wasmpay_ledger::LedgerError::UnsupportedUrl(_)
                | wasmpay_ledger::LedgerError::SqliteInUse { .. } => Exit::Unreachable.code(),
                error if error.is_transient() => Exit::Unreachable.code(),
                _ => 1,
            };
        }
    }
    1
}

/// The exit kind of an HTTP answer that is not a success: 401/403 cannot be retried into
/// success (the token is wrong); 408, 429 and 502-504 may succeed later (the node was busy,
/// the body came late, a node was unreachable); 500 is a bug, not something to retry; any
/// other 4xx is a refusal.
pub fn of_http(status: hyper::StatusCode) -> Option<Exit> {
    match status.as_u16() {
        401 | 403 => Some(Exit::Unreachable),
        408 | 429 | 502..=504 => Some(Exit::Retryable),
        500..=599 => None,
        _ => Some(Exit::Refused),
    }
}
