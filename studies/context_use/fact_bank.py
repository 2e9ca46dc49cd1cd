"""A fact bank nobody here has asked before: which country a state, province, region, prefecture or canton is in.

The counterfactual and closed-book items of the earlier studies all drew from one bank of 393 facts (capitals,
authors, languages, ...), so most "fresh" test items repeated facts already asked. This bank is built from a
maintained data package, ``pycountry`` (the ISO 3166-2 subdivision list), and shares no question, subject or
answer with the earlier bank: every subject that appears in an earlier fact (as subject, answer or inside a
question) or in an earlier study's counterfactual or closed-book item is left out, as are subjects that name a
country, subjects that name more than one subdivision (ambiguous), and countries whose names hold a comma.

Each fact has two phrasings: the **test** question (used by the study's items) and a **probe** question used
only to decide which facts the model knows (:data:`PROBE_QUESTIONS`), so selecting the known facts does not
select on the very question the closed-book endpoint asks.

Run ``python -m studies.context_use.fact_bank`` to write ``studies/context_use/data/subdivision_facts.json``
(the same pycountry version gives the same bytes); ``--check`` compares instead of writing.
"""
from __future__ import annotations

import argparse
import gzip
import json
import re
import sys
from pathlib import Path
from typing import Any, Iterable

from pear_lens.evaluation.tasks.facts import load_facts
from pear_lens.io import atomic_write_text

HERE = Path(__file__).resolve().parent
OUT = HERE / "data" / "subdivision_facts.json"
ROOT = HERE.parents[1]
PYCOUNTRY_VERSION = "26.2.16"

KINDS = {  # ISO 3166-2 subdivision type -> (category, the word in the question)
    "State": ("state", "state"),
    "Land": ("state", "state"),
    "Province": ("province", "province"),
    "Region": ("region", "region"),
    "Prefecture": ("prefecture", "prefecture"),
    "Canton": ("canton", "canton"),
}
QUESTIONS = {c: f"In which country is the {w} of {{subject}}?" for c, w in KINDS.values()}
PROBE_QUESTIONS = {c: f"{{subject}} is a {w} of which country?" for c, w in KINDS.values()}
STATEMENTS = {c: f"{{subject}} is a {w} of {{answer}}." for c, w in KINDS.values()}


def earlier_item_files(root: Path = ROOT) -> list[Path]:
    """Every committed counterfactual or closed-book item file of an earlier study."""
    return sorted([*root.glob("figures/results/confirm/*/items/counterfactual.jsonl.gz"),
                   *root.glob("figures/results/confirm/*/items/closed-book.jsonl.gz"),
                   *root.glob("tests/data/counterfactual_handmade.jsonl")])


def _read_items(path: Path) -> list[dict[str, Any]]:
    """The items of a JSONL file, or of a study's gzip item record (one JSON object with ``items``)."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    records = [json.loads(line) for line in raw.decode("utf-8").splitlines() if line.strip()]
    return [it for r in records for it in (r["items"] if "items" in r else [r])]


def earlier_texts(root: Path = ROOT) -> list[str]:
    """Every text of an earlier fact or item (subjects, answers, questions, context sentences), lower-cased."""
    texts = []
    for f in load_facts():
        texts += [f.subject, f.question, *f.answers, *f.alternatives]
    for path in earlier_item_files(root):
        for r in _read_items(path):
            texts += [r["question"], *r["answers"], *r.get("parametric_answers", []), *r.get("context", [])]
    return [t.lower() for t in texts]


def _mentioned(name: str, texts: Iterable[str]) -> bool:
    pattern = re.compile(rf"(?<!\w){re.escape(name.lower())}(?!\w)")
    return any(pattern.search(t) for t in texts)


def _country_answers(country: Any) -> tuple[str, ...] | None:
    names = [getattr(country, "common_name", None), country.name, getattr(country, "official_name", None)]
    out: list[str] = []
    for n in names:
        if n and "," not in n and "(" not in n and n not in out:
            out.append(n)
    return tuple(out) or None


def build(root: Path = ROOT) -> dict[str, Any]:
    import pycountry

    version = getattr(pycountry, "__version__", None)
    if version is None:
        from importlib.metadata import version as dist_version
        version = dist_version("pycountry")
    if version != PYCOUNTRY_VERSION:
        raise SystemExit(f"this bank is built from pycountry=={PYCOUNTRY_VERSION}, found {version}; "
                         f"pip install pycountry=={PYCOUNTRY_VERSION}")
    texts = earlier_texts(root)
    country_names = {n.lower() for c in pycountry.countries
                     for n in (c.name, getattr(c, "common_name", None), getattr(c, "official_name", None)) if n}
    subs = [s for s in pycountry.subdivisions if s.type in KINDS and s.parent_code is None]
    count: dict[str, int] = {}
    for s in pycountry.subdivisions:
        count[s.name.lower()] = count.get(s.name.lower(), 0) + 1
    left_out = {"earlier fact or item": 0, "names a country": 0, "ambiguous name": 0, "country name": 0,
                "odd characters": 0}
    by_category: dict[str, list[dict[str, Any]]] = {c: [] for c, _ in KINDS.values()}
    for s in sorted(subs, key=lambda s: s.code):
        country = pycountry.countries.get(alpha_2=s.country_code)
        answers = _country_answers(country) if country else None
        name = s.name
        if answers is None:
            left_out["country name"] += 1
        elif re.search(r"[()\[\]/,;0-9]", name) or len(name) > 40:
            left_out["odd characters"] += 1
        elif name.lower() in country_names:
            left_out["names a country"] += 1
        elif count[name.lower()] > 1:
            left_out["ambiguous name"] += 1
        elif _mentioned(name, texts):
            left_out["earlier fact or item"] += 1
        else:
            by_category[KINDS[s.type][0]].append({"subject": name, "answers": list(answers), "iso_3166_2": s.code})
    categories = [{"category": c, "question": QUESTIONS[c], "probe_question": PROBE_QUESTIONS[c],
                   "statement": STATEMENTS[c], "facts": facts} for c, facts in by_category.items() if facts]
    return {"about": {
        "source": f"pycountry=={PYCOUNTRY_VERSION} (ISO 3166-2 subdivisions, top level only; types "
                  f"{', '.join(KINDS)})",
        "built_by": "python -m studies.context_use.fact_bank",
        "disjoint_from": ["pear_lens/evaluation/tasks/data/facts.json",
                          *[str(p.relative_to(root)) for p in earlier_item_files(root)]],
        "left_out": left_out,
        "n_facts": sum(len(c["facts"]) for c in categories)}, "categories": categories}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare with the committed bank instead of writing")
    args = ap.parse_args(argv)
    text = json.dumps(build(), ensure_ascii=False, indent=1) + "\n"
    if args.check:
        same = OUT.is_file() and OUT.read_text(encoding="utf-8") == text
        print(f"{OUT.relative_to(ROOT)} is {'current' if same else 'NOT current: rerun without --check'}")
        return 0 if same else 1
    atomic_write_text(OUT, text)
    print(f"wrote {OUT.relative_to(ROOT)}: {json.loads(text)['about']['n_facts']} facts")
    return 0


if __name__ == "__main__":
    sys.exit(main())
