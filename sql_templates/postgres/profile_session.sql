-- Checking the source: no JIT (compiling its wide aggregate list cost more than the scan).
SET jit = off;
