"""Sphinx configuration of flowkern's API reference: ``make docs`` (HTML into build/docs).

Offline: autodoc and napoleon (Google-style Args / Returns sections), no intersphinx; the
reference is built from the docstrings of the installed checkout, warnings as errors (-W).
"""

import os
import re
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


# The docstrings are written to read well in help() as well: shapes such as (B, C, *S) and absolute
# values such as |x' - x| stay plain text there, and reST would read them as an unterminated
# emphasis and a substitution. This escapes exactly those two idioms in prose, never inside
# ``literals``, roles (:math:`...`), directives (.. math::), literal blocks (::) or doctest blocks.
_LITERAL = re.compile(r"(``.+?``|:[a-z:]+:`[^`]*`|`[^`]*`)")
_STAR = re.compile(r"(?<=[\s(,\[])\*(?=[A-Za-z_]\w*[),\]])")  # the *S of (B, C, *S)
_BAR = re.compile(r"(?<!\\)\|")


def _escape_plain_text(app, what, name, obj, options, lines):
    mode, block_indent = None, 0  # "doctest": to the next blank line; "indented": deeper lines
    for i, line in enumerate(lines):
        stripped = line.lstrip()
        indent = len(line) - len(stripped)
        if mode == "doctest":
            mode = mode if stripped else None
            continue
        if mode == "indented":
            if not stripped or indent > block_indent:
                continue
            mode = None
        if stripped.startswith(">>>"):
            mode = "doctest"
            continue
        if stripped.startswith(".. "):
            mode, block_indent = "indented", indent
            continue
        parts = _LITERAL.split(line)
        for k in range(0, len(parts), 2):
            parts[k] = _BAR.sub(r"\\|", _STAR.sub(r"\\*", parts[k]))
        lines[i] = "".join(parts)
        if line.rstrip().endswith("::"):
            mode, block_indent = "indented", indent


def setup(app):
    app.connect("autodoc-process-docstring", _escape_plain_text, priority=400)  # before napoleon (500)
