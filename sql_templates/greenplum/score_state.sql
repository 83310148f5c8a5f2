-- The parts of model $2 of run $1's newest state, copied from the segments where they lie to every
-- segment's share of the scoring stage {{stage}} (distribution keys $3), segment to segment.
SELECT ctq.stage_state($1, $2, '{{stage}}', $3::int[]);
