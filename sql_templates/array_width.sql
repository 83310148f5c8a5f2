-- Width of an array feature column (its longest row; ragged rows are refused when packing).
SELECT coalesce(max(cardinality({{column}})), 0) FROM {{source}};
