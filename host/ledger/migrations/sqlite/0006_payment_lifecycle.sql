-- The payment lifecycle. Two-phase payments: authorizations hold money on the payer until a
-- capture posts it, a void releases it, or the ledger releases it at its expiry. Refunds move
-- money back from a payment's payee to its payer, up to what was paid. Settlements post
-- several legs at once (each leg a row of kind 'settlement').

-- What the account's open holds reserve. The floor applies to the available balance,
-- balance - held: the ledger checks it under the batch's lock, `wasmpay ledger verify` checks
-- it and that held is the sum of the account's open holds.
ALTER TABLE accounts ADD COLUMN held INTEGER NOT NULL DEFAULT 0 CHECK (held >= 0);

-- payments gains the new kinds and statuses and a reference to the payment an operation acts
-- on. SQLite cannot change a CHECK in place, so the table is rebuilt, and entries with it
-- (its foreign key names payments): the old tables are renamed first, which rewrites the
-- entries' reference to the renamed payments, so dropping them never violates a key.
ALTER TABLE entries RENAME TO entries_before_holds;
ALTER TABLE payments RENAME TO payments_before_holds;

CREATE TABLE payments (
    id            TEXT    NOT NULL PRIMARY KEY,
    kind          TEXT    NOT NULL CHECK (kind IN ('payment', 'deposit', 'authorization', 'capture', 'void',
                                                   'refund', 'settlement')),
    request_hash  TEXT    NOT NULL,
    status        TEXT    NOT NULL CHECK (status IN ('approved', 'declined', 'authorized', 'captured', 'voided',
                                                     'refunded', 'settled')),
    code          TEXT    NOT NULL,
    payer         TEXT    NOT NULL REFERENCES accounts (id),
    payee         TEXT    NOT NULL REFERENCES accounts (id),
    currency      TEXT    NOT NULL,
    amount        INTEGER NOT NULL CHECK (amount > 0),
    fee           INTEGER NOT NULL CHECK (fee >= 0),
    fee_bearer    TEXT    NOT NULL CHECK (fee_bearer IN ('payer', 'payee')),
    plugins       TEXT    NOT NULL,
    partition     INTEGER,
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
    client_key    TEXT
) STRICT;
INSERT INTO payments (id, kind, request_hash, status, code, payer, payee, currency, amount, fee, fee_bearer,
                      plugins, partition, reply, created_at_ms)
SELECT id, kind, request_hash, status, code, payer, payee, currency, amount, fee, fee_bearer, plugins, partition,
       reply, created_at_ms
FROM payments_before_holds;
CREATE INDEX payments_by_parent ON payments (parent) WHERE parent IS NOT NULL;
-- An account's payments, in time order, for statements: those it paid and those it was paid.
CREATE INDEX payments_by_payer ON payments (payer, created_at_ms, id);
CREATE INDEX payments_by_payee ON payments (payee, created_at_ms, id);

CREATE TABLE entries (
    id         INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    payment_id TEXT    NOT NULL REFERENCES payments (id),
    account_id TEXT    NOT NULL REFERENCES accounts (id),
    amount     INTEGER NOT NULL CHECK (amount <> 0)
) STRICT;
INSERT INTO entries (id, payment_id, account_id, amount)
SELECT id, payment_id, account_id, amount FROM entries_before_holds;

DROP TABLE entries_before_holds;
DROP TABLE payments_before_holds;
CREATE INDEX entries_by_payment ON entries (payment_id);
CREATE INDEX entries_by_account ON entries (account_id);

-- One row per approved authorization: what it reserves on its payer, until when, and how it
-- ended. A hold is opened once and closed once (captured, voided or expired), always by the
-- owner of its payer's partition under the payer's lock.
CREATE TABLE holds (
    id            TEXT    NOT NULL PRIMARY KEY REFERENCES payments (id),
    account_id    TEXT    NOT NULL REFERENCES accounts (id),
    -- The authorized amount, plus the fee when the payer bears it.
    held          INTEGER NOT NULL CHECK (held > 0),
    expires_at_ms INTEGER NOT NULL,
    partition     INTEGER,
    state         TEXT    NOT NULL CHECK (state IN ('open', 'captured', 'voided', 'expired')),
    -- The amount a capture posted, before fees.
    captured      INTEGER NOT NULL DEFAULT 0 CHECK (captured >= 0),
    -- The capture or void that closed it; NULL while open and for an expiry.
    closed_by     TEXT    REFERENCES payments (id),
    closed_at_ms  INTEGER
) STRICT;
-- What each partition's expiry sweeper reads: its open holds, soonest first.
CREATE INDEX holds_open_by_expiry ON holds (partition, expires_at_ms) WHERE state = 'open';

-- Keys clients pay with over HTTP, issued and revoked by an operator. Only a hash of the
-- secret is kept: the secret is shown once, when the key is issued.
CREATE TABLE client_keys (
    id            TEXT    NOT NULL PRIMARY KEY,
    name          TEXT    NOT NULL,
    secret_sha256 TEXT    NOT NULL UNIQUE,
    created_at_ms INTEGER NOT NULL,
    revoked_at_ms INTEGER
) STRICT;
