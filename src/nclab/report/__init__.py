"""Reports: tables, JSON summaries and figures built from records (never from raw training state)."""
