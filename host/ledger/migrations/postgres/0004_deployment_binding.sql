-- Which ledger each NATS deployment is bound to, as this ledger knows it. A ledger whose nodes
-- served a deployment records itself; a ledger whose nodes were refused records the ledger the
-- deployment was bound to. NATS's binding is a cache of this: losing it must neither stop the
-- deployment nor let another ledger claim it. A row changes only by an operator's command
-- (`wasmpay cluster adopt`).
CREATE TABLE deployment_binding (
    deployment     TEXT   NOT NULL PRIMARY KEY,
    ledger         TEXT   NOT NULL,
    recorded_at_ms BIGINT NOT NULL
);
