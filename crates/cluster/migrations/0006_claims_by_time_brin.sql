-- Cluster mode, schema version 6: the claims' index by time, which only retention reads (it deletes
-- the claims of days past keeping), is a BRIN index instead of a B-tree. Claims are inserted in the
-- order of their time, so a block range's smallest and largest times are all retention needs to skip
-- it; a B-tree took an entry a claim, inside the commit a node waits on (1-2 µs of the database's CPU
-- a purchase on a 2-core machine, 3-5 % of one writer's purchases a second). Nothing else reads it.
-- Block ranges not yet summarized (the newest, until autovacuum gets to them) are always read: a
-- slower delete, never a wrong one.
DROP INDEX claims_at;
CREATE INDEX claims_at ON claims USING brin (at) WITH (autosummarize = on);
