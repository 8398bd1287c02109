"""One module per user-facing command."""
