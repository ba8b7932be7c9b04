"""What the services share, and the only thing they share (ARCHITECTURE.md §3)."""
