-- A read-only role for Grafana, instead of the database owner the old stack gave it (docs/compatibility.md,
-- "Old bugs and what paku does instead").
-- Created where the migrating user may create roles (the embedded database; a superuser elsewhere);
-- otherwise a NOTICE says to create it. It cannot log in until the operator gives it a password:
--   ALTER ROLE paku_grafana LOGIN PASSWORD '…';
-- Its rights are given again at every start (src/db/grafana-role.ts), which also keeps the tables that
-- may hold secrets out of its reach.
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'paku_grafana') THEN
    IF (SELECT rolcreaterole OR rolsuper FROM pg_roles WHERE rolname = current_user) THEN
      BEGIN
        CREATE ROLE paku_grafana NOLOGIN;
      EXCEPTION WHEN duplicate_object THEN
        NULL; -- created meanwhile by another database's migration in the same cluster
      END;
    ELSE
      RAISE NOTICE 'role paku_grafana not created: % may not create roles; create it as a superuser (docs/grafana.md)', current_user;
    END IF;
  END IF;
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'paku_grafana') THEN
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO paku_grafana', current_database());
    GRANT USAGE ON SCHEMA public TO paku_grafana;
    GRANT SELECT ON ALL TABLES IN SCHEMA public TO paku_grafana;
    ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO paku_grafana;
    REVOKE ALL ON mqtt_credentials, admin_keys FROM paku_grafana;
  END IF;
END $$;
