"""The package version, apart from ``gan_ext/__init__.py`` so that the modules
that report it (``gan-ext info``, run folders) need not import the package
they are part of. Keep it equal to pyproject.toml's ``version``."""
__version__ = "0.1.0"
