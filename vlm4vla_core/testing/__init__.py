"""Fixture factories shared by the test suite and the checks under ``tools/``: small data sets in
each benchmark's native layout, fake simulators that record their calls, and a small study laid out as
the pipeline writes it. Nothing in the stages imports this package.

- ``calvin``: a task_ABC_D in the native layout and a fake CALVIN environment with its oracle;
- ``libero``: LIBERO's official demo files in their HDF5 layout;
- ``small_study``: the runs of a small study for the aggregate stage's report pages.
"""
