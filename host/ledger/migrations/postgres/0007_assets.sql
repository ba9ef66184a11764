-- Assets beside the ISO 4217 currencies: an operator registers a code and its exponent (a
-- security, a commodity, loyalty points) and opens accounts in it; the money rules are the
-- same (integer minor units, entries summing to zero per unit). SQLite's 0008_assets says more.
CREATE TABLE assets (
    code          TEXT     NOT NULL PRIMARY KEY CHECK (length(code) BETWEEN 4 AND 12),
    exponent      SMALLINT NOT NULL CHECK (exponent BETWEEN 0 AND 15),
    name          TEXT     NOT NULL,
    created_at_ms BIGINT   NOT NULL
);
-- An ISO 4217 code (three letters) or a registered asset's (4 to 12 characters).
ALTER TABLE accounts DROP CONSTRAINT accounts_currency_check;
ALTER TABLE accounts ADD CONSTRAINT accounts_currency_check CHECK (length(currency) BETWEEN 3 AND 12);
