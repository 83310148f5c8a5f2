-- A scoring segment's header row (its parameters, $1) in its shard of the stage.
INSERT INTO {{stage}} (dist_key, params) VALUES ({{dist_key}}, $1)
