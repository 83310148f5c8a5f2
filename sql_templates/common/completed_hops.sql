SELECT model_id, epoch, segment FROM ctq.hops WHERE run_id = $1;
