-- Approval activates. Keep in step with ../sqlite/0005_activation.sql.
--
-- Approval makes a request active at once, or, when the operator gives an effective date, at
-- that date: the request waits in `approved` with `activates_at` set until then (see
-- `Store::activate_due`). NULL: no pending activation.
ALTER TABLE enablement_requests ADD COLUMN activates_at BIGINT;
