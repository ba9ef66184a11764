-- Refunds may give part of their payment's fee back (a plugin's `refund-fee` export, WIT
-- 0.1.1). On a refund's row: what it gave back; on a payment's or capture's: what its refunds
-- gave back in all, never more than its fee (`wasmpay ledger verify`). A new column with a
-- constant default rewrites nothing.
ALTER TABLE payments ADD COLUMN fee_reversed INTEGER NOT NULL DEFAULT 0 CHECK (fee_reversed >= 0);
