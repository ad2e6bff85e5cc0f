-- pgbench-generation.sql: reference (c), one `generation` event written the
-- way an app backend without megaingestd would: one autocommit INSERT per
-- event. The row matches megaingest-bench's generation events (~200-char
-- prompt, small meta, one of 1,000 pass ids, a UUIDv7-shaped mg_id made from
-- the clock so the primary key grows in time order as the daemon's ids do).
-- Weighted 70 by tests/bench/run, next to the session, feedback and credit
-- scripts (15, 10, 5). pgbench substitutes :variables as parameters.
\set pass random(0, 999)
\set sess random(0, 7)
\set lat random(800, 20799)
\set outtok random(1000, 3999)
\set seq random(1, 1000000000)
INSERT INTO mega_generations (mg_id, mg_record_type, mg_pass_id, mg_session_id,
	mg_generation_id, mg_platform, mg_type, mg_prompt, mg_output_url, mg_provider,
	mg_model, mg_latency_ms, mg_input_chars, mg_input_tokens, mg_output_tokens,
	mg_content_type, mg_status, mg_client_version, mg_os, mg_browser, mg_device,
	mg_meta, mg_created_at)
VALUES ((overlay(overlay(md5(random()::text || clock_timestamp()::text)
		placing lpad(to_hex((extract(epoch FROM clock_timestamp()) * 1000)::bigint), 12, '0')
		FROM 1 FOR 12) placing '7' FROM 13 FOR 1))::uuid::text,
	'generation', 'pass_' || lpad(:pass::text, 6, '0'),
	'sess_' || lpad(:pass::text, 6, '0') || '_0' || :sess::text,
	'gen_' || lpad(:seq::text, 10, '0'), 'web', 'image',
	'cinematic portrait of a weathered lighthouse keeper standing on wet basalt rocks at dusk, volumetric fog, rim light, shot on 35mm film grain, muted teal and orange palette, highly detailed texture, soft bokeh',
	'https://cdn.mega.example/o/gen_' || lpad(:seq::text, 10, '0') || '.png',
	'stability', 'flux-pro-1.1', :lat, 203, 50, :outtok, 'image/png', 'succeeded',
	'4.12.1', 'macOS 14.5', 'Chrome 126', 'desktop',
	jsonb_build_object('app', 'pgbench', 'ab', 'a', 'seq', :seq::int), now());
