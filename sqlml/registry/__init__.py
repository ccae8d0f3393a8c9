"""The registry: projects, models, deployments, trials, grants and audit, through an Executor."""
