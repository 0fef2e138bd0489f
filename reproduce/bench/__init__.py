"""Speed benchmarks: ``python -m reproduce.bench <suite>`` (suites are the modules of this package).

Each suite measures our implementation against its anchors (Captum, pytorch-grad-cam, Quantus-style
loops, the papers' official schemes) on the same model and inputs in the same process, prints a
small table of ratios and writes it to ``bench_results/<suite>.json``.
"""
