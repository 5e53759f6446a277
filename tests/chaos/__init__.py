"""Chaos: ``kill -9`` of treadle processes and PostgreSQL crashes under a mixed workload."""
