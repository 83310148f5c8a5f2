-- One server module (ctq/<name>.py): $1 name, $2 the sha of all the modules, $3 its source.
INSERT INTO ctq.server_code (name, sha, source) VALUES ($1, $2, $3)
