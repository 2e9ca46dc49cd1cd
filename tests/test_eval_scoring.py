"""Answer normalisation and best_subspan_em, as in Lost in the Middle / SQuAD."""
import pytest

from pear_lens.evaluation.tasks.scoring import best_subspan_em, normalize_answer


@pytest.mark.parametrize("text, expected", [
    ("The Eiffel Tower", "eiffel tower"),
    ("  Paris,\n France! ", "paris france"),
    ("an apple a day", "apple day"),
    ("Port-au-Prince", "portauprince"),
    ('"623"', "623"),
    ("Theatre", "theatre"),  # 'the' inside a word is not an article
])
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


@pytest.mark.parametrize("output, answers, expected", [
    ("The capital is Paris.", ["Paris"], True),
    ('623"', ["623"], True),
    ("It was written by Dickens", ["Charles Dickens", "Dickens"], True),
    ("It was written by Charles", ["Charles Dickens"], False),
    ("", ["Paris"], False),
    ("Paris", ["", "  "], False),  # an empty gold answer never matches everything
    ("the answer is LYON", ["Lyon"], True),
])
def test_best_subspan_em(output, answers, expected):
    assert best_subspan_em(output, answers) is expected
