"""The checks of scripts/k8s_check.py, one module per kind."""
