"""On top of the pipeline: the benchmark (Table 1, Table 3, Fig. 3) and its profiles (the demo is
one), the estimator, a run's evaluation report and the paper's numbers.

``config`` (what runs, profiles), ``plan`` (the runs of each study), ``benchmark`` (running and
resuming them), ``evaluation`` (a run's test pass), ``statistics`` (spread, paired bootstrap),
``report`` (CSV, markdown, plots), ``paper`` (the paper's numbers), ``estimate`` (projected wall
time), ``folder`` (the output folder's layout).
"""
