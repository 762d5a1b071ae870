"""Sphinx configuration of the rnn_xp documentation.

Build it with ``python -m sphinx -W -b html docs docs/_build/html`` (the
``docs`` extra installs what it needs). The pages are Markdown (MyST), so
they also run as doctests under pytest; the API reference is generated from
the docstrings (autosummary, numpydoc) into ``docs/api/generated/``.
"""

import rnn_xp

project = "rnn_xp"
author = "the rnn_xp developers"
copyright = "2026, the rnn_xp developers"
version = release = rnn_xp.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "numpydoc",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build"]
templates_path = ["_templates"]

# MyST: the pages link to each other's headings as GitHub does (page.md#a-heading).
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]

# The API reference: a page per public function, class and method.
autosummary_generate = True
autosummary_imported_members = False
autosummary_ignore_module_all = False  # a module page lists its __all__
autodoc_default_options = {"members": False}
autodoc_typehints = "none"
numpydoc_show_class_members = False  # the class template lists the methods itself
numpydoc_xref_param_type = False
numpydoc_validation_checks = set()

html_theme = "pydata_sphinx_theme"
html_title = f"rnn_xp {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
}
html_context = {"default_mode": "light"}
html_show_sourcelink = False
