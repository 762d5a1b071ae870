# The Sphinx configuration and the built site are not doctests.
collect_ignore = ["conf.py"]
collect_ignore_glob = ["_build/*", "api/generated/*"]
