"""Prefect flows over the pneumo library (orchestration only; filled by the orchestration work)."""
