SELECT ctq.heartbeat($1);
