ARRAY['model_states', 'hop_states']
