"""CITATION.cff is valid CFF 1.2.0 (the schema cffconvert ships), so GitHub offers "Cite this
repository", and it names the three papers."""

from __future__ import annotations

import json
from importlib import resources

import jsonschema
import yaml

from conftest import ROOT


def test_citation_file_validates_against_the_cff_schema():
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    schema = json.loads(resources.files("cffconvert").joinpath("schemas/1.2.0/schema.json")
                        .read_text())
    jsonschema.validate(citation, schema)
    titles = {r["title"] for r in citation["references"]}
    assert {"Sanity Checks for Saliency Maps", "Expected Grad-CAM: Towards gradient faithfulness",
            "ParchGrad: Controlled Internal Gradients for Reliable Saliency Map"} == titles
