-- The role this session acts as (named in permission errors with their fix).
SELECT current_user
