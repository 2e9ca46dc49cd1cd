"""File names of every artifact pear_lens writes, in one place."""
from __future__ import annotations

# discovery run folder
HEAD_SCORES_CSV = "head_scores.csv"
HEATMAP_HTML = "heatmap.html"
HEATMAP_PNG = "heatmap.png"
DISCOVERY_JSON = "discovery.json"
RUN_SCORES_DIR = "scores"
"""The run's scores with every prompt's values (``HeadScores.save``), from which error bars are computed."""
SEEDS_DIR = "seeds"
"""``discover --seeds``: the scores of every further seed, ``seeds/seed_S/`` (``HeadScores.save``)."""
STABILITY_CSV = "stability.csv"
STABILITY_JSON = "stability.json"
STAGES_JSON = "stages.json"
"""Where each stage that ran the model (discover, train, ablate, atlas, eval, ...) ran it: device and dtype."""
MANIFEST_JSON = "manifest.json"
"""The model and weights a run folder belongs to, and each of its tables' and records' SHA-256 and row count
(:mod:`pear_lens.manifest`)."""

# re-weighting artifact (same run folder)
PEAR_JSON = "pear.json"
COEFFICIENTS_SAFETENSORS = "coefficients.safetensors"
TRAINING_CSV = "training_log.csv"
TRAINING_HTML = "training.html"
TRAINING_PNG = "training.png"
# the K sweep of `pear-lens ablate` (same run folder; the files keep the command's name)
K_SWEEP_CSV = "ablation.csv"
K_SWEEP_HTML = "ablation.html"
K_SWEEP_PNG = "ablation.png"

# converted Hugging Face model folder
PEAR_NOTE_JSON = "pear_applied.json"
PEAR_CONFIG_KEY = "pear_lens_folded"
"""Key in a folded model's ``config.json`` recording what was folded (so it is never folded twice)."""

# format version of pear.json and discovery.json
FORMAT_VERSION = 1

# `pear-lens compare` output folder
COMPARE_CSV = "compare.csv"
COMPARE_SUMMARY_CSV = "summary.csv"
RELATIVE_DEPTH_HTML = "relative_depth.html"
CONCENTRATION_HTML = "concentration.html"

# evaluation folder (pear-lens eval) and report folder (pear-lens eval-report)
EVAL_ITEMS_CSV = "items.csv"
EVAL_SUMMARY_CSV = "summary.csv"
EVAL_ITEMS_JSONL = "items.jsonl"
EVAL_JSON = "eval.json"
EVAL_LIKELIHOOD_CSV = "likelihood.csv"
"""Per (condition, item) teacher-forced endpoints, written by ``pear-lens eval --likelihood``."""
EVAL_LIKELIHOOD_SUMMARY_CSV = "likelihood_summary.csv"
REPORT_TABLE_MD = "summary.md"
REPORT_TABLE_HTML = "summary.html"

# head atlas (pear-lens atlas), written into a discovery run folder
HEAD_ATLAS_CSV = "head_atlas.csv"
HEAD_ATLAS_JSON = "head_atlas.json"
HEAD_ATLAS_PROMPTS = "head_atlas_prompts.safetensors"
ATLAS_HEATMAPS_HTML = "atlas_heatmaps.html"
ATLAS_SCATTER_HTML = "atlas_scatter.html"

# `pear-lens demo`'s before/after check, in the run folder
DEMO_CHECK_JSON = "demo_check.json"

# `pear-lens report`: the run's one HTML page (default place: in the run folder)
RUN_REPORT_HTML = "report.html"
