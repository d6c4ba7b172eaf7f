"""Job specs, the Ray Train trial loop and the Ray Tune search over loss branches (imports lt_core)."""

from jobs.spec import API_VERSION, JobSpec

__all__ = ["API_VERSION", "JobSpec", "run_job"]


def __getattr__(name: str):
    # run_job imports Ray; keep `import jobs` light for the API process, which only validates specs.
    if name == "run_job":
        from jobs.tune import run_job

        return run_job
    raise AttributeError(name)
