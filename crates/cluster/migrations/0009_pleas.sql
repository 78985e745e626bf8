-- Cluster mode, schema version 9: pleas. A node that refuses a request with 91 before the database
-- said whose its key is (the database was away, or did not answer in time) admits a reversal in the
-- terminal's name, which reverses whatever holds that key. No terminal repeats that reversal, and until
-- its outcome is committed only the node's memory holds it: a node that ends first (fenced, or at the
-- end of a shutdown) leaves it here, and a live node takes it on (`taken_by` under `taken_epoch`; free
-- again once that node's lease lapses or its epoch moves on). Deleted once its outcome is committed.
CREATE TABLE pleas (
    terminal text COLLATE "C" NOT NULL,
    merchant text COLLATE "C" NOT NULL,
    stan integer NOT NULL,
    day smallint NOT NULL,
    -- When the terminal was told 91: a transaction under the key received later is not reversed.
    refused_at timestamptz NOT NULL,
    left_by text NOT NULL,
    left_at timestamptz NOT NULL DEFAULT now(),
    taken_by text,
    taken_epoch bigint,
    PRIMARY KEY (terminal, merchant, stan, day)
);
