-- A run's search decisions in the order they were made (a resume replays them).
SELECT model_id, rung, seq, epoch, metric, value, decision, reason FROM ctq.decisions WHERE run_id = $1 ORDER BY seq;
