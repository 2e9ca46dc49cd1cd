"""RAG evaluation of baseline and re-weighted models, with honest controls.

Tasks (``kv``, ``mdqa``, ``facts``; one interface in ``tasks``) make or load
items; ``prompts`` renders them in the plain or chat style chosen on the
baseline (``calibration``); ``generate`` decodes greedily in batches with a
separate Hugging Face model; ``scoring`` and ``stats`` turn outputs into
accuracies with bootstrap intervals and exact McNemar tests; ``conditions``
names the models compared (baseline, PEAR, random-K, uniform); ``runner``
evaluates them on identical items (``pear-lens eval``, in ``pear_lens.commands.eval``,
calls it) and ``report`` is ``pear-lens eval-report``.
"""
