-- The double-entry ledger. Amounts are integer minor units; every posted transfer's entries
-- sum to zero, so the sum of all balances per currency is always zero (external funding
-- accounts go negative as money enters).

CREATE TABLE accounts (
    id            TEXT    NOT NULL PRIMARY KEY,
    currency      TEXT    NOT NULL CHECK (length(currency) = 3),
    balance       INTEGER NOT NULL DEFAULT 0,
    -- NULL: no floor (the external funding account of a currency).
    floor         INTEGER,
    kind          TEXT    NOT NULL CHECK (kind IN ('customer', 'fees', 'external')),
    created_at_ms INTEGER NOT NULL,
    -- Defence in depth: the ledger checks floors before writing, the schema refuses any
    -- write that would still break one.
    CHECK (floor IS NULL OR balance >= floor)
) STRICT;

-- One row per decided payment or deposit; the id is the client's idempotency key.
CREATE TABLE payments (
    id            TEXT    NOT NULL PRIMARY KEY,
    kind          TEXT    NOT NULL CHECK (kind IN ('payment', 'deposit')),
    request_hash  TEXT    NOT NULL,
    status        TEXT    NOT NULL CHECK (status IN ('approved', 'declined')),
    code          TEXT    NOT NULL,
    payer         TEXT    NOT NULL REFERENCES accounts (id),
    payee         TEXT    NOT NULL REFERENCES accounts (id),
    currency      TEXT    NOT NULL,
    amount        INTEGER NOT NULL CHECK (amount > 0),
    fee           INTEGER NOT NULL CHECK (fee >= 0),
    fee_bearer    TEXT    NOT NULL CHECK (fee_bearer IN ('payer', 'payee')),
    -- `name@version` of the plugins that decided it, comma separated, in pipeline order.
    plugins       TEXT    NOT NULL,
    partition     INTEGER,
    -- The exact reply sent, replayed byte for byte to a retry with the same id.
    reply         TEXT    NOT NULL,
    created_at_ms INTEGER NOT NULL
) STRICT;

CREATE TABLE entries (
    id         INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    payment_id TEXT    NOT NULL REFERENCES payments (id),
    account_id TEXT    NOT NULL REFERENCES accounts (id),
    amount     INTEGER NOT NULL CHECK (amount <> 0)
) STRICT;

CREATE INDEX entries_by_payment ON entries (payment_id);
CREATE INDEX entries_by_account ON entries (account_id);
