ctq
