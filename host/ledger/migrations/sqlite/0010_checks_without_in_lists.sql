-- no-transaction
-- SQLite codes `x IN (a, b, c, ...)` with more than two constants as a temporary B-tree, and
-- inside a CHECK constraint it builds that B-tree again for every row it writes: with seven
-- kinds and seven statuses, every payment row cost 14 more B-tree inserts than its own, 12 %
-- of the ledger's rate (docs/performance.md, step 11). The same checks as `=` comparisons
-- joined by OR cost a comparison each. SQLite cannot change a CHECK in place, so `payments`
-- and `holds` are rebuilt the way 0008 rebuilt `accounts` (the SQLite manual's twelve-step
-- procedure: foreign keys off while the tables are swapped, everything else in one
-- transaction). Running it again after a crash between its COMMIT and sqlx recording it
-- rebuilds the rebuilt tables.
PRAGMA foreign_keys = OFF;
BEGIN IMMEDIATE;
CREATE TABLE payments_checked (
    id            TEXT    NOT NULL PRIMARY KEY,
    kind          TEXT    NOT NULL CHECK (kind = 'payment' OR kind = 'deposit' OR kind = 'authorization'
                                          OR kind = 'capture' OR kind = 'void' OR kind = 'refund'
                                          OR kind = 'settlement'),
    request_hash  TEXT    NOT NULL,
    status        TEXT    NOT NULL CHECK (status = 'approved' OR status = 'declined' OR status = 'authorized'
                                          OR status = 'captured' OR status = 'voided' OR status = 'refunded'
                                          OR status = 'settled'),
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
    created_at_ms INTEGER NOT NULL,
    -- The payment an operation acts on: the authorization of a capture or void, the payment or
    -- capture of a refund; NULL for payments, deposits and authorizations.
    parent        TEXT    REFERENCES payments (id),
    -- What refunds have moved back of this payment or capture, at most its amount. Only the
    -- refunds change it, under the lock of the account they debit (this row's payee).
    refunded      INTEGER NOT NULL DEFAULT 0 CHECK (refunded >= 0),
    -- The payment method of a payment or authorization; NULL otherwise.
    method        TEXT,
    -- The client's metadata as a JSON object; NULL when it sent none.
    metadata      TEXT,
    -- The client key a payment came with (HTTP), if any.
    client_key    TEXT,
    -- What a refund gave back of its payment's fee; on a payment or capture, what all its
    -- refunds gave back, never more than its fee.
    fee_reversed  INTEGER NOT NULL DEFAULT 0 CHECK (fee_reversed >= 0)
) STRICT;
INSERT INTO payments_checked (id, kind, request_hash, status, code, payer, payee, currency, amount, fee, fee_bearer,
                              plugins, partition, reply, created_at_ms, parent, refunded, method, metadata,
                              client_key, fee_reversed)
SELECT id, kind, request_hash, status, code, payer, payee, currency, amount, fee, fee_bearer, plugins, partition,
       reply, created_at_ms, parent, refunded, method, metadata, client_key, fee_reversed
FROM payments;
DROP TABLE payments;
ALTER TABLE payments_checked RENAME TO payments;
CREATE INDEX payments_by_parent ON payments (parent) WHERE parent IS NOT NULL;

CREATE TABLE holds_checked (
    id            TEXT    NOT NULL PRIMARY KEY REFERENCES payments (id),
    account_id    TEXT    NOT NULL REFERENCES accounts (id),
    -- The authorized amount, plus the fee when the payer bears it.
    held          INTEGER NOT NULL CHECK (held > 0),
    expires_at_ms INTEGER NOT NULL,
    partition     INTEGER,
    state         TEXT    NOT NULL CHECK (state = 'open' OR state = 'captured' OR state = 'voided'
                                          OR state = 'expired'),
    -- The amount a capture posted, before fees.
    captured      INTEGER NOT NULL DEFAULT 0 CHECK (captured >= 0),
    -- The capture or void that closed it; NULL while open and for an expiry.
    closed_by     TEXT    REFERENCES payments (id),
    closed_at_ms  INTEGER
) STRICT;
INSERT INTO holds_checked (id, account_id, held, expires_at_ms, partition, state, captured, closed_by, closed_at_ms)
SELECT id, account_id, held, expires_at_ms, partition, state, captured, closed_by, closed_at_ms FROM holds;
DROP TABLE holds;
ALTER TABLE holds_checked RENAME TO holds;
CREATE INDEX holds_open_by_expiry ON holds (partition, expires_at_ms) WHERE state = 'open';
CREATE INDEX holds_open_by_account ON holds (account_id, expires_at_ms, id) WHERE state = 'open';
COMMIT;
PRAGMA foreign_keys = ON;
