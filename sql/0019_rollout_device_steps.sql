-- When each device reached each step of its rollout action (pending → notified → … → succeeded, or
-- failed/cancelled/skipped), for the console's rollout view. A trigger appends the step whenever the
-- state changes, so every statement in src/ota that moves an action records it without saying so; a
-- retry starts a new run of steps after the old ones.
ALTER TABLE rollout_devices ADD COLUMN IF NOT EXISTS steps JSONB NOT NULL DEFAULT '[]';

-- Actions from before: what their columns tell (taken in, notified, the current state's last change).
UPDATE rollout_devices SET steps =
  jsonb_build_array(jsonb_build_object('state', 'pending', 'at', created_at))
  || CASE WHEN notified_at IS NOT NULL AND state <> 'pending' THEN jsonb_build_array(jsonb_build_object('state', 'notified', 'at', notified_at)) ELSE '[]' END
  || CASE WHEN state NOT IN ('pending', 'notified') THEN jsonb_build_array(jsonb_build_object('state', state, 'at', updated_at)) ELSE '[]' END
WHERE steps = '[]';

CREATE OR REPLACE FUNCTION rollout_devices_steps() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' OR NEW.state IS DISTINCT FROM OLD.state THEN
    NEW.steps := COALESCE(NEW.steps, '[]'::jsonb) || jsonb_build_array(jsonb_build_object('state', NEW.state, 'at', clock_timestamp()));
  END IF;
  RETURN NEW;
END $$;
DROP TRIGGER IF EXISTS rollout_devices_steps ON rollout_devices;
CREATE TRIGGER rollout_devices_steps BEFORE INSERT OR UPDATE OF state ON rollout_devices
  FOR EACH ROW EXECUTE FUNCTION rollout_devices_steps();
