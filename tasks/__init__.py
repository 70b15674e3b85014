"""Thin Prefect `@task` wrappers (retries for transient AWS errors, caching, logging) over `mltp/`."""
