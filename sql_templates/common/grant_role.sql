-- ctq grant: a role joins one of ctq's group roles (both quoted identifiers).
GRANT {{group}} TO {{role}}
