-- Statements read an account's payments through its entries (entries_by_account), not through
-- indexes on payments by payer and by payee: those two cost every payment two more B-tree
-- inserts at a random place, 40 % of the ledger's rate on SQLite (docs/performance.md).
DROP INDEX payments_by_payer;
DROP INDEX payments_by_payee;
-- An account's open holds, the soonest to expire first: what its statement shows as pending.
-- Only authorizations write it.
CREATE INDEX holds_open_by_account ON holds (account_id, expires_at_ms, id) WHERE state = 'open';
