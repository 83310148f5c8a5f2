DISTRIBUTED BY ({{column}})
