"""``sqlml.deploy``: choose a model by strategy or version and make it the project's deployed one; and
the deployment a training makes when its gate says so (``after_training``)."""

from __future__ import annotations

from sqlml.registry import access, audit, store
from sqlml.server import privileged
from sqlml.server.spi import spi


def deploy(project, strategy, version):
    caller = spi.execute("SELECT current_user AS u")[0]["u"]
    strategy = "version" if version is not None and strategy in (None, "best_score") else (strategy or "best_score")

    def run(ex):
        access.require(ex, caller, project, "deploy", lock=True)  # the lock serialises concurrent deploys
        chosen = store.choose_deployment(ex, project, strategy, version)
        previous = store.deployed(ex, project)
        reason = {"strategy": strategy, "previous_version": previous["version"] if previous else None}
        row = store.record_deployment(ex, project, chosen["id"], chosen["version"], strategy, reason, caller)
        audit.record(ex, caller, "rollback" if strategy == "rollback" else "deploy", project, chosen["version"],
                     {"strategy": strategy, "previous_version": reason["previous_version"]})
        return chosen, previous, row

    chosen, previous, row = privileged.run(run)
    _warm(project, chosen)
    was = f" (was version {previous['version']})" if previous else ""
    spi.notice(f"project {project}: version {chosen['version']} ({chosen['algorithm']}) deployed by {strategy}{was}")
    return [(project, chosen["version"], chosen["algorithm"], chosen["metric"], chosen["score"], strategy,
             row["deployed_at"])]


def after_training(project, version, model_id, decision, may_deploy, caller, strategy="train") -> dict:
    """Deploy the version a training (or an import: ``strategy``) just registered when its gate decided
    so and ``caller`` may deploy the project; returns the decision as it finally stands (with the reason
    when it was not deployed)."""
    if decision["deploy"] and not may_deploy:
        decision = {"deploy": False, "why": f'role "{caller}" may {strategy} but not deploy this project'}
    if decision["deploy"]:
        def run(ex):
            store.record_deployment(ex, project, model_id, version, strategy, decision, caller)
            audit.record(ex, caller, "deploy", project, version, {"strategy": strategy, "why": decision["why"]})
        privileged.run(run)
    return decision


def _warm(project, chosen) -> None:
    """The deployed model compiled into the scoring cache (``sqlml.server.predicting.warm``), unless a
    forecast (scored by its own code) or already there."""
    from sqlml.data.schema import FeatureSchema
    from sqlml.server import predicting

    blob, sha, schema = privileged.run(lambda ex: store.onnx_blob(ex, chosen["id"]))
    if schema.get("task") != "forecast":
        ref = store.ModelRef(chosen["id"], project, chosen["version"], sha)
        predicting.warm(ref, blob, FeatureSchema.from_json(schema))
