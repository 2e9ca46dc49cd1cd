"""The ``pear-lens`` commands: each module reads a config, calls the library and writes a run folder.

Nothing in the library (``pear_lens.*`` outside this package) imports from here.
"""
