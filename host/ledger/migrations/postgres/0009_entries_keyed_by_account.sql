-- Statements read an account's entries in id order, through an index on (account_id, id)
-- (0005). Unlike the (account_id) index it replaced, whose equal keys PostgreSQL stores once
-- with a list of rows, every key of it is distinct and full width: a payment's three entries
-- cost the ledger about 6 % of its rate (docs/performance.md, step 11). That index becomes the
-- table's primary key instead of a third one: every entry is written into two indexes, its
-- account's and its payment's, one fewer than before statements existed. Ids stay unique by
-- their identity sequence; nothing looks an entry up by its id alone.
ALTER TABLE entries DROP CONSTRAINT entries_pkey;
ALTER TABLE entries ADD CONSTRAINT entries_pkey PRIMARY KEY (account_id, id);
DROP INDEX entries_by_account;
