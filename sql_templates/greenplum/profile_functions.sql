-- A value's moments {count, sum, sum of squares} (float8_accum's state, which avg and var_pop
-- finish): the source check (greenplum/source_profile.sql) derives a column's count, mean and
-- variance from one aggregate over its training rows and one over its validation rows.
DROP AGGREGATE IF EXISTS ctq.moments(float8);
CREATE AGGREGATE ctq.moments(float8) (
    SFUNC = float8_accum, STYPE = float8[], COMBINEFUNC = float8_combine, INITCOND = '{0,0,0}'
);
REVOKE ALL ON FUNCTION ctq.moments(float8) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ctq.moments(float8) TO ctq_user;
