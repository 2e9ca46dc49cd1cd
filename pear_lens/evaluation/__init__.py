"""RAG evaluation of baseline and re-weighted models, with honest controls.

``tasks`` makes or reads items (key-value retrieval, multi-document QA, counterfactual and closed-book facts)
and renders them as prompts; ``splits`` keeps dev and test items apart; ``generate`` decodes greedily in batches
with a separate Hugging Face model; ``conditions`` names the models compared (baseline, PEAR, random-K, all heads
scaled); ``runner`` evaluates them on identical items; ``outcomes`` sorts each answer into a kind; ``stats`` and
``verdict`` turn outputs into accuracies with bootstrap intervals, exact McNemar tests and the words a table may
use. ``pear-lens eval`` and ``pear-lens eval-report`` are :mod:`pear_lens.commands.eval` and
:mod:`pear_lens.commands.eval_report`.
"""
