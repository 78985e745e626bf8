-- Cluster mode, schema version 3: a row of `records` holds every record of one transaction in one
-- commit, so that a purchase writes two rows (received and forwarded, then answered and told), not
-- four: each commit inserts half the rows and index entries, the database's main cost per purchase.
-- `seq` is the row's last record's number (the key: the highest record of a node is still max(seq)),
-- `first` its first's; the body is a mark no earlier release decodes, then each record's number (a
-- postcard varint) and the record, in order. A row written before version 3 holds one record, numbered
-- `seq`, with no number in its body, and `first` NULL: it is read as it is, never rewritten.
--
-- The version 1 and 2 functions stay: a node of an earlier release still running during a rolling
-- upgrade goes on committing rows of one record. It cannot read the rows of version 3 (it fails on
-- them, naming the record, rather than misread them).
ALTER TABLE records ADD COLUMN first bigint;

-- The text keys compare as bytes (collation "C"), whatever the database's default: they are names and
-- digits, never sorted for people, and comparing them by a locale in every index insert cost the
-- database 4-5 % of its purchases a second (benches/pg-floor). Their indexes are rebuilt once, here.
ALTER TABLE records ALTER COLUMN node TYPE text COLLATE "C", ALTER COLUMN terminal TYPE text COLLATE "C",
    ALTER COLUMN last4 TYPE text COLLATE "C", ALTER COLUMN rrn TYPE text COLLATE "C";
ALTER TABLE claims ALTER COLUMN terminal TYPE text COLLATE "C", ALTER COLUMN merchant TYPE text COLLATE "C",
    ALTER COLUMN node TYPE text COLLATE "C";

CREATE FUNCTION acquiro_commit(
    n text, e bigint,
    seqs bigint[], firsts bigint[], txns bigint[], ats timestamptz[], bodies bytea[], alts bytea[],
    terminals text[], stans integer[], days smallint[], last4s text[], rrns text[],
    c_txns bigint[], c_terminals text[], c_merchants text[], c_stans integer[], c_days smallint[],
    c_reversals boolean[], c_fingerprints bigint[], c_old_nodes text[], c_old_txns bigint[],
    r_nodes text[], r_seqs bigint[]
) RETURNS SETOF bigint LANGUAGE plpgsql AS $$
DECLARE
    lost bigint[];
BEGIN
    -- As in version 2: the fence, the claims, then the rows, each replaced by its stand-in (`alts`)
    -- where its transaction's claim was lost.
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
    INSERT INTO records (node, seq, first, txn, at, body, terminal, stan, day, last4, rrn)
        SELECT n, r.seq, r.first, r.txn, r.at,
               CASE WHEN r.alt IS NOT NULL AND r.txn = ANY (lost) THEN r.alt ELSE r.body END,
               r.terminal, r.stan, r.day, r.last4,
               CASE WHEN r.alt IS NOT NULL AND r.txn = ANY (lost) THEN NULL ELSE r.rrn END
        FROM unnest(seqs, firsts, txns, ats, bodies, alts, terminals, stans, days, last4s, rrns)
            AS r(seq, first, txn, at, body, alt, terminal, stan, day, last4, rrn);
    UPDATE nodes y SET retired_seq = greatest(y.retired_seq, r.seq)
        FROM unnest(r_nodes, r_seqs) AS r(node, seq)
        WHERE y.node = r.node AND y.taken_by = n;
    RETURN QUERY SELECT unnest(lost);
END $$;
