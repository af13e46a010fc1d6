"""The library halves of ``medeir evaluate`` and ``medeir analyze`` take typed settings: every
flag of each parser is one field of its dataclass (same name, same default), nothing more."""

from __future__ import annotations

import dataclasses

import pytest

from medeir_rag.cli import analyze as analyze_cli
from medeir_rag.cli import evaluate as evaluate_cli
from medeir_rag.cli import settings_from
from medeir_rag.eval.benchmark import EvaluateSettings
from medeir_rag.eval.embedding_space import AnalyzeSettings

PRINTING_ONLY = {"json"}  # flags that change what the CLI prints, not what the library computes


@pytest.mark.parametrize(("parser", "settings"), [(evaluate_cli.build_parser, EvaluateSettings),
                                                  (analyze_cli.build_parser, AnalyzeSettings)])
def test_every_flag_is_one_field_with_the_same_default(parser, settings):
    args = parser().parse_args([])
    flags = set(vars(args)) - PRINTING_ONLY
    assert flags == {f.name for f in dataclasses.fields(settings)}
    from_cli = settings_from(settings, args)
    assert dataclasses.asdict(from_cli) == dataclasses.asdict(settings())


def test_flags_reach_the_settings():
    args = evaluate_cli.build_parser().parse_args(["--alpha", "0.3", "--no-minilm", "--precision", "int8", "a", "b"])
    got = settings_from(EvaluateSettings, args)
    assert (got.alpha, got.no_minilm, got.precision, [str(f) for f in got.folders]) == (0.3, True, "int8", ["a", "b"])
