CREATE TABLE {{partition}} PARTITION OF {{table}} FOR VALUES IN ({{segment}});
