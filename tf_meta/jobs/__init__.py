"""Command-line jobs installed as console scripts."""
