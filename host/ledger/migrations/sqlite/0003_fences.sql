-- Fencing tokens: per partition, the newest lease token a batch has written under. A batch
-- carrying an older token for a partition is refused whole, in the same transaction, so an
-- owner that lost its lease (paused, cut off) cannot write after a newer owner did.
CREATE TABLE partition_fences (
    partition INTEGER NOT NULL PRIMARY KEY,
    token     INTEGER NOT NULL CHECK (token >= 0)
) STRICT;
