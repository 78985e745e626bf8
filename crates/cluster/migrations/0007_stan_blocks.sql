-- Cluster mode, schema version 7: each node numbers its upstream messages (DE11) within a block of
-- STANs of its own, `stan_block` n (0-9) being STANs n00000 to n99999, so that two nodes never send
-- an issuer the same STAN in the same second of DE7 under the same DE32 (an issuer matching a reversal
-- by DE90 alone would apply one node's reversal to the other's purchase). A node is given a block when
-- it joins: the one it holds, else the lowest no node with a live lease holds (see `Store::join`).
ALTER TABLE nodes ADD COLUMN stan_block smallint UNIQUE CHECK (stan_block BETWEEN 0 AND 9);
