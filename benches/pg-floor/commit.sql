-- One group commit of cluster mode, as acquiro_commit gets it: :b transactions, each with the two rows
-- of a purchase (schema version 3: received and forwarded in one row, answered and told in the other;
-- bodies of a typical size, with their mark and record numbers; the forward provisional, with the
-- row's stand-in kept if its claim is lost) and the claim of its key (:b is given by pgbench -D).
-- Sequence numbers come from a sequence, and transaction numbers and RRNs rise with them as a node's
-- do (the engine numbers its transactions in order; an RRN ends in its link's STAN); keys have random
-- STANs and terminals.
SELECT count(*) FROM acquiro_commit('bench' || :client_id, 1,
  array(SELECT nextval('bench_seq') FROM generate_series(1, 2 * :b)),
  array(SELECT currval('bench_seq') - 2 * :b + i FROM generate_series(1, 2 * :b) i),
  array(SELECT (currval('bench_seq') - 2 * :b + i) / 2 FROM generate_series(1, 2 * :b) i),
  array(SELECT now() FROM generate_series(1, 2 * :b)),
  array(SELECT decode(repeat('5a', 316), 'hex') FROM generate_series(1, 2 * :b)),
  array(SELECT CASE WHEN i % 2 = 1 THEN decode(repeat('5a', 178), 'hex') END FROM generate_series(1, 2 * :b) i),
  array(SELECT CASE WHEN i % 2 = 1 THEN 'TERM' || (random() * 1e6)::int END FROM generate_series(1, 2 * :b) i),
  array(SELECT CASE WHEN i % 2 = 1 THEN (random() * 999999)::int END FROM generate_series(1, 2 * :b) i),
  array(SELECT CASE WHEN i % 2 = 1 THEN 1202::smallint END FROM generate_series(1, 2 * :b) i),
  array(SELECT CASE WHEN i % 2 = 1 THEN '0010' END FROM generate_series(1, 2 * :b) i),
  array(SELECT CASE WHEN i % 2 = 1 THEN lpad((currval('bench_seq') / 2 + i / 2)::text, 12, '0') END FROM generate_series(1, 2 * :b) i),
  array(SELECT (random() * 1e12)::bigint FROM generate_series(1, :b)),
  array(SELECT 'TERM' || (random() * 1e6)::int FROM generate_series(1, :b)),
  array(SELECT 'MERCHANT0000001'::text FROM generate_series(1, :b)),
  array(SELECT (random() * 999999)::int FROM generate_series(1, :b)),
  array(SELECT 1202::smallint FROM generate_series(1, :b)),
  array(SELECT false FROM generate_series(1, :b)),
  array(SELECT (random() * 1e18)::bigint FROM generate_series(1, :b)),
  array(SELECT NULL::text FROM generate_series(1, :b)),
  array(SELECT NULL::bigint FROM generate_series(1, :b)),
  '{}'::text[], '{}'::bigint[]);
