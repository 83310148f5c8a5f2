-- Whether the caller may use ctq.moments (profile_functions.sql; an older install has none).
SELECT CASE WHEN to_regprocedure('ctq.moments(float8)') IS NULL THEN false
            ELSE has_schema_privilege('ctq', 'USAGE') AND has_function_privilege('ctq.moments(float8)', 'EXECUTE')
       END;
