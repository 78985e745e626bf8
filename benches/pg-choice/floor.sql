-- pgbench's custom script for the floor: one batch of 16 transactions (64 records, 16 claims) per
-- commit, the statements the clients send. `:client_id` and `:seq` keep keys unique.
\set seq random(1, 1000000000000)
BEGIN;
SELECT fence('a', 1);
INSERT INTO records (node, seq, txn, at_us, body)
  SELECT 'b' || :client_id, :seq::bigint * 64 + g, :seq::bigint * 16 + g / 4, 1795253400000000, '\x00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff'::bytea
  FROM generate_series(0, 63) g;
INSERT INTO claims (ids, stan, day, node, txn, fingerprint)
  SELECT :client_id * 1000000 + g, (:seq % 999999)::int, 1202, 'a', :seq::bigint * 16 + g, g
  FROM generate_series(0, 15) g
  ON CONFLICT DO NOTHING;
COMMIT;
