"""The shipped prefect.yaml names the real flow, with parameters it accepts."""

from __future__ import annotations

import inspect
from pathlib import Path

import yaml

from track.flows.pipeline import pipeline


def test_prefect_yaml_deploys_the_pipeline_flow():
    config = yaml.safe_load((Path(__file__).parents[2] / "prefect.yaml").read_text())
    (spec,) = config["deployments"]
    path, name = spec["entrypoint"].split(":")
    assert (path, name) == ("flows/pipeline.py", "pipeline")
    assert set(spec["parameters"]) <= set(inspect.signature(pipeline.fn).parameters)
    assert spec["schedules"][0]["cron"] == "*/15 * * * *"
    assert pipeline.name == "pipeline"
