-- (with meta_insert.sql, under the install lock) set ctq.meta's key $1.
DELETE FROM ctq.meta WHERE key = $1
