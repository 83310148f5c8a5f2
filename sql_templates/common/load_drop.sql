-- `ctq load --replace`: in the load's own transaction, so the old table survives a failed load.
DROP TABLE IF EXISTS {{table}};
