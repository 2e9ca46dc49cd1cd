"""Our experiments with pear_lens: users of the library, kept beside it and never installed with it.

``exploratory`` is the protocol that chose K on dev items and compared PEAR with its controls
(``python -m studies.evaluate_all``); ``confirmatory`` is the study run under plans fixed before its items
existed (``python -m studies.confirm``); ``reading`` turns both records into the README's and the docs' words
(``python -m studies.update_readme``). ``make_figures``, ``make_atlas``, ``stability`` and ``calibrate_eval`` write
the other published figures and tables. Everything here writes into ``figures/``, ``docs/`` and the README;
:mod:`pear_lens` never imports it (an import-linter contract).
"""
