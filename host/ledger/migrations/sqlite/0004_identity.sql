-- This ledger's identity, made at random once: nodes that write the same ledger report the
-- same identity, so a cluster can tell a node on another ledger, which must never share
-- partitions with it.
CREATE TABLE ledger_identity (
    id TEXT NOT NULL PRIMARY KEY
) STRICT;
INSERT INTO ledger_identity (id) VALUES (lower(hex(randomblob(16))));
