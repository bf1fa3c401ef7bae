"""swap package."""
