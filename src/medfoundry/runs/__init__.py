"""What a training run leaves behind: the checkpoint format (safetensors + JSON, never pickle), the
run folder with its metrics log and plots, and the writer that owns ``latest``/``best``/``final``."""
