"""The exploratory PEAR protocol: K chosen on dev items, PEAR against random-head controls on every task.

``config`` holds its options and the models it evaluates; ``design`` the grid of K and the rule that chooses
K; ``stages`` the stages that need no command, their resume records and the report; ``run`` the whole
protocol (the stages that write a discovery run, train into it and evaluate); ``estimate`` its run time.
"""
