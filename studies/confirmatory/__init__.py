"""The confirmatory study: a plan fixed and committed first, fresh items, every planned condition, every output kept.

``plan`` holds the plan and its checks; ``ledger`` the seeds whose test items have been looked at; ``run`` runs
one model's plan; ``report`` recomputes every statistic from the saved outputs; ``document`` writes the report.
"""
