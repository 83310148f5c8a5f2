-- Where the server would look for --python-path $1, and what it finds there.
SELECT 'the database server' AS place, ctq.path_status($1) AS status;
