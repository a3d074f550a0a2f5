"""Stand-ins for a user's own code, used by the README's worked example."""
