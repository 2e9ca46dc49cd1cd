"""RAG evaluation of baseline and re-weighted models, with honest controls.

Tasks (``kv``, ``mdqa``, ``facts``) make or load items; ``prompts`` renders them
in the plain or chat style; ``generate`` decodes greedily in batches with a
separate Hugging Face model; ``scoring`` and ``stats`` turn outputs into
accuracies with bootstrap intervals and paired McNemar tests; ``conditions``
names the models compared (baseline, PEAR, random-K, uniform) and ``runner``
puts it together behind ``pear-lens eval``.
"""
