-- The whole quota/all answer beside the normalised columns (EcoFlow adds fields per model and
-- firmware; the columns cover what the dashboards read), and the device family used for mapping.
ALTER TABLE ecoflow_measurements ADD COLUMN IF NOT EXISTS raw JSONB;
ALTER TABLE ecoflow_measurements ADD COLUMN IF NOT EXISTS model TEXT;
