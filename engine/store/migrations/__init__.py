"""Alembic migrations of sopflow's database (run by `sopflow db upgrade` and on first use)."""
