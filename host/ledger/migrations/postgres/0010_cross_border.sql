-- Cross-border payments; SQLite's 0011_cross_border says what and why. The kind check is
-- replaced NOT VALID: every existing row passes the wider check, and validating would scan
-- the table under the ALTER's lock. New and updated rows are checked all the same.
ALTER TABLE accounts DROP CONSTRAINT accounts_kind_check;
ALTER TABLE accounts ADD CONSTRAINT accounts_kind_check
    CHECK (kind IN ('customer', 'fees', 'external', 'fx')) NOT VALID;
INSERT INTO accounts (id, currency, floor, kind, created_at_ms)
SELECT '_fx_' || currency, currency, NULL, 'fx', created_at_ms FROM accounts
WHERE kind = 'fees' AND length(currency) = 3
ON CONFLICT (id) DO NOTHING;
CREATE TABLE conversions (
    payment_id     TEXT   NOT NULL PRIMARY KEY,
    currency       TEXT   NOT NULL CHECK (length(currency) = 3),
    amount         BIGINT NOT NULL CHECK (amount > 0),
    rate           TEXT   NOT NULL,
    fx_plugin      TEXT   NOT NULL,
    quote_id       TEXT
);
CREATE UNIQUE INDEX conversions_by_quote ON conversions (quote_id) WHERE quote_id IS NOT NULL;
CREATE TABLE fx_quotes (
    id               TEXT   NOT NULL PRIMARY KEY,
    payer            TEXT   NOT NULL,
    payee            TEXT   NOT NULL,
    currency         TEXT   NOT NULL CHECK (length(currency) = 3),
    amount           BIGINT NOT NULL CHECK (amount > 0),
    counter_currency TEXT   NOT NULL CHECK (length(counter_currency) = 3),
    counter_amount   BIGINT NOT NULL CHECK (counter_amount > 0),
    rate             TEXT   NOT NULL,
    fx_plugin        TEXT   NOT NULL,
    created_at_ms    BIGINT NOT NULL,
    expires_at_ms    BIGINT NOT NULL
);
-- Quotes are deleted a day after they expire (`store_quote`), oldest first.
CREATE INDEX fx_quotes_by_expiry ON fx_quotes (expires_at_ms);
