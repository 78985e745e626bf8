-- Cluster mode, schema version 5: the claims' key leads with the transaction date and the STAN, then
-- the terminal, the merchant and the reversal flag (the same columns, so the same key and the same
-- conflicts). Every commit inserts a claim a request; keyed by terminal first, each insert compared
-- two text columns (the second one read the slow way, past a variable-length column) before the
-- numbers that tell keys apart, and landed next to that terminal's claims of every retained day, so
-- that the whole index was the working set. Keyed by day first, the comparisons are two integers in
-- the common case and a day's inserts fill one region of the index.
--
-- The index is built again here, in one pass over the claims; commits wait for it (0.4 s a
-- million claims on a 2-core machine).
ALTER TABLE claims DROP CONSTRAINT claims_pkey,
    ADD PRIMARY KEY (day, stan, terminal, merchant, reversal);

-- The commit of version 3, its claims inserted plainly first: ON CONFLICT's speculative insert costs
-- each claim a lock and one more WAL record (at the floor, 2 µs of the database's CPU a purchase, 8 %
-- of one writer's purchases a second), for a conflict that almost never comes (a node's own
-- duplicates never get here). A key already held, or claimed by another node meanwhile, fails the
-- plain insert; the block undoes it, and the batch's claims go the careful way. The statements a
-- batch needs only in rare cases (a key held or taken over, another node's work retired, claims
-- lost) run only then: each statement costs its start-up, every commit. The same body serves the
-- nodes of versions 3 and 4 during a rolling upgrade (same arguments, same results).
CREATE OR REPLACE FUNCTION acquiro_commit(
    n text, e bigint,
    seqs bigint[], firsts bigint[], txns bigint[], ats timestamptz[], bodies bytea[], alts bytea[],
    terminals text[], stans integer[], days smallint[], last4s text[], rrns text[],
    c_txns bigint[], c_terminals text[], c_merchants text[], c_stans integer[], c_days smallint[],
    c_reversals boolean[], c_fingerprints bigint[], c_old_nodes text[], c_old_txns bigint[],
    r_nodes text[], r_seqs bigint[]
) RETURNS SETOF bigint LANGUAGE plpgsql AS $$
DECLARE
    -- NULL while every new key of the batch is won (the plain insert went through).
    won bigint[];
    taken bigint[] := '{}';
    lost bigint[] := '{}';
    -- Some claim takes a key over (rare): only then the statements for it run.
    taking boolean := array_remove(c_old_nodes, NULL) <> '{}';
BEGIN
    PERFORM 1 FROM nodes WHERE node = n AND epoch = e FOR SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'node % is fenced: epoch % is no longer current', n, e USING ERRCODE = 'AQ001';
    END IF;
    BEGIN
        INSERT INTO claims (terminal, merchant, stan, day, reversal, node, txn, fingerprint, at)
            SELECT w.terminal, w.merchant, w.stan, w.day, w.reversal, n, w.txn, w.fingerprint, now()
            FROM unnest(c_txns, c_terminals, c_merchants, c_stans, c_days, c_reversals, c_fingerprints,
                        c_old_nodes) AS w(txn, terminal, merchant, stan, day, reversal, fingerprint, old_node)
            WHERE w.old_node IS NULL;
    EXCEPTION WHEN unique_violation THEN
        WITH inserted AS (
            INSERT INTO claims (terminal, merchant, stan, day, reversal, node, txn, fingerprint, at)
                SELECT w.terminal, w.merchant, w.stan, w.day, w.reversal, n, w.txn, w.fingerprint, now()
                FROM unnest(c_txns, c_terminals, c_merchants, c_stans, c_days, c_reversals,
                            c_fingerprints, c_old_nodes)
                    AS w(txn, terminal, merchant, stan, day, reversal, fingerprint, old_node)
                WHERE w.old_node IS NULL
                ON CONFLICT DO NOTHING
                RETURNING claims.txn
        )
        SELECT coalesce(array_agg(txn), '{}') INTO won FROM inserted;
    END;
    IF taking THEN
        -- A key taken over from a transaction that ended without being forwarded: only from that one.
        WITH updated AS (
            UPDATE claims c SET node = n, txn = w.txn, fingerprint = w.fingerprint, at = now()
                FROM unnest(c_txns, c_terminals, c_merchants, c_stans, c_days, c_reversals,
                            c_fingerprints, c_old_nodes, c_old_txns)
                    AS w(txn, terminal, merchant, stan, day, reversal, fingerprint, old_node, old_txn)
                WHERE w.old_node IS NOT NULL AND c.terminal = w.terminal AND c.merchant = w.merchant
                  AND c.stan = w.stan AND c.day = w.day AND c.reversal = w.reversal
                  AND c.node = w.old_node AND c.txn = w.old_txn
                RETURNING c.txn
        )
        SELECT coalesce(array_agg(txn), '{}') INTO taken FROM updated;
    END IF;
    IF won IS NOT NULL OR taking THEN
        won := coalesce(won, ARRAY(SELECT w.txn FROM unnest(c_txns, c_old_nodes) AS w(txn, old_node)
                                   WHERE w.old_node IS NULL));
        SELECT coalesce(array_agg(t), '{}') INTO lost FROM unnest(c_txns) AS t
            WHERE t <> ALL (won || taken);
    END IF;
    INSERT INTO records (node, seq, first, txn, at, body, terminal, stan, day, last4, rrn)
        SELECT n, r.seq, r.first, r.txn, r.at,
               CASE WHEN r.alt IS NOT NULL AND r.txn = ANY (lost) THEN r.alt ELSE r.body END,
               r.terminal, r.stan, r.day, r.last4,
               CASE WHEN r.alt IS NOT NULL AND r.txn = ANY (lost) THEN NULL ELSE r.rrn END
        FROM unnest(seqs, firsts, txns, ats, bodies, alts, terminals, stans, days, last4s, rrns)
            AS r(seq, first, txn, at, body, alt, terminal, stan, day, last4, rrn);
    IF cardinality(r_nodes) > 0 THEN
        UPDATE nodes y SET retired_seq = greatest(y.retired_seq, r.seq)
            FROM unnest(r_nodes, r_seqs) AS r(node, seq)
            WHERE y.node = r.node AND y.taken_by = n;
    END IF;
    IF cardinality(lost) > 0 THEN
        RETURN QUERY SELECT unnest(lost);
    END IF;
END $$;
