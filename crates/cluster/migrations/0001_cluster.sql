-- Cluster mode, schema version 1. Every node writes ahead to these tables; any node can recover from
-- them. Nothing here holds a card number, track, PIN block or EMV data: journal records are the same
-- postcard bodies the file journal keeps (a card as BIN, last four and keyed hash).

-- One row: settings every node must share. The card key is checked, never stored: a keyed hash of a
-- fixed text tells whether two nodes hold the same key.
CREATE TABLE cluster (
    only_one boolean PRIMARY KEY DEFAULT true CHECK (only_one),
    card_key_check text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- A node and its lease. `epoch` rises each time the node joins and each time another node takes its
-- work over; a commit names the epoch it was made under and fails once that is no longer current (the
-- fence). `taken_by`/`taken_epoch`: the node that took the work over, under which of its own epochs;
-- `taken_through`: the node's last record when it was taken over; `retired_seq`: the last record whose
-- work a takeover has handed on, raised in the same commit as the taker's records of that work
-- (recovery of this node starts after it). A takeover is under way while retired_seq < taken_through.
CREATE TABLE nodes (
    node text PRIMARY KEY,
    epoch bigint NOT NULL,
    lease_until timestamptz NOT NULL,
    joined_at timestamptz NOT NULL,
    taken_by text,
    taken_epoch bigint,
    taken_at timestamptz,
    taken_through bigint NOT NULL DEFAULT 0,
    retired_seq bigint NOT NULL DEFAULT 0,
    -- Reported with each lease renewal, for `acquiro cluster status`.
    in_flight integer NOT NULL DEFAULT 0,
    reversals integer NOT NULL DEFAULT 0,
    -- Recovery of this node needs none of its records before this one (raised at each renewal from
    -- the oldest transaction the node still needs: in flight, being reversed, or in the idempotency
    -- window), so that a restart or a takeover reads what matters, not the node's whole history.
    needed_seq bigint NOT NULL DEFAULT 0
);

-- The journal: each node's records in its own sequence. Partitioned by day, so that retention drops whole
-- partitions. The columns after `body` are copies of what disputes search by.
CREATE TABLE records (
    node text NOT NULL,
    seq bigint NOT NULL,
    txn bigint NOT NULL,
    at timestamptz NOT NULL,
    body bytea NOT NULL,
    terminal text,
    stan integer,
    day smallint,
    last4 text,
    rrn text,
    PRIMARY KEY (node, seq, at)
) PARTITION BY RANGE (at);
CREATE TABLE records_default PARTITION OF records DEFAULT;
CREATE INDEX records_txn ON records (node, txn);
CREATE INDEX records_rrn ON records (rrn) WHERE rrn IS NOT NULL;
CREATE INDEX records_terminal ON records (terminal, stan) WHERE terminal IS NOT NULL;
CREATE INDEX records_last4 ON records (last4, at) WHERE last4 IS NOT NULL;

-- Idempotency keys, claimed by the first record of a new request, in the same commit. The key is the
-- one the in-memory table uses: terminal, merchant, STAN, transaction date, and whether it is a reversal.
CREATE TABLE claims (
    terminal text NOT NULL,
    merchant text NOT NULL,
    stan integer NOT NULL,
    day smallint NOT NULL,
    reversal boolean NOT NULL,
    node text NOT NULL,
    txn bigint NOT NULL,
    fingerprint bigint NOT NULL,
    at timestamptz NOT NULL,
    PRIMARY KEY (terminal, merchant, stan, day, reversal)
);
CREATE INDEX claims_at ON claims (at);

-- One batch of one node, in one transaction: the fence, the records, the claims, and the work of nodes
-- it took over that these records carry on (r_nodes up to r_seqs). Returns the claims lost to another
-- node's transactions (which this node does not forward).
CREATE FUNCTION acquiro_commit(
    n text, e bigint,
    seqs bigint[], txns bigint[], ats timestamptz[], bodies bytea[],
    terminals text[], stans integer[], days smallint[], last4s text[], rrns text[],
    c_txns bigint[], c_terminals text[], c_merchants text[], c_stans integer[], c_days smallint[],
    c_reversals boolean[], c_fingerprints bigint[], c_old_nodes text[], c_old_txns bigint[],
    r_nodes text[], r_seqs bigint[]
) RETURNS SETOF bigint LANGUAGE plpgsql AS $$
BEGIN
    -- FOR SHARE: a takeover (which locks the row FOR UPDATE to raise the epoch) waits for this commit,
    -- and this commit for a takeover under way; whichever comes second sees the other's outcome.
    PERFORM 1 FROM nodes WHERE node = n AND epoch = e FOR SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'node % is fenced: epoch % is no longer current', n, e USING ERRCODE = 'AQ001';
    END IF;
    INSERT INTO records (node, seq, txn, at, body, terminal, stan, day, last4, rrn)
        SELECT n, * FROM unnest(seqs, txns, ats, bodies, terminals, stans, days, last4s, rrns);
    UPDATE nodes y SET retired_seq = greatest(y.retired_seq, r.seq)
        FROM unnest(r_nodes, r_seqs) AS r(node, seq)
        WHERE y.node = r.node AND y.taken_by = n;
    RETURN QUERY
    WITH wanted AS (
        SELECT * FROM unnest(c_txns, c_terminals, c_merchants, c_stans, c_days, c_reversals, c_fingerprints,
                             c_old_nodes, c_old_txns)
            AS w(txn, terminal, merchant, stan, day, reversal, fingerprint, old_node, old_txn)
    ), won AS (
        INSERT INTO claims (terminal, merchant, stan, day, reversal, node, txn, fingerprint, at)
            SELECT terminal, merchant, stan, day, reversal, n, txn, fingerprint, now() FROM wanted
            WHERE old_node IS NULL
            ON CONFLICT DO NOTHING
            RETURNING claims.txn
    ), taken AS (
        -- A key taken over from a transaction that ended without being forwarded: only from that one.
        UPDATE claims c SET node = n, txn = w.txn, fingerprint = w.fingerprint, at = now()
            FROM wanted w
            WHERE w.old_node IS NOT NULL AND c.terminal = w.terminal AND c.merchant = w.merchant
              AND c.stan = w.stan AND c.day = w.day AND c.reversal = w.reversal
              AND c.node = w.old_node AND c.txn = w.old_txn
            RETURNING c.txn
    )
    SELECT wanted.txn FROM wanted
        WHERE wanted.txn NOT IN (SELECT won.txn FROM won UNION ALL SELECT taken.txn FROM taken);
END $$;
