-- Whether this session's role is a superuser (installs, upgrades, drops packs).
SELECT rolsuper FROM pg_roles WHERE rolname = current_user
