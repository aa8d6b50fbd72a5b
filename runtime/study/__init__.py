"""``rtsegc study FILE``: a grid of networks trained, evaluated, benchmarked and compared from one file.

The pieces, in the order a study runs them:

- :mod:`.spec`: the study file (``kind: study``): schema, located errors, expansion into trials;
- :mod:`.plan`: the analytic audit of every trial and the budget filter, before anything trains;
- :mod:`.trial`: one trial, as ``rtsegc train`` would run it, then evaluation of ``best.pt`` and a benchmark;
- :mod:`.executors`: where trials run: this process, N local processes, or Ray tasks;
- :mod:`.search`: Optuna sampling of spec parameters under the budget, with early stopping;
- :mod:`.report`: ``study.md``, ``study.csv``, ``study.json`` and the plots;
- :mod:`.cli`: the command line.

Only :mod:`.spec` and :mod:`.plan` are imported by ``rtsegc validate``; they need no torch.
"""
