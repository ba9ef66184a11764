-- no-transaction
-- Cross-border payments: a payer pays in its currency and the payee is paid in its own,
-- through the two currencies' FX accounts (`_fx_<currency>`, kind `fx`, no floor), so every
-- currency's entries still sum to zero. `conversions` records what each such payment
-- converted, at which rate, priced by which plugin, with which quote; `fx_quotes` holds the
-- quotes clients ask for before paying (a quote converts one payment: the unique index).
--
-- accounts.kind gains `fx`, and SQLite cannot change a CHECK in place, so accounts is rebuilt
-- as 0008 rebuilt it (foreign keys off while the table is swapped, everything else in one
-- transaction), with the check written as `=` comparisons (0010 says why). Running it again
-- after a crash between its COMMIT and sqlx recording it rebuilds the rebuilt table; the new
-- tables and accounts are created only if missing.
PRAGMA foreign_keys = OFF;
BEGIN IMMEDIATE;
CREATE TABLE accounts_with_fx (
    id            TEXT    NOT NULL PRIMARY KEY,
    currency      TEXT    NOT NULL CHECK (length(currency) BETWEEN 3 AND 12),
    balance       INTEGER NOT NULL DEFAULT 0,
    floor         INTEGER,
    kind          TEXT    NOT NULL CHECK (kind = 'customer' OR kind = 'fees' OR kind = 'external' OR kind = 'fx'),
    created_at_ms INTEGER NOT NULL,
    held          INTEGER NOT NULL DEFAULT 0 CHECK (held >= 0),
    CHECK (floor IS NULL OR balance >= floor)
) STRICT;
INSERT INTO accounts_with_fx (id, currency, balance, floor, kind, created_at_ms, held)
SELECT id, currency, balance, floor, kind, created_at_ms, held FROM accounts;
DROP TABLE accounts;
ALTER TABLE accounts_with_fx RENAME TO accounts;
-- Every currency opened so far gets its FX account, as a currency opened from now on does.
INSERT INTO accounts (id, currency, floor, kind, created_at_ms)
SELECT '_fx_' || currency, currency, NULL, 'fx', created_at_ms FROM accounts
WHERE kind = 'fees' AND length(currency) = 3
ON CONFLICT (id) DO NOTHING;
CREATE TABLE IF NOT EXISTS conversions (
    payment_id     TEXT    NOT NULL PRIMARY KEY REFERENCES payments (id),
    -- The payee's currency, what it was paid in it, and the rate (an exact decimal, as text).
    currency       TEXT    NOT NULL CHECK (length(currency) = 3),
    amount         INTEGER NOT NULL CHECK (amount > 0),
    rate           TEXT    NOT NULL,
    fx_plugin      TEXT    NOT NULL,
    quote_id       TEXT
) STRICT;
CREATE UNIQUE INDEX IF NOT EXISTS conversions_by_quote ON conversions (quote_id) WHERE quote_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS fx_quotes (
    id               TEXT    NOT NULL PRIMARY KEY,
    payer            TEXT    NOT NULL,
    payee            TEXT    NOT NULL,
    currency         TEXT    NOT NULL CHECK (length(currency) = 3),
    amount           INTEGER NOT NULL CHECK (amount > 0),
    counter_currency TEXT    NOT NULL CHECK (length(counter_currency) = 3),
    counter_amount   INTEGER NOT NULL CHECK (counter_amount > 0),
    rate             TEXT    NOT NULL,
    fx_plugin        TEXT    NOT NULL,
    created_at_ms    INTEGER NOT NULL,
    expires_at_ms    INTEGER NOT NULL
) STRICT;
-- Quotes are deleted a day after they expire (`store_quote`), oldest first.
CREATE INDEX IF NOT EXISTS fx_quotes_by_expiry ON fx_quotes (expires_at_ms);
COMMIT;
PRAGMA foreign_keys = ON;
