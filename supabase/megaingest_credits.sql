-- megaingest_credits.sql: what the megaingest role needs for
-- postgres.apply_credits: true, and only then.
--
-- Run it as the owner of the MEGA tables after megaingest_role.sql (which
-- keeps these grants when it runs again). Running it again changes nothing.
--
-- With apply_credits, each newly inserted credit_transaction moves its
-- customer's balance in the same statement: mg_credits = mg_credits + delta,
-- and a top-up also sets mg_last_topup_at and mg_topup_source. That UPDATE
-- reads and writes exactly these three columns of mega_customers. The cost:
-- the role can then set any customer's balance, which is why the default
-- role has no access to it. To take it back when apply_credits is off:
--
--   REVOKE SELECT (mg_credits, mg_last_topup_at, mg_topup_source),
--       UPDATE (mg_credits, mg_last_topup_at, mg_topup_source)
--       ON public.mega_customers FROM megaingest;
BEGIN;

GRANT SELECT (mg_credits, mg_last_topup_at, mg_topup_source),
	UPDATE (mg_credits, mg_last_topup_at, mg_topup_source)
	ON public.mega_customers TO megaingest;

COMMIT;
