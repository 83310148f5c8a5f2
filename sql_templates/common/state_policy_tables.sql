ARRAY['model_states']
