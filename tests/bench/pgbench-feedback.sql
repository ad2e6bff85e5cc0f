-- pgbench-feedback.sql: reference (c), one `feedback` event per autocommit
-- INSERT (weight 10). See pgbench-generation.sql.
\set pass random(0, 999)
\set sess random(0, 7)
\set seq random(1, 1000000000)
INSERT INTO mega_generations (mg_id, mg_record_type, mg_pass_id, mg_session_id,
	mg_generation_id, mg_platform, mg_result_type, mg_comment, mg_image_url,
	mg_client_version, mg_meta, mg_created_at)
VALUES ((overlay(overlay(md5(random()::text || clock_timestamp()::text)
		placing lpad(to_hex((extract(epoch FROM clock_timestamp()) * 1000)::bigint), 12, '0')
		FROM 1 FOR 12) placing '7' FROM 13 FOR 1))::uuid::text,
	'feedback', 'pass_' || lpad(:pass::text, 6, '0'),
	'sess_' || lpad(:pass::text, 6, '0') || '_0' || :sess::text,
	'gen_' || lpad(:seq::text, 10, '0'), 'web', 'thumbs_up',
	'love the lighting, exactly what I asked for',
	'https://cdn.mega.example/o/gen_' || lpad(:seq::text, 10, '0') || '.png', '4.12.1',
	jsonb_build_object('app', 'pgbench', 'ab', 'a', 'seq', :seq::int), now());
