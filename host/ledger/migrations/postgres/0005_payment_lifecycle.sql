-- The payment lifecycle: authorizations, captures, voids, expiry, refunds, settlements. The
-- same tables and meaning as SQLite's 0006_payment_lifecycle.

-- What the account's open holds reserve; changed only under the payer's row lock, like
-- balance. The floor applies to the available balance, balance - held.
ALTER TABLE accounts ADD COLUMN held BIGINT NOT NULL DEFAULT 0 CHECK (held >= 0);

ALTER TABLE payments DROP CONSTRAINT payments_kind_check;
ALTER TABLE payments ADD CONSTRAINT payments_kind_check
    CHECK (kind IN ('payment', 'deposit', 'authorization', 'capture', 'void', 'refund', 'settlement'));
ALTER TABLE payments DROP CONSTRAINT payments_status_check;
ALTER TABLE payments ADD CONSTRAINT payments_status_check
    CHECK (status IN ('approved', 'declined', 'authorized', 'captured', 'voided', 'refunded', 'settled'));
-- The payment an operation acts on (the authorization of a capture or void, the payment or
-- capture of a refund); NULL otherwise. No foreign key, like the rest of this schema
-- (0001_ledger says why).
ALTER TABLE payments ADD COLUMN parent TEXT;
-- What refunds have moved back of this payment or capture; changed only by refunds, under the
-- lock of the account they debit (this row's payee).
ALTER TABLE payments ADD COLUMN refunded BIGINT NOT NULL DEFAULT 0 CHECK (refunded >= 0);
-- The payment method of a payment or authorization, and the client's metadata as a JSON
-- object; NULL otherwise.
ALTER TABLE payments ADD COLUMN method TEXT;
ALTER TABLE payments ADD COLUMN metadata TEXT;
CREATE INDEX payments_by_parent ON payments (parent) WHERE parent IS NOT NULL;
-- An account's payments and entries, in order, for statements.
CREATE INDEX payments_by_payer ON payments (payer, created_at_ms, id);
CREATE INDEX payments_by_payee ON payments (payee, created_at_ms, id);
DROP INDEX entries_by_account;
CREATE INDEX entries_by_account ON entries (account_id, id);

CREATE TABLE holds (
    id            TEXT   NOT NULL PRIMARY KEY,
    account_id    TEXT   NOT NULL,
    held          BIGINT NOT NULL CHECK (held > 0),
    expires_at_ms BIGINT NOT NULL,
    partition     BIGINT,
    state         TEXT   NOT NULL CHECK (state IN ('open', 'captured', 'voided', 'expired')),
    captured      BIGINT NOT NULL DEFAULT 0 CHECK (captured >= 0),
    closed_by     TEXT,
    closed_at_ms  BIGINT
);
CREATE INDEX holds_open_by_expiry ON holds (partition, expires_at_ms) WHERE state = 'open';

-- Keys clients pay with over HTTP, issued and revoked by an operator; only a hash of the
-- secret is kept.
CREATE TABLE client_keys (
    id            TEXT   NOT NULL PRIMARY KEY,
    name          TEXT   NOT NULL,
    secret_sha256 TEXT   NOT NULL UNIQUE,
    created_at_ms BIGINT NOT NULL,
    revoked_at_ms BIGINT
);
-- The client key a payment came with (HTTP), if any.
ALTER TABLE payments ADD COLUMN client_key TEXT;
