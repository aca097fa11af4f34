"""Shipped configuration files (YAML); see configs/README.md."""
