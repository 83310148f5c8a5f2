-- (a pack's x, y and k are float32 and int bytes, which do not compress: no TOAST compression attempts)
ALTER TABLE {{table}} ALTER COLUMN x SET STORAGE EXTERNAL, ALTER COLUMN y SET STORAGE EXTERNAL,
    ALTER COLUMN k SET STORAGE EXTERNAL;
