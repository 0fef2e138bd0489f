"""Claims: validation before any work (each error names its claim), expansion, and every verdict rule
on hand-made cell files (reproduced, contradicted, inconclusive, beyond-the-margin, untested, not run,
constants and relative effects)."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest
import yaml

from reproduce.atomic import atomic_write_json
from reproduce.errors import ConfigError
from reproduce.runtime.claims import TableCells, check_claims, evaluate, load_claims, load_specs, verdict_of
from reproduce.runtime.intervals import Interval
from reproduce.runtime.table_assembly import cell_result_path

TOY = {
    "name": "toyclaims", "title": "Toy", "protocol": "Hand-made cells.", "seeds": [0],
    "models": {"m": {"train": ["experiment=quickstart_cnn"]}},
    "metrics": {"cost": {"name": "cost"}},
    "rows": [{"label": lab, "model": "m", "attributor": "saliency"} for lab in ("A", "B", "C", "D", "E")],
    "columns": [{"label": "Time (ms)", "key": "cost/seconds_per_image", "scale": 1000, "digits": 1},
                {"label": "Passes", "key": "cost/forward_per_image", "digits": 0}],
}


def cost_cell(seconds, forwards):
    seconds, forwards = np.asarray(seconds, float), np.asarray(forwards, float)
    n = seconds.size
    totals = np.stack([seconds, forwards, np.zeros(n)], 1)
    return {"scalars": {"cost/seconds_per_image": float(seconds.mean()), "cost/forward_per_image": float(forwards.mean())},
            "directions": {"cost/seconds_per_image": "lower", "cost/forward_per_image": "lower"},
            "metrics": {"cost": {"metric": "cost"}}, "evaluated_images": n,
            "per_image": {"cost": {"indices": list(range(n)), "states": {"totals": totals.tolist(), "count": [1.0] * n},
                                   "options": {"name": "cost"}, "statistic": "metric"}}}


def write_setup(tmp_path, claims: list[dict], tables: dict | None = None) -> tuple[str, str, str]:
    """(root, claims dir, tables dir) with the toy table's cells: A fast, B clearly slower, C tied with A,
    D with only 8 images, E never run."""
    root, claims_dir, tables_dir = (str(tmp_path / d) for d in ("root", "claims", "tables"))
    os.makedirs(claims_dir)
    os.makedirs(tables_dir)
    for name, raw in (tables or {"toyclaims": TOY}).items():
        with open(os.path.join(tables_dir, f"{name}.yaml"), "w") as f:
            yaml.safe_dump(raw, f)
    with open(os.path.join(claims_dir, "toy.yaml"), "w") as f:
        yaml.safe_dump({"paper": "Toy paper", "claims": claims}, f)
    from reproduce.runtime.table_spec import TableSpec

    spec = TableSpec.from_config(TOY)
    rng = np.random.default_rng(0)
    base = rng.uniform(0.01, 0.05, size=40)
    for key, cell in {"a-s0": cost_cell(base, np.full(40, 10.0)),
                      "b-s0": cost_cell(base + 0.004 + rng.normal(0, 5e-4, 40), np.full(40, 10.0)),
                      "c-s0": cost_cell(base + rng.normal(0, 5e-4, 40), np.full(40, 12.0)),
                      "d-s0": cost_cell(base[:8], np.full(8, 12.0))}.items():
        atomic_write_json(cell_result_path(root, spec, key), cell)
    return root, claims_dir, tables_dir


def claim(id, row, against, column="Time (ms)", direction="lower", **extra):
    return {"id": id, "statement": f"{row} vs {against}", "table": "toyclaims", "row": row,
            "against": against if isinstance(against, dict) else {"row": against}, "column": column,
            "direction": direction, **extra}


def verdicts(tmp_path, claims):
    root, claims_dir, tables_dir = write_setup(tmp_path, claims)
    loaded = load_claims(None, claims_dir, __import__("reproduce.runtime.claims", fromlist=["x"]).table_specs(tables_dir))
    cells = TableCells(root, load_specs({c.table for c in loaded}, tables_dir))
    return {c.id: evaluate(c, cells) for c in loaded}


def test_each_verdict_rule_on_hand_made_cells(tmp_path):
    got = verdicts(tmp_path, [
        claim("faster", "A", "B"),                                   # A is 4 ms faster per image
        claim("slower", "B", "A"),                                   # claims B faster: the other way
        claim("tie", "A", "C"),                                      # no difference
        claim("not-by-that-much", "A", "B", margin=-10),             # faster, but not by 10 ms
        claim("by-a-little", "A", "B", margin=-2),
        claim("few-images", "D", "A"),
        claim("never-run", "E", "A"),
        claim("constant", "A", {"constant": 20}, column="Passes", margin=-9.5),  # exactly 10 passes
        claim("relative", "B", "A", direction="higher", effect="relative", margin=5),
        claim("twice", "B", {"row": "A", "factor": 2}),               # B < 2 x A
    ])
    assert {k: v.verdict for k, v in got.items()} == {
        "faster": "reproduced", "slower": "contradicted", "tie": "inconclusive", "not-by-that-much": "inconclusive",
        "by-a-little": "reproduced", "few-images": "untested", "never-run": "not run", "constant": "reproduced",
        "relative": "reproduced", "twice": "reproduced"}
    assert got["faster"].effect.estimate == pytest.approx(-4.0, abs=0.3)  # in the column's units (ms)
    assert got["faster"].effect.high < 0 and got["faster"].ours.n_images == 40
    assert "fewer than 10" in got["few-images"].why and "no cells of row 'E'" in got["never-run"].why
    assert got["constant"].effect.estimate == pytest.approx(-10.0) and got["constant"].effect.low == pytest.approx(-10.0)
    assert 5 < got["relative"].effect.estimate < 30  # B's time / A's time - 1, in %


def test_verdict_boundaries():
    def iv(lo, hi):
        return Interval((lo + hi) / 2, lo, hi, 20, 1)
    assert verdict_of(iv(0.1, 2), "higher", 0) == "reproduced"
    assert verdict_of(iv(0.1, 2), "higher", 0.5) == "inconclusive"
    assert verdict_of(iv(-2, -0.1), "higher", 0) == "contradicted"
    assert verdict_of(iv(-1, 1), "lower", 0) == "inconclusive"
    assert verdict_of(iv(0.2, 1), "lower", 0) == "contradicted"
    assert verdict_of(Interval(1.0, n_images=5), "lower", 0) == "untested"


@pytest.mark.parametrize("change, message", [
    ({"table": "nope"}, r"claim 'bad' \(toy.yaml\): table 'nope' does not exist"),
    ({"row": "Z"}, r"claim 'bad' \(toy.yaml\): table 'toyclaims' has no row 'Z'"),
    ({"against": {"row": "Y"}}, r"claim 'bad' \(toy.yaml\): table 'toyclaims' has no row 'Y'"),
    ({"column": "Tme (ms)"}, r"claim 'bad' \(toy.yaml\): table 'toyclaims' has no column 'Tme \(ms\)'. Did you mean Time"),
    ({"direction": "better"}, r"claim 'bad' \(toy.yaml\): direction must be one of \['higher', 'lower'\]"),
    ({"margin": 3}, r"claim 'bad' \(toy.yaml\): margin 3 has the wrong sign for direction 'lower'"),
    ({"direction": "higher", "margin": -1}, "margin -1 has the wrong sign for direction 'higher'"),
    ({"effect": "ratio"}, "effect must be one of"),
    ({"against": {"row": "B", "constant": 1}}, "`against` must be"),
    ({"variant_of": "ghost", "reason": "x"}, "variant_of 'ghost' is not a claim"),
    ({"variant_of": "ghost"}, "must say why in `reason`"),
    ({"marging": 1}, "unknown field 'marging'. Did you mean margin"),
])
def test_validation_names_the_claim_and_the_problem(tmp_path, change, message):
    _, claims_dir, tables_dir = write_setup(tmp_path, [{**claim("bad", "A", "B"), **change}])
    from reproduce.runtime.claims import table_specs

    with pytest.raises(ConfigError) as err:
        load_claims(None, claims_dir, table_specs(tables_dir))
    assert re.search(message, str(err.value)), str(err.value)


def test_each_and_star_expand_into_one_claim_per_row(tmp_path):
    _, claims_dir, tables_dir = write_setup(tmp_path, [
        {**claim("vs", "*", "A"), "exclude": ["E"]},
        {**claim("each", "A", "B"), "each": [{"against": {"row": "C"}}, {"against": {"row": "D"}, "id": "each-d"}]},
        {**claim("each-variant", "A", "B"), "variant_of": "each", "reason": "why not", "each": [{"against": {"row": "C"}}]},
    ])
    from reproduce.runtime.claims import table_specs

    ids = [c.id for c in load_claims(None, claims_dir, table_specs(tables_dir))]
    assert ids == ["vs/b", "vs/c", "vs/d", "each/c", "each-d", "each-variant/c"]




def test_shipped_claims_are_all_valid():
    """Every claim of conf/claims names a table, rows and a column that exist (a typo fails here)."""
    claims, problems = check_claims()
    assert problems == [], problems
    files = {c.file for c in claims}
    assert {"moxi.yaml", "comet.yaml", "superpixel.yaml", "smdl.yaml", "controls.yaml"} <= files
    assert any(c.table == "moxi_photos" for c in claims) and any(c.constant == 4096 for c in claims)


def test_shipped_pass_count_claims_match_a_full_moxi_ordering():
    """A full MoXI ordering of n players costs n(n+1)/2 - 1 passes (tests/test_moxi.py): the margin
    admits exactly that count and nothing above it (the verdict needs passes - n^2 < margin)."""
    claims, _ = check_claims(["moxi"])
    passes = [c for c in claims if c.column == "Forward passes/img"]
    assert len(passes) == 2 and {c.table for c in passes} == {"moxi"}  # moxi_photos runs budgeted searches
    for c in passes:
        n = 64
        full = n * (n + 1) // 2 - 1
        assert c.constant == n * n and full - c.constant < c.margin <= full + 1 - c.constant, c.id
        assert f"= {full} forward passes" in c.statement


def test_every_control_claim_compares_with_the_random_control_row():
    claims, _ = check_claims(["controls"])
    tables = {c.table for c in claims if c.id.startswith("controls-")}
    assert tables == {"table3", "moxi", "smdl"}
    assert all(c.against_row == "Random (control)" for c in claims if c.id.startswith("controls-"))
    assert not any(c.row.endswith("(control)") for c in claims)  # the other controls are not methods
