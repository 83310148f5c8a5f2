-- Whether ctq is installed in this database at all.
SELECT to_regclass('ctq.meta') IS NOT NULL
