-- pgbench-session.sql: reference (c), one `session` event per autocommit
-- INSERT (weight 15). See pgbench-generation.sql.
\set pass random(0, 999)
\set sess random(0, 7)
\set seq random(1, 1000000000)
INSERT INTO mega_generations (mg_id, mg_record_type, mg_pass_id, mg_session_id,
	mg_platform, mg_status, mg_client_version, mg_os, mg_browser, mg_device,
	mg_meta, mg_created_at)
VALUES ((overlay(overlay(md5(random()::text || clock_timestamp()::text)
		placing lpad(to_hex((extract(epoch FROM clock_timestamp()) * 1000)::bigint), 12, '0')
		FROM 1 FOR 12) placing '7' FROM 13 FOR 1))::uuid::text,
	'session', 'pass_' || lpad(:pass::text, 6, '0'),
	'sess_' || lpad(:pass::text, 6, '0') || '_0' || :sess::text,
	'ios', 'active', '4.12.0', 'iOS 17.5', 'Safari 17.5', 'mobile',
	jsonb_build_object('app', 'pgbench', 'ab', 'b', 'seq', :seq::int), now());
