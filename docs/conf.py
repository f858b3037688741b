"""Sphinx configuration of flowkern's API reference: ``make docs`` (HTML into build/docs).

Offline: autodoc and napoleon (Google-style Args / Returns sections), no intersphinx; the
reference is built from the docstrings of the installed checkout, warnings as errors (-W).
"""

import os
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)

import flowkern  # noqa: E402

project = "flowkern"
author = "the flowkern developers"
copyright = "the flowkern developers"
release = version = flowkern.__version__

# math renders with MathJax in the reader's browser; the build itself fetches nothing
extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.mathjax"]

root_doc = "index"
source_suffix = {".rst": "restructuredtext"}
# the markdown pages beside this file are read on GitHub, not built here
exclude_patterns = ["_build", "*.md"]

autodoc_default_options = {"members": True, "show-inheritance": True, "member-order": "bysource"}
autodoc_typehints = "description"
autodoc_class_signature = "mixed"
autoclass_content = "both"  # the class docstring, then __init__'s (its Args)
# torch.nn.Module's inherited docstrings and attributes are torch's, not flowkern's
autodoc_inherit_docstrings = False
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

html_theme = "alabaster"
html_static_path: list[str] = []
html_theme_options = {"description": "Fused invertible-flow kernels for PyTorch", "nosidebar": False}
html_show_sourcelink = False
