-- Fencing tokens: per partition, the newest lease token a batch has written under. A batch
-- carrying an older token for a partition is refused whole, in the same transaction, so an
-- owner that lost its lease (paused, cut off) cannot write after a newer owner did. The
-- upsert of a partition's row holds its lock until commit, so an old and a new owner's
-- batches for one partition are ordered by it.
CREATE TABLE partition_fences (
    partition BIGINT NOT NULL PRIMARY KEY,
    token     BIGINT NOT NULL CHECK (token >= 0)
);
