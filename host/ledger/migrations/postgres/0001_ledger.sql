-- The double-entry ledger on PostgreSQL: the same tables and meaning as the SQLite schema
-- (migrations/sqlite), in PostgreSQL's types. Amounts are integer minor units;
-- every posted transfer's entries sum to zero, so the sum of all balances per currency is
-- always zero (external funding accounts go negative as money enters).

CREATE TABLE accounts (
    id            TEXT   NOT NULL PRIMARY KEY,
    currency      TEXT   NOT NULL CHECK (length(currency) = 3),
    -- The balance is this plus the account's credits in account_credits.
    balance       BIGINT NOT NULL DEFAULT 0,
    -- NULL: no floor (the external funding account of a currency).
    floor         BIGINT,
    kind          TEXT   NOT NULL CHECK (kind IN ('customer', 'fees', 'external')),
    created_at_ms BIGINT NOT NULL
    -- Unlike SQLite, no CHECK (balance >= floor): a payer's debits go to this row and its
    -- credits to account_credits, so the row alone may be below the floor while the balance
    -- is not. The ledger checks floors under the payer's row lock; `wasmpay ledger verify`
    -- checks the balance.
);

-- Credit-only sub-balances. A batch credits an account whose row it does not lock (a payee,
-- the fee account) here, in the row of the payment's partition, with a relative upsert: the
-- fee account and a big merchant are credited by every batch, and a row lock on their account
-- row, held until each batch's commit, would serialise every writer of the ledger. Credits
-- commute and cannot cross a floor, so they need no balance check. An account's balance is
-- accounts.balance plus the sum of its credits. Credit rows only grow: at most one per
-- account and partition.
CREATE TABLE account_credits (
    account_id TEXT   NOT NULL REFERENCES accounts (id),
    shard      BIGINT NOT NULL,
    amount     BIGINT NOT NULL CHECK (amount > 0),
    PRIMARY KEY (account_id, shard)
);

-- One row per decided payment or deposit; the id is the client's idempotency key.
-- payments and entries carry no foreign keys here, unlike on SQLite: PostgreSQL checks a
-- foreign key with a query per inserted row, and a batch of 500 payments inserts 500 payments
-- and 1,500 entries, whose 4,000 checks took 30 of its 45 ms. The batch only writes rows for
-- accounts it has just read and payments it inserts in the same transaction, and
-- `wasmpay ledger verify` reports any entry or payment that references nothing.
CREATE TABLE payments (
    id            TEXT   NOT NULL PRIMARY KEY,
    kind          TEXT   NOT NULL CHECK (kind IN ('payment', 'deposit')),
    request_hash  TEXT   NOT NULL,
    status        TEXT   NOT NULL CHECK (status IN ('approved', 'declined')),
    code          TEXT   NOT NULL,
    payer         TEXT   NOT NULL,
    payee         TEXT   NOT NULL,
    currency      TEXT   NOT NULL,
    amount        BIGINT NOT NULL CHECK (amount > 0),
    fee           BIGINT NOT NULL CHECK (fee >= 0),
    fee_bearer    TEXT   NOT NULL CHECK (fee_bearer IN ('payer', 'payee')),
    -- `name@version` of the plugins that decided it, comma separated, in pipeline order.
    plugins       TEXT   NOT NULL,
    partition     BIGINT,
    -- The exact reply sent, replayed byte for byte to a retry with the same id.
    reply         TEXT   NOT NULL,
    created_at_ms BIGINT NOT NULL
);

CREATE TABLE entries (
    id         BIGINT NOT NULL GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    payment_id TEXT   NOT NULL,
    account_id TEXT   NOT NULL,
    amount     BIGINT NOT NULL CHECK (amount <> 0)
);

CREATE INDEX entries_by_payment ON entries (payment_id);
CREATE INDEX entries_by_account ON entries (account_id);
