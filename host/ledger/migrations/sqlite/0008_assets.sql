-- no-transaction
-- Assets beside the ISO 4217 currencies: an operator registers a code and its exponent (a
-- security, a commodity, loyalty points) and opens accounts in it; the money rules are the
-- same (integer minor units, entries summing to zero per unit).
--
-- accounts.currency was checked to be three letters, and SQLite cannot change a CHECK in
-- place, so accounts is rebuilt. Payments, entries, holds and credits reference it: foreign
-- keys are off while the table is swapped (the SQLite manual's twelve-step procedure, "Making
-- Other Kinds Of Table Schema Changes"), everything else in one transaction. Hence
-- `no-transaction` above: PRAGMA foreign_keys is a no-op inside a transaction. It is safe to
-- run again (after a crash between its COMMIT and sqlx recording it): the rebuild copies the
-- rebuilt table, and `assets` is kept.
PRAGMA foreign_keys = OFF;
BEGIN IMMEDIATE;
CREATE TABLE IF NOT EXISTS assets (
    code          TEXT    NOT NULL PRIMARY KEY CHECK (length(code) BETWEEN 4 AND 12),
    exponent      INTEGER NOT NULL CHECK (exponent BETWEEN 0 AND 15),
    name          TEXT    NOT NULL,
    created_at_ms INTEGER NOT NULL
) STRICT;
CREATE TABLE accounts_with_assets (
    id            TEXT    NOT NULL PRIMARY KEY,
    -- An ISO 4217 code (three letters) or a registered asset's (4 to 12 characters).
    currency      TEXT    NOT NULL CHECK (length(currency) BETWEEN 3 AND 12),
    balance       INTEGER NOT NULL DEFAULT 0,
    floor         INTEGER,
    kind          TEXT    NOT NULL CHECK (kind IN ('customer', 'fees', 'external')),
    created_at_ms INTEGER NOT NULL,
    held          INTEGER NOT NULL DEFAULT 0 CHECK (held >= 0),
    CHECK (floor IS NULL OR balance >= floor)
) STRICT;
INSERT INTO accounts_with_assets (id, currency, balance, floor, kind, created_at_ms, held)
SELECT id, currency, balance, floor, kind, created_at_ms, held FROM accounts;
DROP TABLE accounts;
ALTER TABLE accounts_with_assets RENAME TO accounts;
COMMIT;
PRAGMA foreign_keys = ON;
