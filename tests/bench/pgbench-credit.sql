-- pgbench-credit.sql: reference (c), one `credit_transaction` event per
-- autocommit INSERT (weight 5). See pgbench-generation.sql.
\set pass random(0, 999)
\set sess random(0, 7)
\set delta random(-5, -1)
\set seq random(1, 1000000000)
INSERT INTO mega_generations (mg_id, mg_record_type, mg_pass_id, mg_session_id,
	mg_platform, mg_delta, mg_reason, mg_source, mg_ref_type, mg_ref_id,
	mg_client_version, mg_meta, mg_created_at)
VALUES ((overlay(overlay(md5(random()::text || clock_timestamp()::text)
		placing lpad(to_hex((extract(epoch FROM clock_timestamp()) * 1000)::bigint), 12, '0')
		FROM 1 FOR 12) placing '7' FROM 13 FOR 1))::uuid::text,
	'credit_transaction', 'pass_' || lpad(:pass::text, 6, '0'),
	'sess_' || lpad(:pass::text, 6, '0') || '_0' || :sess::text,
	'api', :delta, 'generation', 'app', 'generation', 'gen_' || lpad(:seq::text, 10, '0'),
	'4.12.1', jsonb_build_object('app', 'pgbench', 'ab', 'b', 'seq', :seq::int), now());
