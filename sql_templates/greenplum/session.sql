-- A segment connection's settings: keep the segment processes (and the data and models cached
-- in their PL/Python GD) while the connection waits between hops.
SET gp_vmem_idle_resource_timeout = 0;
