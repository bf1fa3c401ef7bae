"""Pure swap decisions: eviction policies and the scheduler. No awaits, no clock reads."""
