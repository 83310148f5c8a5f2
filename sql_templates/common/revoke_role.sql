-- ctq revoke: a role leaves one of ctq's group roles (both quoted identifiers).
REVOKE {{group}} FROM {{role}}
