-- The staging table of ctq predict (renamed to --out once every row is scored).
CREATE TABLE {{table}} (id {{id_type}}, prediction {{prediction_type}}{{proba_column}})
