-- The write pattern of cluster mode's group commit, as a candidate schema: one node's batch of journal
-- records and the idempotency keys its new transactions claim, in one transaction, behind the node's
-- lease epoch (the fence).
CREATE TABLE nodes (node text PRIMARY KEY, epoch bigint NOT NULL, lease_until timestamptz NOT NULL);
CREATE TABLE records (
    node text NOT NULL,
    seq bigint NOT NULL,
    txn bigint NOT NULL,
    at_us bigint NOT NULL,
    body bytea NOT NULL,
    PRIMARY KEY (node, seq)
);
CREATE TABLE claims (
    ids bigint NOT NULL,
    stan integer NOT NULL,
    day smallint NOT NULL,
    node text NOT NULL,
    txn bigint NOT NULL,
    fingerprint bigint NOT NULL,
    PRIMARY KEY (ids, stan, day)
);
INSERT INTO nodes VALUES ('a', 1, now() + interval '1 hour');
-- The fence: a node whose epoch is no longer current commits nothing (the error aborts the transaction).
CREATE FUNCTION fence(n text, e bigint) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  PERFORM 1 FROM nodes WHERE node = n AND epoch = e FOR SHARE;
  IF NOT FOUND THEN RAISE EXCEPTION 'node % lost its lease (epoch %)', n, e; END IF;
END $$;
