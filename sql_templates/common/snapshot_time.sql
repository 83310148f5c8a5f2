-- The moment of a preparation an engine does in one session (no exported snapshot).
SELECT NULL::text AS name, now() AS as_of
