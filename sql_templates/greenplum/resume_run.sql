-- Reopen a run for a new coordinator session (ctq.resume_run).
SELECT ctq.resume_run($1);
