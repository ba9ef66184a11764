-- Refunds may give part of their payment's fee back; SQLite's 0009_fee_reversals says more.
-- A constant default: PostgreSQL adds the column without rewriting the table. The check is
-- added NOT VALID: every existing row holds the default 0, and validating would scan the whole
-- table under the ALTER's exclusive lock. New and updated rows are checked all the same.
ALTER TABLE payments ADD COLUMN fee_reversed BIGINT NOT NULL DEFAULT 0;
ALTER TABLE payments ADD CONSTRAINT payments_fee_reversed_check CHECK (fee_reversed >= 0) NOT VALID;
