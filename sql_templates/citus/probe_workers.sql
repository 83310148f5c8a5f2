-- ctq.probe() on every worker (PL/Python, keras, jax there).
SELECT nodename, nodeport, success, result FROM run_command_on_workers('SELECT ctq.probe()') ORDER BY nodeport
