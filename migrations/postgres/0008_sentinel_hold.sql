-- A key the Sentinel suspended stays suspended until an operator restores it: billing's own
-- status changes (a renewal, an unpause) do not lift it. NULL: no hold.
ALTER TABLE api_keys ADD COLUMN held_since TIMESTAMPTZ;
