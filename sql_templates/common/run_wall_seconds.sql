/* run r's wall time in seconds, as shown (lk.alive: a live coordinator holds its lock): to its end;
   for a run still driven, to now; for one whose coordinator is gone, to the last sign of it, its
   heartbeat or its last recorded hop (a run killed before its first heartbeat showed 0 s after
   dozens of hops: a user trial) */
extract(epoch FROM coalesce(r.finished_at,
                            CASE WHEN lk.alive THEN now()
                                 ELSE greatest(r.heartbeat_at,
                                               (SELECT max(h.finished_at) FROM ctq.hops h WHERE h.run_id = r.run_id))
                            END,
                            now()) - r.started_at)::float8
