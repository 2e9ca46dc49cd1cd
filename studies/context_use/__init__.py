"""The context-use study (issue 33): likelihood endpoints, the heads that matter on the real tasks, untrained
controls and two peer methods, under a plan committed before its items."""
