-- Credit-only sub-balances (see the PostgreSQL schema, where they spare hot accounts a row
-- lock per batch). A SQLite write holds the whole database, so the ledger writes every change
-- to the accounts' rows and this table stays empty; it exists so both backends read a balance
-- with the same SQL: accounts.balance plus the sum of the account's credits.
CREATE TABLE account_credits (
    account_id TEXT    NOT NULL REFERENCES accounts (id),
    shard      INTEGER NOT NULL,
    amount     INTEGER NOT NULL CHECK (amount > 0),
    PRIMARY KEY (account_id, shard)
) STRICT;
