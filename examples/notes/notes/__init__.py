"""notes: a small twelve-factor web app whose config is all in its environment."""
