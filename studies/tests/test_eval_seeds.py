"""The test-seed registry: a used seed is refused and the registry stays byte for byte as it was."""
import json

import pytest

from pear_lens.errors import PearLensError
from studies.confirmatory.ledger import SeedUse, claim_test_seed, close_study, used_seeds


def test_claims_are_recorded_in_order(tmp_path):
    reg = tmp_path / "runs" / "test_seeds.json"
    assert used_seeds(reg) == []
    first = claim_test_seed(reg, 0, "issue 9 published table", record="figures/results/run.json")
    second = claim_test_seed(reg, 5, "issue 16 confirmatory run")
    assert [u.seed for u in used_seeds(reg)] == [0, 5]
    assert used_seeds(reg) == [first, second]
    raw = json.loads(reg.read_text())
    assert raw[0] == {"seed": 0, "first_used": first.first_used, "purpose": "issue 9 published table",
                      "record": "figures/results/run.json", "study": "", "closed": ""}
    assert first.first_used.endswith("+00:00") and "T" in first.first_used  # UTC, ISO 8601


def test_a_used_seed_is_refused_and_the_file_is_unchanged(tmp_path):
    reg = tmp_path / "test_seeds.json"
    claim_test_seed(reg, 0, "first look", record="runs/a.json")
    claim_test_seed(reg, 1, "second look")
    before = reg.read_bytes()
    with pytest.raises(PearLensError) as err:
        claim_test_seed(reg, 0, "confirmatory run")
    message = str(err.value)
    assert "\n" not in message and "already used" in message and "'first look'" in message
    assert "runs/a.json" in message and "e.g. 2" in message  # names the fix: the smallest free seed
    assert reg.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["test_seeds.json"]  # no temporary file left behind


def test_bad_seeds_purposes_and_registries(tmp_path):
    reg = tmp_path / "r.json"
    for bad in (-1, True):
        with pytest.raises(PearLensError, match="non-negative integer"):
            claim_test_seed(reg, bad, "x")
    with pytest.raises(PearLensError, match="purpose"):
        claim_test_seed(reg, 3, "  ")
    assert not reg.exists()
    reg.write_text('{"seed": 0}')
    with pytest.raises(PearLensError, match="unreadable"):
        used_seeds(reg)
    with pytest.raises(PearLensError, match="unreadable"):
        claim_test_seed(reg, 4, "x")
    assert reg.read_text() == '{"seed": 0}'
    reg.write_text('[{"seed": "3", "first_used": "then", "purpose": "dev"}]')  # a seed written as text
    with pytest.raises(PearLensError, match="unreadable"):
        used_seeds(reg)


def test_a_registry_written_by_hand_is_read(tmp_path):
    reg = tmp_path / "r.json"
    reg.write_text(json.dumps([{"seed": 7, "first_used": "2026-11-01T10:00:00+00:00", "purpose": "dev"}]))
    assert used_seeds(reg) == [SeedUse(7, "2026-11-01T10:00:00+00:00", "dev", "")]
    with pytest.raises(PearLensError, match="e.g. 0"):
        claim_test_seed(reg, 7, "again")


def test_the_models_of_one_study_share_a_seed_and_no_one_else_does(tmp_path):
    reg = tmp_path / "seeds.json"
    claim_test_seed(reg, 9, "confirmatory run of model A", study="study 1")
    claim_test_seed(reg, 9, "confirmatory run of model B", study="study 1")
    assert [(u.seed, u.study) for u in used_seeds(reg)] == [(9, "study 1"), (9, "study 1")]
    before = reg.read_bytes()
    for study in ("study 2", ""):
        with pytest.raises(PearLensError, match="test seed 9 was already used"):
            claim_test_seed(reg, 9, "a later look", study=study)
    assert reg.read_bytes() == before


def test_a_study_is_closed_once_it_draws_items_and_a_plan_claims_once(tmp_path):
    reg = tmp_path / "seeds.json"
    a = claim_test_seed(reg, 9, "model A", record="out/a/plan.json", study="s")
    assert claim_test_seed(reg, 9, "model A again", record="out/a/plan.json", study="s") == a  # an interrupted fix
    assert len(used_seeds(reg)) == 1
    claim_test_seed(reg, 9, "model B", record="out/b/plan.json", study="s")  # open: the study's next model joins
    close_study(reg, "s")
    closed = [u.closed for u in used_seeds(reg)]
    assert len(set(closed)) == 1 and closed[0]
    before = reg.read_bytes()
    close_study(reg, "s")  # once: the first draw's time stays
    assert reg.read_bytes() == before
    for record in ("out/c/plan.json", "out/a/plan.json"):  # nobody joins, nobody re-plans, once items exist
        with pytest.raises(PearLensError, match="study 's' drew its first items on"):
            claim_test_seed(reg, 9, "model C", record=record, study="s")
    assert reg.read_bytes() == before
    with pytest.raises(PearLensError, match="claimed no seed"):
        close_study(reg, "another study")
