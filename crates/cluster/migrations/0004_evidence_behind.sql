-- Cluster mode, schema version 4: the indexes disputes search by (RRN, terminal + STAN, card last four)
-- move off the commit. A commit still stores each row's evidence columns in `records`, unindexed;
-- `evidence` holds a copy of them, indexed, written behind the commits by whichever node gets there
-- first (`acquiro_index_evidence`), up to each node's mark in `evidence_marks`. A search reads
-- `evidence`, and the rows past the marks directly (the last fraction of a second). Those three
-- random index inserts were a quarter of the database's CPU a purchase, inside the commit that one
-- node waits on.
CREATE TABLE evidence (
    node text COLLATE "C" NOT NULL,
    txn bigint NOT NULL,
    at timestamptz NOT NULL,
    terminal text COLLATE "C",
    stan integer,
    last4 text COLLATE "C",
    rrn text COLLATE "C"
) PARTITION BY RANGE (at);
CREATE TABLE evidence_default PARTITION OF evidence DEFAULT;
CREATE INDEX evidence_rrn ON evidence (rrn) WHERE rrn IS NOT NULL;
CREATE INDEX evidence_terminal ON evidence (terminal, stan) WHERE terminal IS NOT NULL;
CREATE INDEX evidence_last4 ON evidence (last4, at) WHERE last4 IS NOT NULL;

-- Each node's rows up to `seq` are in `evidence`. A node's rows commit in the order of their keys
-- (its batches are committed one after another), so none can appear below its mark later.
CREATE TABLE evidence_marks (
    node text COLLATE "C" PRIMARY KEY,
    seq bigint NOT NULL
);

-- The days already made have their twin in `evidence` (retention drops both together).
DO $$
DECLARE d text;
BEGIN
    FOR d IN SELECT substr(c.relname, 9) FROM pg_inherits i
                 JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent
             WHERE p.relname = 'records' AND c.relname ~ '^records_[0-9]{8}$' LOOP
        EXECUTE format('CREATE TABLE %I PARTITION OF evidence FOR VALUES FROM (%L) TO (%L)',
                       'evidence_' || d, to_date(d, 'YYYYMMDD'), to_date(d, 'YYYYMMDD') + 1);
    END LOOP;
END $$;

-- Copies the evidence of up to `most` rows (all: NULL) of each node past its mark, and moves the mark,
-- made here for a node that has none (it has copied nothing); a node whose mark another transaction
-- holds is skipped (it is being copied). Returns the rows read.
-- The scan is planned with the mark's value each time (EXECUTE): a plan made for any mark may read
-- the whole journal, where the rows past a mark are its last fraction of a second.
CREATE FUNCTION acquiro_index_evidence(most integer) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    m record;
    upto bigint;
    n bigint;
    total bigint := 0;
BEGIN
    INSERT INTO evidence_marks (node, seq) SELECT node, 0 FROM nodes ON CONFLICT DO NOTHING;
    FOR m IN SELECT node, seq FROM evidence_marks ORDER BY node FOR UPDATE SKIP LOCKED LOOP
        EXECUTE 'WITH batch AS (
                     SELECT node, seq, txn, at, terminal, stan, last4, rrn FROM records
                     WHERE node = $1 AND seq > $2 ORDER BY seq LIMIT $3
                 ), copied AS (
                     INSERT INTO evidence (node, txn, at, terminal, stan, last4, rrn)
                         SELECT node, txn, at, terminal, stan, last4, rrn FROM batch
                         WHERE terminal IS NOT NULL OR last4 IS NOT NULL OR rrn IS NOT NULL
                 )
                 SELECT max(seq), count(*) FROM batch'
            INTO upto, n USING m.node, m.seq, most;
        CONTINUE WHEN upto IS NULL;
        UPDATE evidence_marks SET seq = upto WHERE node = m.node;
        total := total + n;
    END LOOP;
    RETURN total;
END $$;

-- What is already in the journal, copied by the same function; then the indexes it replaces go.
SELECT acquiro_index_evidence(NULL);
DROP INDEX records_rrn, records_terminal, records_last4;
