-- Keras and its versions as the server's own Python sees them (ctq doctor).
SELECT ctq.probe()
