-- Cluster mode, schema version 2: a forward committed with its transaction's claim is provisional
-- (the switch no longer waits for the claim's commit before it forwards a request it can route).
-- acquiro_commit takes, beside each record's body, what to keep in its place when the claim of its
-- transaction is lost (`alts`; NULL for a record that stands whatever the claims), and decides the
-- claims before it stores the records. The sequence of a node's records stays whole: a withdrawn
-- forward keeps its number, with a record that says it never left.
--
-- The version 1 function (one argument fewer) stays beside it: a node of the previous release that is
-- still running during a rolling upgrade goes on committing with it (it never forwards provisionally).

-- One batch of one node, in one transaction: the fence, the claims, the records, and the work of nodes
-- it took over that these records carry on (r_nodes up to r_seqs). Returns the claims lost to another
-- node's transactions (which this node does not forward).
CREATE FUNCTION acquiro_commit(
    n text, e bigint,
    seqs bigint[], txns bigint[], ats timestamptz[], bodies bytea[], alts bytea[],
    terminals text[], stans integer[], days smallint[], last4s text[], rrns text[],
    c_txns bigint[], c_terminals text[], c_merchants text[], c_stans integer[], c_days smallint[],
    c_reversals boolean[], c_fingerprints bigint[], c_old_nodes text[], c_old_txns bigint[],
    r_nodes text[], r_seqs bigint[]
) RETURNS SETOF bigint LANGUAGE plpgsql AS $$
DECLARE
    lost bigint[];
BEGIN
    -- FOR SHARE: a takeover (which locks the row FOR UPDATE to raise the epoch) waits for this commit,
    -- and this commit for a takeover under way; whichever comes second sees the other's outcome.
    PERFORM 1 FROM nodes WHERE node = n AND epoch = e FOR SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'node % is fenced: epoch % is no longer current', n, e USING ERRCODE = 'AQ001';
    END IF;
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
    SELECT coalesce(array_agg(wanted.txn), '{}') INTO lost FROM wanted
        WHERE wanted.txn NOT IN (SELECT won.txn FROM won UNION ALL SELECT taken.txn FROM taken);
    INSERT INTO records (node, seq, txn, at, body, terminal, stan, day, last4, rrn)
        SELECT n, r.seq, r.txn, r.at,
               CASE WHEN r.alt IS NOT NULL AND r.txn = ANY (lost) THEN r.alt ELSE r.body END,
               r.terminal, r.stan, r.day, r.last4,
               CASE WHEN r.alt IS NOT NULL AND r.txn = ANY (lost) THEN NULL ELSE r.rrn END
        FROM unnest(seqs, txns, ats, bodies, alts, terminals, stans, days, last4s, rrns)
            AS r(seq, txn, at, body, alt, terminal, stan, day, last4, rrn);
    UPDATE nodes y SET retired_seq = greatest(y.retired_seq, r.seq)
        FROM unnest(r_nodes, r_seqs) AS r(node, seq)
        WHERE y.node = r.node AND y.taken_by = n;
    RETURN QUERY SELECT unnest(lost);
END $$;
