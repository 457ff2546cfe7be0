# The Sphinx configuration and the files Sphinx generates are not tests: only the
# .rst pages are collected (for their doctests).
collect_ignore = ["conf.py"]
collect_ignore_glob = ["_build/*", "api/*", "auto_examples/*"]
