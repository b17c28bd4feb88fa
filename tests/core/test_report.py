import json

import jsonschema
import pytest

from effdl.core import ModelSummary, Report, report_schema


def _summary(**kw):
    base = {
        "params": 100,
        "macs": 1000,
        "size_bytes": 500,
        "accuracy": 0.9,
        "latency_ms": 1.5,
        "batch_size": 1,
        "threads": 2,
    }
    return ModelSummary(**{**base, **kw})


def test_report_validates_against_schema(tmp_path):
    report = Report(
        command="prune",
        model="cnn1d",
        dataset="mnist1d",
        before=_summary(),
        after=_summary(params=50, macs=250, latency_ms=0.5),
        config={"ratio": 0.5},
    )
    path = report.write(tmp_path)
    doc = json.loads(path.read_text())
    jsonschema.validate(doc, report_schema())
    assert doc["schema"] == "effdl.report" and doc["after"]["macs"] == 250


def test_schema_rejects_missing_required_fields():
    doc = Report(command="train", summary=_summary()).to_dict()
    del doc["summary"]["macs"]
    with pytest.raises(jsonschema.ValidationError, match="'macs' is a required property"):
        jsonschema.validate(doc, report_schema())


def test_before_after_table_shows_ratios():
    report = Report(command="prune", before=_summary(), after=_summary(params=50, macs=250))
    table = report.to_table()
    assert "4.00x" in table and "2.00x" in table
    assert ModelSummary.from_dict({**_summary().to_dict(), "future_field": 1}) == _summary()
