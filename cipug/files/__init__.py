"""Files cipug owns: atomic writes, the run lock, history."""
