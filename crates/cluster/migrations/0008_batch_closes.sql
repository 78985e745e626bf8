-- Cluster mode, schema version 8: where each terminal's batch last closed. A settlement message reads
-- its terminal's open batch as every node recorded it (a terminal behind a balancer reaches any node);
-- this bounds the read to the records since the last close, not the terminal's whole history. A node
-- moves it forward after the commit that closed the batch: a bound read before that is older, which
-- reads more and folds to the same batch.
CREATE TABLE batch_closes (
    terminal text COLLATE "C" NOT NULL,
    merchant text COLLATE "C" NOT NULL,
    at timestamptz NOT NULL,
    PRIMARY KEY (terminal, merchant)
);
