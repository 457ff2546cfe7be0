# Sphinx configuration for astroclip (sphinx-astropy).
import datetime

from sphinx_astropy.conf.v2 import *  # noqa: F401,F403
from sphinx_astropy.conf.v2 import extensions, intersphinx_mapping  # noqa: F401

import astroclip

project = "astroclip"
author = "The astroclip developers"
copyright = f"{datetime.date.today().year}, {author}"
version = release = astroclip.__version__

extensions = list(extensions) + ["sphinx_gallery.gen_gallery"]
intersphinx_mapping.update({
    "specutils": ("https://specutils.readthedocs.io/en/stable/", None),
    "torch": ("https://pytorch.org/docs/stable/", None),
})
nitpicky = False
exclude_patterns = list(globals().get("exclude_patterns", [])) + [
    "_build", "inputs_*.rst", "auto_examples/*.ipynb", "auto_examples/*.py"]
html_theme_options = {"github_url": "https://github.com/astroclip/astroclip"}

sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "ignore_pattern": r"/skip_|__init__",
    "download_all_examples": False,
    "remove_config_comments": True,
}
automodsumm_inherited_members = False
autodoc_inherit_docstrings = False
